"""Export adapter for ``diffusers.DiTTransformer2DModel`` (class-conditional DiT, Peebles & Xie).

The graph is the diffusers forward with a flat signature. DiT unpatchifies assuming a square
token grid, and its position table is built for ``sample_size``: the latent is square and fixed
at export (only ``batch`` is symbolic).

Graph:
    transformer: (hidden_states (B, C, H, H), timestep (B,), class_labels (B,) int64)
                 -> sample (B, C_out, H, H)
``timestep`` holds the scheduler's integer timestep as float32 (exact below 2**24; DiT embeds
``timestep.float()`` anyway). With learned sigma ``C_out = 2C``: the first ``C`` channels are
the noise prediction (epsilon), the rest the variance interpolation, which samplers drop.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..sampling.families.dit import DiTLatent
from ..spec import IOSpec, TensorSpec
from .base import EpsilonSpatialAdapter, ExportGraph


class _DiTDenoiser(nn.Module):
    """``DiTTransformer2DModel.forward`` with positional tensor arguments and a tensor output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        return self.model(hidden_states, timestep=timestep, class_labels=class_labels, return_dict=False)[0]


class DiTAdapter(EpsilonSpatialAdapter):
    def check_latent_size(self) -> None:
        h, w = self.latent_size
        p = int(self.cfg.patch_size)
        if h != w or h < p or h % p:
            raise InputError(
                f"DiT takes a square latent divisible by its patch size {p}: got {h}x{w} "
                f"(this model was trained at {self.cfg.sample_size}x{self.cfg.sample_size})"
            )

    def transformer_graph(self) -> ExportGraph:
        c = self.cfg
        h, w = self.latent_size
        spec = IOSpec(
            inputs=(
                TensorSpec("hidden_states", "float32", ("batch", c.in_channels, h, w)),
                TensorSpec("timestep", "float32", ("batch",)),
                TensorSpec("class_labels", "int64", ("batch",)),
            ),
            outputs=(TensorSpec("sample", "float32", ("batch", self.out_channels, h, w)),),
        )
        return ExportGraph("transformer", _DiTDenoiser(self.model), spec, {"batch": 2}, dynamic=("batch",))

    def latent_spec(self) -> DiTLatent:
        return DiTLatent(**self.spatial_latent(), num_classes=int(self.cfg.num_embeds_ada_norm))

    def sample_feed(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        c = self.cfg
        b = dims["batch"]
        h, w = self.latent_size
        return {
            "hidden_states": rng.standard_normal((b, c.in_channels, h, w)).astype(np.float32),
            "timestep": rng.integers(1, 1000, b).astype(np.float32),
            "class_labels": rng.integers(0, c.num_embeds_ada_norm, b).astype(np.int64),
        }

    @torch.no_grad()
    def reference(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # the pipeline passes the scheduler's int64 timestep; the graph takes it as float32
        t = torch.from_numpy(feed["timestep"]).round().long()
        out = self.model(torch.from_numpy(feed["hidden_states"]), timestep=t,
                         class_labels=torch.from_numpy(feed["class_labels"]), return_dict=False)[0]
        return {"sample": out.float().numpy()}
