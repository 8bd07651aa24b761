"""Export adapter for ``diffusers.QwenImageTransformer2DModel`` (Qwen-Image text-to-image).

Qwen-Image rotates queries and keys with *complex* RoPE frequencies (``torch.polar``,
``view_as_complex``), which ONNX cannot express. The graph takes the rotation as real inputs
``rope_cos``/``rope_sin`` (computed on the host by :func:`l2p.sampling.families.qwenimage.qwen_rope`,
text rows first) and rotates interleaved pairs with them: ``(a + ib)(c + is) = (ac - bs) + i(as + bc)``.

Graph:
    transformer: (hidden_states (B, S, 4C) packed, encoder_hidden_states (B, T, D_joint),
                  encoder_hidden_states_mask (B, T) float 1/0, timestep (B,) = t / 1000,
                  rope_cos (T+S, head_dim), rope_sin (T+S, head_dim)) -> sample (B, S, 4C_out)

Supported: the text-to-image configuration (``guidance_embeds``, ``zero_cond_t``,
``use_additional_t_cond`` and ``use_layer3d_rope`` off, as Qwen/Qwen-Image).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..sampling.families.qwenimage import QwenImageLatent, qwen_rope
from ..spec import IOSpec, TensorSpec
from .base import ExportGraph, FamilyAdapter


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Real form of ``apply_rotary_emb_qwen(use_real=False)``: x (B, L, H, D), cos/sin (L, D)."""
    real, imag = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)  # each (B, L, H, D/2)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)  # (B, L, H, D)
    return (x.float() * cos[:, None] + rotated * sin[:, None]).type_as(x)


class _RealRopeAttnProcessor:
    """``QwenDoubleStreamAttnProcessor2_0`` with ``image_rotary_emb = (cos, sin)`` over the joint
    [text, image] sequence instead of complex (image, text) frequencies; otherwise the same steps."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 encoder_hidden_states_mask: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        assert image_rotary_emb is not None and attention_mask is None
        mask = None
        if encoder_hidden_states_mask is not None:
            image_mask = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)[:, None, None, :]  # (B, 1, 1, T+S)
        seq_txt = encoder_hidden_states.shape[1]
        head_dim = attn.inner_dim // attn.heads
        q, k, v = (f(hidden_states).unflatten(-1, (-1, head_dim)) for f in (attn.to_q, attn.to_k, attn.to_v))
        tq, tk, tv = (f(encoder_hidden_states).unflatten(-1, (-1, head_dim))
                      for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))  # each (B, T, H, D)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if attn.norm_added_q is not None:
            tq = attn.norm_added_q(tq)
        if attn.norm_added_k is not None:
            tk = attn.norm_added_k(tk)
        cos, sin = image_rotary_emb  # (T+S, D), text rows first
        q = _rotate(torch.cat([tq, q], dim=1), cos, sin)  # (B, T+S, H, D)
        k = _rotate(torch.cat([tk, k], dim=1), cos, sin)
        v = torch.cat([tv, v], dim=1)
        out = dispatch_attention_fn(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
        out = out.flatten(2, 3).to(q.dtype)  # (B, T+S, H*D)
        img = attn.to_out[0](out[:, seq_txt:].contiguous())
        if len(attn.to_out) > 1:
            img = attn.to_out[1](img)  # dropout
        return img, attn.to_add_out(out[:, :seq_txt].contiguous())


@contextmanager
def _real_rope(model: nn.Module) -> Iterator[None]:
    """Swap in the real-RoPE processor for the duration of one forward (the model stays untouched)."""
    attns = [block.attn for block in model.transformer_blocks]
    saved = [a.processor for a in attns]
    try:
        for a in attns:
            a.processor = _RealRopeAttnProcessor()
        yield
    finally:
        for a, p in zip(attns, saved):
            a.processor = p


class _QwenDenoiser(nn.Module):
    """Qwen-Image forward with RoPE given as inputs; same math as ``QwenImageTransformer2DModel.forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_hidden_states_mask: torch.Tensor, timestep: torch.Tensor, rope_cos: torch.Tensor,
                rope_sin: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.img_in(hidden_states)  # (B, S, D)
        temb = m.time_text_embed(timestep.to(x.dtype), x)  # (B, D)
        e = m.txt_in(m.txt_norm(encoder_hidden_states))  # (B, T, D)
        mask = encoder_hidden_states_mask != 0  # (B, T) bool, as compute_text_seq_len_from_mask
        with _real_rope(m):
            for block in m.transformer_blocks:
                e, x = block(hidden_states=x, encoder_hidden_states=e, encoder_hidden_states_mask=mask, temb=temb,
                             image_rotary_emb=(rope_cos, rope_sin))
        return m.proj_out(m.norm_out(x, temb))  # (B, S, 4C_out)


class QwenImageAdapter(FamilyAdapter):
    def __init__(self, model: nn.Module, latent_size: tuple[int, int]) -> None:
        c = model.config
        extras = [k for k in ("guidance_embeds", "zero_cond_t", "use_additional_t_cond", "use_layer3d_rope")
                  if c.get(k, False)]
        if extras or c.patch_size != 2:
            raise UnsupportedModelError(
                f"l2p exports the Qwen-Image text-to-image transformer (patch size 2, no {', '.join(extras) or 'extras'}); "
                f"this config has patch_size={c.patch_size} and {extras or 'no extras'} set"
            )
        super().__init__(model, latent_size)

    @property
    def head_dim(self) -> int:
        return int(self.cfg.attention_head_dim)

    def check_latent_size(self) -> None:
        self.check_patch_multiple(2, "Qwen-Image packs 2x2 latent patches", "even in both dims")

    @property
    def tokens(self) -> int:
        h, w = self.latent_size
        return (h // 2) * (w // 2)

    def transformer_graph(self) -> ExportGraph:
        c = self.cfg
        out_ch = int(self.model.proj_out.out_features)  # 2*2 patches x (out_channels or in_channels)
        spec = IOSpec(
            inputs=(
                TensorSpec("hidden_states", "float32", ("batch", "img_seq", c.in_channels)),
                TensorSpec("encoder_hidden_states", "float32", ("batch", "txt_seq", c.joint_attention_dim)),
                TensorSpec("encoder_hidden_states_mask", "float32", ("batch", "txt_seq")),
                TensorSpec("timestep", "float32", ("batch",)),
                TensorSpec("rope_cos", "float32", ("rope_seq", self.head_dim)),
                TensorSpec("rope_sin", "float32", ("rope_seq", self.head_dim)),
            ),
            outputs=(TensorSpec("sample", "float32", ("batch", "img_seq", out_ch)),),
        )
        dims = {"batch": 2, "img_seq": self.tokens, "txt_seq": 8, "rope_seq": self.tokens + 8}
        return ExportGraph("transformer", _QwenDenoiser(self.model), spec, dims,
                           dynamic=("batch", "txt_seq", "rope_seq", "img_seq"))

    def latent_spec(self) -> QwenImageLatent:
        c = self.cfg
        h, w = self.latent_size
        return QwenImageLatent(channels=c.in_channels // 4, height=h, width=w, prediction="flow",
                               rope_axes_dim=tuple(int(d) for d in c.axes_dims_rope),
                               rope_theta=float(self.model.pos_embed.theta),
                               scale_rope=bool(self.model.pos_embed.scale_rope))

    def sample_feed(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        c = self.cfg
        b, t = dims["batch"], dims.get("txt_seq", 8)
        h, w = self.latent_size
        mask = np.ones((b, t), np.float32)
        mask[0, t - t // 3:] = 0  # the first prompt is shorter: padded tail
        cos, sin = qwen_rope(h // 2, w // 2, t, c.axes_dims_rope)
        return {
            "hidden_states": rng.standard_normal((b, self.tokens, c.in_channels)).astype(np.float32),
            "encoder_hidden_states": rng.standard_normal((b, t, c.joint_attention_dim)).astype(np.float32),
            "encoder_hidden_states_mask": mask,
            "timestep": rng.uniform(0.05, 1.0, b).astype(np.float32),
            "rope_cos": cos, "rope_sin": sin,
        }

    @torch.no_grad()
    def reference(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h, w = self.latent_size
        b = feed["hidden_states"].shape[0]
        out = self.model(
            hidden_states=torch.from_numpy(feed["hidden_states"]),
            encoder_hidden_states=torch.from_numpy(feed["encoder_hidden_states"]),
            encoder_hidden_states_mask=torch.from_numpy(feed["encoder_hidden_states_mask"]),
            timestep=torch.from_numpy(feed["timestep"]), img_shapes=[[(1, h // 2, w // 2)]] * b, return_dict=False,
        )[0]
        return {"sample": out.float().numpy()}
