"""What every model-family export adapter provides.

An adapter wraps a diffusers transformer in an export-friendly ``nn.Module`` with a flat
signature, describes its I/O once as an :class:`~l2p.spec.IOSpec`, makes realistic sample
inputs, and runs the *original* diffusers forward for validation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..latent import LatentSpec
from ..spec import IOSpec


@dataclass
class ExportGraph:
    """One graph to export: the module, its I/O spec and dims for tracing."""

    name: str
    module: torch.nn.Module
    spec: IOSpec
    trace_dims: dict[str, int]
    #: dims that must stay symbolic in the graph (others may be fixed by the exporter)
    dynamic: tuple[str, ...] = ("batch",)


class FamilyAdapter(ABC):
    """Export adapter for one diffusers transformer class.

    Args:
        model: the diffusers transformer (``torch.nn.Module``), in eval mode.
        latent_size: ``(height, width)`` of the VAE latent (before any packing).
    """

    def __init__(self, model: torch.nn.Module, latent_size: tuple[int, int]) -> None:
        self.model = model.eval()
        self.latent_size = latent_size
        self.check_latent_size()

    @abstractmethod
    def check_latent_size(self) -> None:
        """Raise InputError if the latent size does not fit the patch size."""

    @property
    def cfg(self) -> Any:
        """The diffusers model config."""
        return self.model.config

    def check_patch_multiple(self, p: int, cut: str, must: str) -> None:
        """Raise InputError unless the latent height and width are positive multiples of ``p``.

        Args:
            p: the patch size.
            cut: how the family cuts the latent, the message's start (``"FLUX packs 2x2 latent patches"``).
            must: what the sizes must be, in words (``"divisible by 2"``).
        """
        h, w = self.latent_size
        if h < p or w < p or h % p or w % p:
            raise InputError(
                f"{cut}: latent size {h}x{w} must be {must} "
                f"(for images: height and width divisible by {p} x the VAE scale factor)"
            )

    @abstractmethod
    def transformer_graph(self) -> ExportGraph:
        """The denoiser graph."""

    def graphs(self) -> list[ExportGraph]:
        """Every graph of the bundle; families without a ``head`` graph export the transformer only."""
        return [self.transformer_graph()]

    @abstractmethod
    def latent_spec(self) -> LatentSpec:
        """What the family's torch-free runtime needs to feed the graph (the manifest's ``latent``),
        as the runtime's own :class:`~l2p.latent.LatentSpec` subclass; the exporter adds the VAE factor."""

    @abstractmethod
    def sample_feed(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """Realistic inputs for the exported graph (float32 numpy)."""

    @abstractmethod
    def reference(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of the *original* diffusers forward for the same inputs, as float32 numpy."""


class EpsilonSpatialAdapter(FamilyAdapter):
    """Adapter base for spatial ``(B, C, H, W)`` epsilon models with optional learned sigma (DiT, PixArt)."""

    @property
    def out_channels(self) -> int:
        """Output channels: ``2C`` with learned sigma (epsilon, then the variance interpolation)."""
        return int(self.cfg.out_channels or self.cfg.in_channels)

    def spatial_latent(self) -> dict[str, Any]:
        """The :class:`~l2p.latent.LatentSpec` fields these families share, for their ``latent_spec``."""
        c = self.cfg
        h, w = self.latent_size
        learned = self.out_channels == 2 * c.in_channels  # the pipeline's test for learned sigma
        return {"channels": int(c.in_channels), "height": h, "width": w,
                "prediction": "epsilon+learned_sigma" if learned else "epsilon"}
