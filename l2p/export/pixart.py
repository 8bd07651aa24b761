"""Export adapter for ``diffusers.PixArtTransformer2DModel`` (PixArt-alpha / PixArt-Sigma).

The graph restates the diffusers forward (same modules, same math) with a flat signature; the
latent height and width are fixed at export (PixArt patchifies and adds its sin-cos position
table inside the model).

Graph:
    transformer: (hidden_states (B, C, H, W), encoder_hidden_states (B, T, D_caption),
                  encoder_attention_mask (B, T) float 1/0, timestep (B,),
                  [resolution (B, 2), aspect_ratio (B, 1)]) -> sample (B, C_out, H, W)
``timestep`` holds the scheduler's integer timestep as float32. ``resolution``/``aspect_ratio``
(pixel height and width, height / width) exist only when the model uses additional conditions
(``use_additional_conditions``, on by default for ``sample_size == 128``: PixArt-XL-2-1024-MS).
With learned sigma ``C_out = 2C`` and the first ``C`` channels are epsilon.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..sampling.families.pixart import PixArtLatent
from ..spec import IOSpec, TensorSpec
from .base import EpsilonSpatialAdapter, ExportGraph


class _PixArtDenoiser(nn.Module):
    """PixArt forward with positional tensor arguments; same math as ``PixArtTransformer2DModel.forward``
    (restated because its ``hidden_states.squeeze(1)``, a no-op for more than one token, is exported
    as an unconditional ONNX ``Squeeze`` that fails to load)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self._run(hidden_states, encoder_hidden_states, encoder_attention_mask, timestep, None, None)

    def _run(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
             encoder_attention_mask: torch.Tensor, timestep: torch.Tensor, resolution: torch.Tensor | None,
             aspect_ratio: torch.Tensor | None) -> torch.Tensor:
        m = self.model
        p, c_out = int(m.config.patch_size), int(m.out_channels)
        b, t = encoder_attention_mask.shape
        # Export-only: torch.export gives every input its own batch/txt_seq symbol and unifies them only
        # at the end; PixArt reshapes one input by another's batch size (micro-conditions, the per-head
        # cross-attention mask), which fails to broadcast unless the equalities are known while tracing.
        for x in (hidden_states, encoder_hidden_states, timestep, resolution, aspect_ratio):
            if x is not None:
                torch._check(x.shape[0] == b)
        torch._check(encoder_hidden_states.shape[1] == t)
        h, w = hidden_states.shape[-2] // p, hidden_states.shape[-1] // p
        bias = ((1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)  # (B, 1, T)
        x = m.pos_embed(hidden_states)  # (B, h*w, D)
        added = {"resolution": resolution, "aspect_ratio": aspect_ratio}
        temb, embedded = m.adaln_single(timestep, added, batch_size=b, hidden_dtype=x.dtype)  # (B, 6D), (B, D)
        e = encoder_hidden_states
        if m.caption_projection is not None:
            e = m.caption_projection(e).view(b, -1, x.shape[-1])  # (B, T, D)
        for block in m.transformer_blocks:
            x = block(x, attention_mask=None, encoder_hidden_states=e, encoder_attention_mask=bias,
                      timestep=temb, cross_attention_kwargs=None, class_labels=None)
        shift, scale = (m.scale_shift_table[None] + embedded[:, None]).chunk(2, dim=1)  # each (B, 1, D)
        x = m.proj_out(m.norm_out(x) * (1 + scale) + shift)  # (B, h*w, p*p*C_out)
        x = x.reshape(-1, h, w, p, p, c_out)  # (B, h, w, p, p, C_out)
        x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C_out, h, p, w, p)
        return x.reshape(-1, c_out, h * p, w * p)  # (B, C_out, H, W)


class _PixArtMicroDenoiser(_PixArtDenoiser):
    """The same with the resolution / aspect-ratio micro-conditions (a fixed signature: the
    exporter maps symbolic dims onto the forward's parameters, so no optional arguments)."""

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,  # type: ignore[override]
                encoder_attention_mask: torch.Tensor, timestep: torch.Tensor, resolution: torch.Tensor,
                aspect_ratio: torch.Tensor) -> torch.Tensor:
        return self._run(hidden_states, encoder_hidden_states, encoder_attention_mask, timestep, resolution,
                         aspect_ratio)


class PixArtAdapter(EpsilonSpatialAdapter):
    @property
    def micro(self) -> bool:
        """Whether the model takes resolution / aspect-ratio micro-conditions."""
        return bool(self.model.use_additional_conditions)

    @property
    def caption_dim(self) -> int:
        return int(self.cfg.caption_channels or self.cfg.cross_attention_dim)

    def check_latent_size(self) -> None:
        p = int(self.cfg.patch_size)
        self.check_patch_multiple(p, f"PixArt patchifies the latent in {p}x{p} patches", f"divisible by {p}")

    def transformer_graph(self) -> ExportGraph:
        c = self.cfg
        h, w = self.latent_size
        inputs = [
            TensorSpec("hidden_states", "float32", ("batch", c.in_channels, h, w)),
            TensorSpec("encoder_hidden_states", "float32", ("batch", "txt_seq", self.caption_dim)),
            TensorSpec("encoder_attention_mask", "float32", ("batch", "txt_seq")),
            TensorSpec("timestep", "float32", ("batch",)),
        ]
        if self.micro:
            inputs += [TensorSpec("resolution", "float32", ("batch", 2)),
                       TensorSpec("aspect_ratio", "float32", ("batch", 1))]
        spec = IOSpec(inputs=tuple(inputs),
                      outputs=(TensorSpec("sample", "float32", ("batch", self.out_channels, h, w)),))
        module = (_PixArtMicroDenoiser if self.micro else _PixArtDenoiser)(self.model)
        return ExportGraph("transformer", module, spec, {"batch": 2, "txt_seq": 8},
                           dynamic=("batch", "txt_seq"))

    def latent_spec(self) -> PixArtLatent:
        return PixArtLatent(**self.spatial_latent(), additional_conditions=self.micro)

    def sample_feed(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        c = self.cfg
        b, t = dims["batch"], dims.get("txt_seq", 8)
        h, w = self.latent_size
        mask = np.ones((b, t), np.float32)
        mask[:, t - t // 3:] = 0  # padded tail, as a T5 attention mask
        feed = {
            "hidden_states": rng.standard_normal((b, c.in_channels, h, w)).astype(np.float32),
            "encoder_hidden_states": rng.standard_normal((b, t, self.caption_dim)).astype(np.float32),
            "encoder_attention_mask": mask,
            "timestep": rng.integers(1, 1000, b).astype(np.float32),
        }
        if self.micro:
            feed["resolution"] = np.tile(np.array([[h * 8, w * 8]], np.float32), (b, 1))
            feed["aspect_ratio"] = np.full((b, 1), h / w, np.float32)
        return feed

    @torch.no_grad()
    def reference(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tt = {k: torch.from_numpy(v) for k, v in feed.items()}
        added = {"resolution": tt.get("resolution"), "aspect_ratio": tt.get("aspect_ratio")}
        # the pipeline passes the scheduler's int64 timestep; the graph takes it as float32
        out = self.model(tt["hidden_states"], encoder_hidden_states=tt["encoder_hidden_states"],
                         timestep=tt["timestep"].round().long(), added_cond_kwargs=added,
                         encoder_attention_mask=tt["encoder_attention_mask"], return_dict=False)[0]
        return {"sample": out.float().numpy()}
