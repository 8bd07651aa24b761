"""Export adapter for ``diffusers.SD3Transformer2DModel`` (Stable Diffusion 3 / 3.5 MMDiT).

The graph is the diffusers forward itself with a flat signature: SD3 patchifies the spatial
latent inside the model and crops its fixed sin-cos position table to the latent size, so the
latent height and width are fixed at export (only ``batch`` and ``txt_seq`` stay symbolic).

Graph:
    transformer: (hidden_states (B, C, H, W), encoder_hidden_states (B, T, D_joint),
                  pooled_projections (B, D_pool), timestep (B,)) -> sample (B, C_out, H, W)
``timestep`` is the scheduler's ``t`` in [0, 1000] (StableDiffusion3Pipeline passes it unscaled).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..sampling.families.sd3 import SD3Latent
from ..spec import IOSpec, TensorSpec
from .base import ExportGraph, FamilyAdapter


class _SD3Denoiser(nn.Module):
    """``SD3Transformer2DModel.forward`` with positional tensor arguments and a tensor output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.model(hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                          pooled_projections=pooled_projections, timestep=timestep, return_dict=False)[0]


class SD3Adapter(FamilyAdapter):
    @property
    def cfg(self) -> Any:
        return self.model.config

    def check_latent_size(self) -> None:
        h, w = self.latent_size
        p = int(self.cfg.patch_size)
        if h < p or w < p or h % p or w % p:
            raise InputError(
                f"SD3 patchifies the latent in {p}x{p} patches: latent size {h}x{w} must be divisible by {p} "
                f"(for images: height and width divisible by {p} x the VAE scale factor)"
            )
        top = self.cfg.pos_embed_max_size
        if top is not None and max(h, w) // p > top:
            raise InputError(f"latent size {h}x{w} is larger than this SD3 model's position table allows "
                             f"({top * p}x{top * p} latent pixels); choose a smaller size")

    def transformer_graph(self) -> ExportGraph:
        c = self.cfg
        h, w = self.latent_size
        out_ch = c.out_channels or c.in_channels
        spec = IOSpec(
            inputs=(
                TensorSpec("hidden_states", "float32", ("batch", c.in_channels, h, w)),
                TensorSpec("encoder_hidden_states", "float32", ("batch", "txt_seq", c.joint_attention_dim)),
                TensorSpec("pooled_projections", "float32", ("batch", c.pooled_projection_dim)),
                TensorSpec("timestep", "float32", ("batch",)),
            ),
            outputs=(TensorSpec("sample", "float32", ("batch", out_ch, h, w)),),
        )
        return ExportGraph("transformer", _SD3Denoiser(self.model), spec, {"batch": 2, "txt_seq": 8},
                           dynamic=("batch", "txt_seq"))

    def latent_spec(self) -> SD3Latent:
        c = self.cfg
        h, w = self.latent_size
        return SD3Latent(channels=int(c.in_channels), height=h, width=w, prediction="flow",
                         patch_size=int(c.patch_size))

    def sample_feed(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        c = self.cfg
        b, t = dims["batch"], dims.get("txt_seq", 8)
        h, w = self.latent_size
        return {
            "hidden_states": rng.standard_normal((b, c.in_channels, h, w)).astype(np.float32),
            "encoder_hidden_states": rng.standard_normal((b, t, c.joint_attention_dim)).astype(np.float32),
            "pooled_projections": rng.standard_normal((b, c.pooled_projection_dim)).astype(np.float32),
            "timestep": rng.uniform(10.0, 1000.0, b).astype(np.float32),
        }

    @torch.no_grad()
    def reference(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tt = {k: torch.from_numpy(v) for k, v in feed.items()}
        out = self.model(hidden_states=tt["hidden_states"], encoder_hidden_states=tt["encoder_hidden_states"],
                         pooled_projections=tt["pooled_projections"], timestep=tt["timestep"],
                         return_dict=False)[0]
        return {"sample": out.float().numpy()}
