"""Backend validation without a GPU: the comparison, the argument checks, and the CLI's --dims.

References are hand-computed values (max abs error / max |reference|) and ONNX Runtime CPU;
the TensorRT path itself runs against a fake TensorRT in tests/engine/test_gpu_backends.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from l2p.errors import InputError, MissingDependencyError
from l2p.metrics import max_errors, rel_error
from l2p.precision import Precision
from l2p.validation import backends
from l2p.validation.backends import compare_outputs, validate_backend
from tests.engine.test_trt_plans import tiny_bundle

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def test_error_measures() -> None:
    ref = np.array([3.0, -4.0], np.float32)  # ||ref|| = 5, max |ref| = 4
    got = np.array([3.0, -4.5], np.float32)
    assert rel_error(got, ref) == pytest.approx(0.5 / 5)
    assert max_errors(got, ref) == pytest.approx((0.5, 0.5 / 4))
    assert max_errors(np.zeros(2), np.zeros(2)) == (0.0, 0.0)
    assert max_errors(np.ones(2), np.zeros(2)) == (1.0, float("inf"))
    assert max_errors(np.zeros(0), np.zeros(0)) == (0.0, 0.0)


def test_compare_outputs() -> None:
    ref = {"y": np.array([1.0, -2.0, 4.0], np.float32)}
    ok = compare_outputs({"y": ref["y"] + np.float32(1e-5)}, ref, 1e-4)["y"]
    assert ok["ok"] and ok["max_abs"] == pytest.approx(1e-5, rel=1e-2) and ok["max_rel"] < 1e-4
    assert not compare_outputs({"y": ref["y"] * 1.01}, ref, 1e-4)["y"]["ok"]
    assert compare_outputs({"y": ref["y"] * 1.01}, ref, backends.TOLERANCES[Precision.FP16])["y"]["ok"]
    assert not compare_outputs({"y": np.array([1.0, np.nan, 4.0])}, ref, 1.0)["y"]["ok"]
    assert "shape" in compare_outputs({"y": np.zeros(2)}, ref, 1.0)["y"]["error"]


def test_validate_backend_argument_errors(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b")
    with pytest.raises(InputError, match="unknown backend"):
        validate_backend(root, "onnxruntime")
    with pytest.raises(InputError, match="reference"):
        validate_backend(root, "tensorrt", reference="torch")


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_validate_backend_without_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        validate_backend(tiny_bundle(tmp_path / "b"), "tensorrt")


@pytest.mark.skipif(HAS_CUDA_EP, reason="the CUDA provider is available")
def test_cli_names_the_dims_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The missing-dims message names an option `l2p validate` has; with it, validation gets as far
    as opening the CUDA engine (which this install lacks)."""
    from l2p.cli import main

    root = tiny_bundle(tmp_path / "b")
    monkeypatch.setattr(backends, "_check_installed", lambda backend: None)
    assert main(["validate", str(root), "--backend", "onnxruntime-cuda"]) == 2
    err = capsys.readouterr().err
    assert "pass --dims batch=N,seq=N" in err
    assert main(["validate", str(root), "--backend", "onnxruntime-cuda", "--dims", "batch=1,seq=4"]) == 2
    assert "CUDAExecutionProvider is not available" in capsys.readouterr().err
    assert main(["validate", str(root), "--dims", "batch=1"]) == 2
    assert "--dims gives the sample shapes" in capsys.readouterr().err
