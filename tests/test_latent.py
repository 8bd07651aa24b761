"""The manifest's latent record: what export writes is what the runtime reads, and nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from l2p.errors import ArtifactError, InputError
from l2p.sampling.families.flux import FluxLatent

from .conftest import tiny_flux_config


def _record(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "manifest.json").read_text())["latent"])


def test_export_writes_the_model_config(flux_bundle: Path) -> None:
    """The tiny FLUX (in_channels 16 = 4 latent channels x 2x2, RoPE axes (4, 6, 6), guidance on), 8x8."""
    cfg = tiny_flux_config(guidance=True)
    assert _record(flux_bundle) == {
        "version": 1, "channels": cfg["in_channels"] // 4, "height": 8, "width": 8, "prediction": "flow",
        "vae_scale_factor": None, "rope_axes_dim": list(cfg["axes_dims_rope"]), "rope_theta": 10000.0,
        "guidance_embeds": True,
    }
    lat = FluxLatent.from_dict(_record(flux_bundle))
    assert lat.rope_axes_dim == (4, 6, 6) and lat.to_dict() == _record(flux_bundle)


@pytest.mark.parametrize(("change", "expect"), [
    ({"packing": "2x2"}, r"unknown keys \['packing'\]"),
    ({"rope_theta": None}, "rope_theta: expected float, got None"),
    ({"height": "8"}, "height: expected int, got '8'"),
    ({"height": True}, "height: expected int, got True"),
    ({"height": 0}, r"height is 0; expected an integer in 1\.\.1024"),
    # sizes from an untrusted manifest are bounded (l2p.limits) before anything is allocated
    ({"height": 10**6, "width": 10**6}, r"height is 1000000; expected an integer in 1\.\.1024"),
    ({"height": 1024, "width": 1024, "channels": 64}, r"channels x height x width is 67108864; .* 1\.\.16777216"),
    ({"channels": 2**40}, r"channels is 1099511627776; expected an integer in 1\.\.1024"),
    ({"rope_axes_dim": [4] * 100}, r"length of FluxLatent.rope_axes_dim is 100; .* 0\.\.8"),
    ({"rope_axes_dim": [4, 10**9, 6]}, r"rope_axes_dim is 1000000000; .* 1\.\.4096"),
    ({"rope_theta": float("inf")}, r"rope_theta is inf; expected a number"),
    ({"vae_scale_factor": 10**6}, r"vae_scale_factor is 1000000"),
    ({"guidance_embeds": 1}, "guidance_embeds: expected bool"),
    ({"rope_axes_dim": [4, 6.5, 6]}, r"rope_axes_dim\[1\]: expected int"),
    ({"rope_axes_dim": 16}, "rope_axes_dim: expected a list"),
    ({"prediction": "v"}, "prediction must be one of"),
    ({"version": 2}, "format version 2 is not supported"),
    ({"version": None}, "format version None is not supported"),
])
def test_from_dict_refuses(flux_bundle: Path, change: dict[str, Any], expect: str) -> None:
    with pytest.raises(InputError, match=expect):
        FluxLatent.from_dict({**_record(flux_bundle), **change})


def test_from_dict_refuses_missing_keys(flux_bundle: Path) -> None:
    rec = _record(flux_bundle)
    del rec["guidance_embeds"], rec["width"]
    with pytest.raises(InputError, match=r"missing keys \['guidance_embeds', 'width'\]"):
        FluxLatent.from_dict(rec)
    del rec["vae_scale_factor"]  # optional: defaults to None
    assert FluxLatent.from_dict({**rec, "guidance_embeds": False, "width": 8}).vae_scale_factor is None


def test_runtime_refuses_a_foreign_record(flux_bundle: Path, tmp_path: Path) -> None:
    """A bundle whose latent record is not FLUX's (hand-edited, or from an older l2p) is refused with a fix."""
    from l2p.sampling.pipeline import Sampler

    b = tmp_path / "b"
    shutil.copytree(flux_bundle, b, ignore=shutil.ignore_patterns("predictors"))
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["latent"]["packing"] = "2x2"
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"latent record does not fit the flux runtime .*'packing'.*re-export"):
        Sampler(b)
    manifest["latent"] = {k: v for k, v in manifest["latent"].items() if k != "packing"} | {"prediction": "epsilon"}
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="prediction 'epsilon' is not one the flux runtime handles"):
        Sampler(b)
    manifest["format_version"] = 1
    (b / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 1 is not supported.*re-export"):
        Sampler(b)
