"""What every model-family export adapter provides.

An adapter wraps a diffusers transformer in an export-friendly ``nn.Module`` with a flat
signature, describes its I/O once as an :class:`~l2p.spec.IOSpec`, makes realistic sample
inputs, and runs the *original* diffusers forward for validation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

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
    extra: dict[str, Any] = field(default_factory=dict)


class FamilyAdapter(ABC):
    """Export adapter for one diffusers transformer class.

    Args:
        model: the diffusers transformer (``torch.nn.Module``), in eval mode.
        latent_size: ``(height, width)`` of the VAE latent (before any packing).
    """

    family: str = ""
    model_class: str = ""

    def __init__(self, model: torch.nn.Module, latent_size: tuple[int, int]) -> None:
        self.model = model.eval()
        self.latent_size = latent_size
        self.check_latent_size()

    @abstractmethod
    def check_latent_size(self) -> None:
        """Raise InputError if the latent size does not fit the patch size."""

    @abstractmethod
    def transformer_graph(self) -> ExportGraph:
        """The denoiser graph."""

    def graphs(self) -> list[ExportGraph]:
        """Every graph of the bundle; families without a ``head`` graph export the transformer only."""
        return [self.transformer_graph()]

    @abstractmethod
    def runtime_info(self) -> dict[str, Any]:
        """What the torch-free runtime needs to feed the graph (saved in the manifest)."""

    @abstractmethod
    def sample_feed(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """Realistic inputs for the exported graph (float32 numpy)."""

    @abstractmethod
    def reference(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of the *original* diffusers forward for the same inputs, as float32 numpy."""
