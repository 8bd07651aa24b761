"""Session fixtures: tiny random-weight FLUX folders exported once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("L2P_THREADS", "2")


def tiny_flux_config(guidance: bool) -> dict:
    return dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
                guidance_embeds=guidance, axes_dims_rope=(4, 6, 6))


def make_flux_folder(path: Path, guidance: bool, seed: int = 0) -> Path:
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**tiny_flux_config(guidance))
    # random init leaves some output projections at zero; perturb so every path matters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(str(path / "transformer"))
    return path


@pytest.fixture(scope="session")
def flux_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformer-only folder with a tiny FLUX (guidance embeddings on)."""
    return make_flux_folder(tmp_path_factory.mktemp("flux_g"), guidance=True)


@pytest.fixture(scope="session")
def flux_bundle(flux_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from l2p.export.exporter import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "flux_g"
    export_bundle(str(flux_folder), out, latent_size=(8, 8), log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def flux_cond() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"encoder_hidden_states": rng.standard_normal((2, 8, 32)).astype(np.float32),
            "pooled_projections": rng.standard_normal((2, 24)).astype(np.float32)}
