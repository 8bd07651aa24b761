"""Shared helpers for the export tests of the non-FLUX families (tiny random-weight models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def save_perturbed(model: Any, folder: Path, seed: int = 0) -> Path:
    """Perturb every weight (random init zeroes adaLN-zero / output projections) and save
    ``model`` as ``folder/transformer``, a transformer-only diffusers folder."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(folder / "transformer"))
    return folder


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """``||got - ref|| / ||ref||`` in float64."""
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


def export_tiny(model: Any, tmp_path_factory: Any, name: str, latent_size: tuple[int, int]) -> Path:
    """:func:`save_perturbed` ``model`` and export it (fp32) to a fresh ``bundle`` folder."""
    from l2p.export.exporter import export_bundle

    src = save_perturbed(model, tmp_path_factory.mktemp(f"{name}_src"))
    out = tmp_path_factory.mktemp(name) / "bundle"
    export_bundle(str(src), out, latent_size=latent_size, log=lambda s: None)
    return out
