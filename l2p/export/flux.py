"""Export adapter for ``diffusers.FluxTransformer2DModel`` (FLUX.1 dev/schnell and tiny configs).

The graph takes precomputed RoPE ``rope_cos``/``rope_sin`` instead of ``img_ids``/``txt_ids``:
FLUX computes its frequencies in float64 with shapes that the exporter bakes as constants;
the torch-free runtime computes them in numpy (:mod:`l2p.sampling.rope`) exactly as diffusers does.

Graphs:
    transformer: (hidden_states, encoder_hidden_states, pooled_projections, timestep,
                  [guidance], rope_cos, rope_sin) -> (sample, residual)
    head:        (hidden_states, residual, pooled_projections, timestep, [guidance]) -> sample
``residual`` is the image stream after all blocks minus the x-embedder output (the cumulative
block residual); ``head`` recomputes the cheap embedder/final-norm/projection around it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..sampling.families.flux import FluxLatent
from ..sampling.rope import flux_image_ids, flux_rope, flux_text_ids
from ..spec import IOSpec, TensorSpec
from .base import ExportGraph, FamilyAdapter


class _FluxDenoiser(nn.Module):
    """FLUX forward with RoPE given as inputs; same math as ``FluxTransformer2DModel.forward``."""

    def __init__(self, model: nn.Module, guidance: bool) -> None:
        super().__init__()
        self.model = model
        self.guidance = guidance

    def _temb(self, timestep: torch.Tensor, pooled: torch.Tensor, guidance: torch.Tensor | None,
              dtype: torch.dtype) -> torch.Tensor:
        t = timestep.to(dtype) * 1000
        if guidance is None:
            return self.model.time_text_embed(t, pooled)
        return self.model.time_text_embed(t, guidance.to(dtype) * 1000, pooled)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor, *rest: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        guidance, rope_cos, rope_sin = rest if self.guidance else (None, *rest)
        h = m.x_embedder(hidden_states)  # (B, S, D)
        temb = self._temb(timestep, pooled_projections, guidance, h.dtype)  # (B, D)
        e = m.context_embedder(encoder_hidden_states)  # (B, T, D)
        rope = (rope_cos, rope_sin)  # each (T+S, head_dim)
        h0 = h
        for block in m.transformer_blocks:
            e, h = block(hidden_states=h, encoder_hidden_states=e, temb=temb, image_rotary_emb=rope)
        for block in m.single_transformer_blocks:
            e, h = block(hidden_states=h, encoder_hidden_states=e, temb=temb, image_rotary_emb=rope)
        sample = m.proj_out(m.norm_out(h, temb))  # (B, S, C_out)
        return sample, h - h0


class _FluxHead(_FluxDenoiser):
    """The cheap head around the blocks: x-embedder + residual -> final norm -> projection."""

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor,  # type: ignore[override]
                pooled_projections: torch.Tensor, timestep: torch.Tensor, *rest: torch.Tensor
                ) -> torch.Tensor:
        m = self.model
        guidance = rest[0] if self.guidance else None
        h = m.x_embedder(hidden_states) + residual  # (B, S, D)
        temb = self._temb(timestep, pooled_projections, guidance, h.dtype)
        return m.proj_out(m.norm_out(h, temb))


class FluxAdapter(FamilyAdapter):
    @property
    def cfg(self) -> Any:
        return self.model.config

    @property
    def guidance(self) -> bool:
        return bool(self.cfg.guidance_embeds)

    def check_latent_size(self) -> None:
        h, w = self.latent_size
        if h < 2 or w < 2 or h % 2 or w % 2:
            raise InputError(
                f"FLUX packs 2x2 latent patches: latent size {h}x{w} must be even in both dims "
                f"(for images: height and width divisible by 2 x the VAE scale factor)"
            )

    @property
    def tokens(self) -> int:
        h, w = self.latent_size
        return (h // 2) * (w // 2)

    def _cond_specs(self) -> list[TensorSpec]:
        c = self.cfg
        specs = [
            TensorSpec("encoder_hidden_states", "float32", ("batch", "txt_seq", c.joint_attention_dim)),
            TensorSpec("pooled_projections", "float32", ("batch", c.pooled_projection_dim)),
            TensorSpec("timestep", "float32", ("batch",)),
        ]
        if self.guidance:
            specs.append(TensorSpec("guidance", "float32", ("batch",)))
        return specs

    def transformer_graph(self) -> ExportGraph:
        c = self.cfg
        head_dim = c.attention_head_dim
        inner = c.num_attention_heads * head_dim
        out_ch = c.out_channels or c.in_channels
        spec = IOSpec(
            inputs=(
                TensorSpec("hidden_states", "float32", ("batch", "img_seq", c.in_channels)),
                *self._cond_specs(),
                TensorSpec("rope_cos", "float32", ("rope_seq", head_dim)),
                TensorSpec("rope_sin", "float32", ("rope_seq", head_dim)),
            ),
            outputs=(
                TensorSpec("sample", "float32", ("batch", "img_seq", out_ch)),
                TensorSpec("residual", "float32", ("batch", "img_seq", inner)),
            ),
        )
        dims = {"batch": 2, "img_seq": self.tokens, "txt_seq": 8, "rope_seq": self.tokens + 8}
        return ExportGraph("transformer", _FluxDenoiser(self.model, self.guidance), spec, dims,
                           dynamic=("batch", "txt_seq", "rope_seq", "img_seq"))

    def head_graph(self) -> ExportGraph:
        c = self.cfg
        inner = c.num_attention_heads * c.attention_head_dim
        out_ch = c.out_channels or c.in_channels
        cond = [s for s in self._cond_specs() if s.name != "encoder_hidden_states"]
        spec = IOSpec(
            inputs=(
                TensorSpec("hidden_states", "float32", ("batch", "img_seq", c.in_channels)),
                TensorSpec("residual", "float32", ("batch", "img_seq", inner)),
                *cond,
            ),
            outputs=(TensorSpec("sample", "float32", ("batch", "img_seq", out_ch)),),
        )
        dims = {"batch": 2, "img_seq": self.tokens}
        return ExportGraph("head", _FluxHead(self.model, self.guidance), spec, dims,
                           dynamic=("batch", "img_seq"))

    def graphs(self) -> list[ExportGraph]:
        return [self.transformer_graph(), self.head_graph()]

    def latent_spec(self) -> FluxLatent:
        c = self.cfg
        h, w = self.latent_size
        return FluxLatent(channels=c.in_channels // 4, height=h, width=w, prediction="flow",
                          rope_axes_dim=tuple(int(d) for d in c.axes_dims_rope), rope_theta=10000.0,
                          guidance_embeds=bool(self.guidance))

    def sample_feed(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        b, t = dims["batch"], dims.get("txt_seq", 8)
        h, w = self.latent_size
        c = self.cfg
        ids = np.concatenate([flux_text_ids(t), flux_image_ids(h // 2, w // 2)])
        cos, sin = flux_rope(ids, c.axes_dims_rope, 10000.0)
        feed = {
            "hidden_states": rng.standard_normal((b, self.tokens, c.in_channels)).astype(np.float32),
            "encoder_hidden_states": rng.standard_normal((b, t, c.joint_attention_dim)).astype(np.float32),
            "pooled_projections": rng.standard_normal((b, c.pooled_projection_dim)).astype(np.float32),
            "timestep": rng.uniform(0.05, 1.0, b).astype(np.float32),
        }
        if self.guidance:
            feed["guidance"] = np.full(b, 3.5, np.float32)
        feed["rope_cos"], feed["rope_sin"] = cos, sin
        feed["residual"] = rng.standard_normal((b, self.tokens, c.num_attention_heads * c.attention_head_dim)).astype(np.float32)
        return feed

    @torch.no_grad()
    def reference(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h, w = self.latent_size
        t = feed["encoder_hidden_states"].shape[1]
        tt = {k: torch.from_numpy(v) for k, v in feed.items() if not k.startswith("rope")}
        out = self.model(
            hidden_states=tt["hidden_states"], encoder_hidden_states=tt["encoder_hidden_states"],
            pooled_projections=tt["pooled_projections"], timestep=tt["timestep"],
            guidance=tt.get("guidance"), img_ids=torch.from_numpy(flux_image_ids(h // 2, w // 2)),
            txt_ids=torch.from_numpy(flux_text_ids(t)), return_dict=False,
        )[0]
        return {"sample": out.float().numpy()}
