"""FLUX export vs. diffusers: per-forward error, and a 50-step run vs. FluxPipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from l2p.bundle import open_bundle
from l2p.errors import InputError, UnsupportedModelError


def test_bundle_layout(flux_bundle: Path) -> None:
    b = open_bundle(flux_bundle)
    assert b.family == "flux" and set(b.graphs) == {"transformer", "head"}
    spec = b.spec("transformer")
    assert spec.input("hidden_states").shape == ("batch", "img_seq", 16)
    assert spec.input_names[-2:] == ["rope_cos", "rope_sin"]
    assert "guidance" in spec.input_names
    assert b.manifest["export_config"]["checks"]["transformer"] <= 1e-5


@pytest.mark.parametrize("guidance", [True, False])
def test_forward_matches_diffusers(guidance: bool, tmp_path: Path) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    from l2p.engine.onnxruntime_backend import OrtEngine
    from l2p.export.exporter import export_bundle
    from l2p.export.flux import FluxAdapter
    from tests.conftest import make_flux_folder

    folder = make_flux_folder(tmp_path / "m", guidance, seed=3)
    out = export_bundle(str(folder), tmp_path / "b", latent_size=(6, 10), log=lambda s: None, check=False)
    b = open_bundle(out)
    model = FluxTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()
    adapter = FluxAdapter(model, (6, 10))
    engine = OrtEngine(b.onnx_path("transformer"), b.spec("transformer"))
    for batch, txt in ((1, 5), (3, 12)):  # dynamic batch and text length
        feed = adapter.sample_feed({"batch": batch, "txt_seq": txt}, seed=batch)
        feed = {k: feed[k] for k in b.spec("transformer").input_names}
        got = engine.run(feed)["sample"]
        with torch.no_grad():  # the original diffusers forward, with img_ids/txt_ids
            ref = adapter.reference(feed)["sample"]
        assert got.shape == ref.shape == (batch, 15, 16)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5


def test_sampling_run_matches_fluxpipeline(flux_bundle: Path, flux_folder: Path) -> None:
    from l2p.validation.pytorch import validate

    report = validate(str(flux_bundle), str(flux_folder), steps=50)
    assert report["ok"], report
    assert report["final_psnr_db"] >= 60
    assert len(report["per_step_rel_error"]) == 50


def test_bad_latent_size(flux_folder: Path, tmp_path: Path) -> None:
    from l2p.export.exporter import export_bundle

    with pytest.raises(InputError, match="even"):
        export_bundle(str(flux_folder), tmp_path / "b", latent_size=(7, 8), log=lambda s: None)
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_unknown_model_class(tmp_path: Path) -> None:
    from l2p.export.exporter import export_bundle

    (tmp_path / "m" / "transformer").mkdir(parents=True)
    (tmp_path / "m" / "transformer" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(UnsupportedModelError, match="UNet2DConditionModel"):
        export_bundle(str(tmp_path / "m"), tmp_path / "b", latent_size=(8, 8), log=lambda s: None)


def test_export_is_idempotent(flux_bundle: Path, flux_folder: Path) -> None:
    from l2p.export.exporter import export_bundle

    before = (flux_bundle / "manifest.json").read_bytes()
    msgs: list[str] = []
    export_bundle(str(flux_folder), flux_bundle, latent_size=(8, 8), log=msgs.append)
    assert any("up to date" in m for m in msgs)
    assert (flux_bundle / "manifest.json").read_bytes() == before


def test_refuses_foreign_output_folder(flux_folder: Path, tmp_path: Path) -> None:
    from l2p.export.exporter import export_bundle

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an l2p bundle"):
        export_bundle(str(flux_folder), tmp_path / "mine", latent_size=(8, 8), log=lambda s: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_external_data_and_fp16(flux_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                flux_cond: dict) -> None:
    """Large-graph path (weights in model.onnx.data) and an fp16 graph, both run by ONNX Runtime."""
    from l2p.export.exporter import export_bundle
    from l2p.sampling.pipeline import Sampler

    monkeypatch.setenv("L2P_EXTERNAL_DATA_BYTES", "0")
    ext = export_bundle(str(flux_folder), tmp_path / "ext", latent_size=(8, 8), log=lambda s: None)
    assert (ext / "transformer" / "model.onnx.data").stat().st_size > 100_000
    assert "transformer/model.onnx.data" in open_bundle(ext).manifest["files"]
    monkeypatch.delenv("L2P_EXTERNAL_DATA_BYTES")
    half = export_bundle(str(flux_folder), tmp_path / "fp16", latent_size=(8, 8), precision="fp16", log=lambda s: None)
    assert open_bundle(half).manifest["export_config"]["checks"]["transformer"] < 2e-2
    a = Sampler(ext).sample(flux_cond, 0, 4, decode=False).final
    b = Sampler(half).sample(flux_cond, 0, 4, decode=False).final
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 2e-2
