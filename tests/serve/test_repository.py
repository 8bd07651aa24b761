"""``l2p triton-repo``: the repository it writes (no server needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from l2p.bundle import open_bundle
from l2p.cli import main


def err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    e = capsys.readouterr().err
    assert e.startswith("error: ") and e.count("\n") == 1 and "Traceback" not in e
    return e


def test_repository_layout_config_and_linked_bundle(flux_bundle: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "repo"
    assert main(["triton-repo", str(flux_bundle), "--out", str(out), "--method", "taylorseer2", "--full-steps", "3",
                 "--steps", "7", "--instances", "2", "--max-batch", "4", "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["l2p"]  # nothing else: Triton reads every folder as a model
    model = out / "l2p"
    assert (model / "1" / "model.py").is_file()
    cfg = (model / "config.pbtxt").read_text()
    for line in ['backend: "python"', "max_batch_size: 4", "instance_group [ { kind: KIND_CPU count: 2 } ]",
                 "dynamic_batching {", '{ name: "encoder_hidden_states" data_type: TYPE_FP32 dims: [ -1, -1 ] }',
                 '{ name: "seed" data_type: TYPE_INT64 dims: [ 1 ] }',
                 '{ name: "method" data_type: TYPE_STRING dims: [ 1 ] optional: true }',
                 '{ name: "latents" data_type: TYPE_FP32 dims: [ 16, 16 ] }',
                 'parameters: { key: "l2p_bundle" value: { string_value: "bundle" } }',
                 'parameters: { key: "l2p_method" value: { string_value: "taylorseer2" } }',
                 'parameters: { key: "l2p_full_steps" value: { string_value: "3" } }',
                 'parameters: { key: "l2p_steps" value: { string_value: "7" } }']:
        assert line in cfg, line
    assert "image" not in cfg  # no VAE decoder in this bundle
    # the bundle inside verifies (every file's sha256) and shares the files' storage where it can
    inner = open_bundle(model / "bundle", verify=True)
    assert inner.hash == open_bundle(flux_bundle).hash
    onnx = inner.onnx_path("transformer")
    src = flux_bundle / onnx.relative_to(model / "bundle")
    if src.stat().st_dev == onnx.stat().st_dev:  # one filesystem: hard links
        assert os.path.samefile(onnx, src)
    record = json.loads((model / "l2p_repository.json").read_text())
    assert record["method"] == "taylorseer2" and record["steps"] == 7
    # writing again replaces l2p's own repository; no temporary folders are left next to it
    assert main(["triton-repo", str(flux_bundle), "--out", str(out), "--reference"]) == 0
    assert f'string_value: "{flux_bundle.resolve()}"' in (model / "config.pbtxt").read_text()
    assert not (model / "bundle").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    # a file the user added to it is never deleted by a rewrite
    (model / "notes.txt").write_text("mine")
    assert "also holds ['notes.txt']" in err(capsys, ["triton-repo", str(flux_bundle), "--out", str(out)])
    assert (model / "notes.txt").read_text() == "mine"


def test_bad_settings_are_refused_before_anything_is_written(flux_bundle: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    base = ["triton-repo", str(flux_bundle), "--out", str(tmp_path / "r")]
    assert "unknown method 'nope'" in err(capsys, [*base, "--method", "nope"])
    assert "needs --full-steps" in err(capsys, [*base, "--method", "fora"])
    assert "has no predictor 'missing'" in err(capsys, [*base, "--method", "l2p:missing"])
    assert "--steps 0 is out of range" in err(capsys, [*base, "--steps", "0"])
    assert "--instances 0 is out of range" in err(capsys, [*base, "--instances", "0"])
    assert "--max-batch 0 is out of range" in err(capsys, [*base, "--max-batch", "0"])
    assert "unknown backend 'cuda'" in err(capsys, [*base, "--backend", "cuda"])
    assert not (tmp_path / "r").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not l2p's")
    assert "is not a repository l2p wrote" in err(capsys, ["triton-repo", str(flux_bundle), "--out", str(foreign)])
    assert (foreign / "keep.txt").read_text() == "not l2p's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign"]


def test_serve_without_tritonserver_says_what_to_install(flux_bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    monkeypatch.setenv("PATH", "/nonexistent")
    e = err(capsys, ["serve", str(flux_bundle)])
    assert "pip install --no-deps nvidia-pytriton" in e and "l2p[serve]" in e
    assert "three different ports" in err(capsys, ["serve", str(flux_bundle), "--grpc-port", "8000"])
    assert "three different ports" in err(capsys, ["serve", str(flux_bundle), "--http-port", "0"])
