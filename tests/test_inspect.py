"""``l2p inspect``: a bundle's graphs, predictors and plans, checked against the files themselves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from l2p.cli import main
from l2p.engine.trt_plans import PlanFields, graph_sha256, plans_dir, save_plan
from l2p.engine.trt_profiles import ProfileShape
from l2p.predictor.artifact import save_predictor
from l2p.predictor.presets import preset
from l2p.predictor.schedule import interval_schedule
from l2p.spec import TensorSpec

ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT16: "float16"}


@pytest.fixture(scope="module")
def bundle(flux_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with a good predictor, a foreign one, a broken one, a current and a stale plan."""
    from l2p.bundle import open_bundle

    root = tmp_path_factory.mktemp("inspect") / "bundle"
    shutil.copytree(flux_bundle, root, ignore=shutil.ignore_patterns("predictors", "plans"))
    b = open_bundle(root)
    out = b.spec("transformer").output("sample")
    feature = TensorSpec("output", out.dtype, out.shape)
    table = preset("taylorseer2", interval_schedule(10, 4), 10)
    for name, bundle_hash in (("good", b.hash), ("foreign", "f" * 64)):
        save_predictor(root / "predictors" / name, table=table, feature_spec=feature, name=name, method="taylorseer2",
                       tap="output", bundle_hash=bundle_hash, scheduler_hash=b.scheduler_hash,
                       fit_stats={"calibration_psnr_db": 41.5, "calibration_metric": "latent",
                                  "holdout": {"psnr_db": 39.25, "rows": [1], "seeds": [0, 1]}})
    (root / "predictors" / "broken").mkdir()
    (root / "predictors" / "broken" / "predictor.json").write_text("{not json")
    profiles = (ProfileShape("hidden_states", (1, 16, 64), (1, 16, 64), (1, 16, 64)),)
    current = graph_sha256(b.onnx_path("transformer"), root, b.manifest["files"])
    for sha in (current, "0" * 64):
        save_plan(plans_dir(root, "transformer"), PlanFields(sha, "10.13.0", "9.0", "fp32", profiles), b"plan" * 10)
    return root


def _inspect(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["inspect", *argv]) == 0
    return capsys.readouterr().out


def test_json_describes_every_graph(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = json.loads(_inspect(capsys, str(bundle), "--json"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(r["graphs"]) == set(manifest["graphs"]) == {"transformer", "head"}
    for name, g in r["graphs"].items():
        path = bundle / manifest["graphs"][name]["onnx"]
        model = onnx.load(str(path), load_external_data=False)
        want_in = [(i.name, ONNX_DTYPES[i.type.tensor_type.elem_type]) for i in model.graph.input]
        assert [(t["name"], t["dtype"]) for t in g["inputs"]] == want_in
        assert [t["name"] for t in g["outputs"]] == [o.name for o in model.graph.output]
        for t, i in zip(g["inputs"], model.graph.input):  # shapes: symbolic dims by name, fixed dims as ints
            dims = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            assert len(t["shape"]) == len(dims) and all(isinstance(a, str) or a == d for a, d in zip(t["shape"], dims))
        assert g["bytes"] >= path.stat().st_size and g["nodes"] == len(model.graph.node) > 0
        assert g["precision"] == "fp32" and g["opset"]["ai.onnx"] == model.opset_import[0].version
    assert r["bundle"]["bytes"] == sum(f["size"] for f in manifest["files"].values())
    assert r["bundle"]["family"] == "flux" and not r["bundle"]["builtin_model"]
    assert r["text_encoders"] == {}  # a transformer-only folder has none
    assert r["scheduler"]["_class_name"] == "FlowMatchEulerDiscreteScheduler"


def test_json_lists_predictors_and_plans(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    r = json.loads(_inspect(capsys, str(bundle), "--json"))
    preds = {p["name"]: p for p in r["predictors"]}
    assert set(preds) == {"good", "foreign", "broken"}
    good = preds["good"]
    assert (good["steps"], good["full_steps"], good["K"], good["tap"]) == (10, 4, 3, "output")
    assert good["schedule"] == list(interval_schedule(10, 4)) and good["calibration_psnr_db"] == 41.5
    assert good["holdout_psnr_db"] == 39.25
    raw = (bundle / "predictors" / "good" / "predictor.json").read_bytes()
    assert good["sha256"] == hashlib.sha256(raw).hexdigest()
    coeffs = (bundle / "predictors" / "good" / "coefficients.npz").read_bytes()
    assert good["coefficients_sha256"] == hashlib.sha256(coeffs).hexdigest()
    assert "was calibrated for bundle ffffffffffff" in preds["foreign"]["error"]
    assert "not valid JSON" in preds["broken"]["error"]
    plans = r["plans"]
    assert len(plans) == 2 and {p["current"] for p in plans} == {True, False}
    assert all(p["bytes"] == 40 and p["trt_version"] == "10.13.0" for p in plans)


def test_text_report(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _inspect(capsys, str(bundle), "--verify")
    for part in ("graphs", "transformer: transformer/model.onnx", "in   hidden_states", "out  residual",
                 "text encoders", "scheduler", "FlowMatchEulerDiscreteScheduler", "files checked: sha256",
                 "good: taylorseer2, tap output, 4/10 full steps, K=3", "calibration 41.50 dB (latent PSNR), held-out 39.25 dB",
                 "foreign: cannot be used", "broken: cannot be used", "TensorRT 10.13.0", "STALE"):
        assert part in text, part


def test_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_builtin_model_bundle_is_recognised(bundle: Path, tmp_path: Path) -> None:
    """The manifest's export source names the built-in model: inspect (and run.json) say so."""
    from l2p.bundle import write_manifest
    from l2p.inspect import inspect_bundle

    root = tmp_path / "b"
    shutil.copytree(bundle, root, ignore=shutil.ignore_patterns("predictors", "plans"))
    m = json.loads((root / "manifest.json").read_text())
    fields = {k: v for k, v in m.items() if k not in ("format", "format_version", "l2p_version", "files")}
    fields["export_config"] = {**fields["export_config"], "source": "tiny-flux"}
    write_manifest(root, fields)
    assert inspect_bundle(root)["bundle"]["builtin_model"] is True
