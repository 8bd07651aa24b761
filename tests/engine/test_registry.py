"""The one engine registry: names, per-backend options and devices are checked before a backend
builds anything; ONNX Runtime CPU engines from it match a plain onnxruntime session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from l2p.engine import BACKENDS, device_backends, open_engine
from l2p.engine.onnxruntime_backend import OrtEngine
from l2p.engine.registry import engine_class
from l2p.engine.tensorrt_backend import TrtEngine
from l2p.errors import InputError
from tests.engine.test_gpu_backends import SPEC, tiny_bundle


def test_backends_and_their_options() -> None:
    assert sorted(BACKENDS) == ["onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"]
    assert all(engine_class(b) is OrtEngine for b in BACKENDS if b.startswith("onnxruntime"))
    assert OrtEngine.options() == ("threads", "provider_options", "spinning")
    assert TrtEngine.options() == ("bundle", "plan_dir", "precision", "plan_path", "min_dims", "opt_dims",
                                   "max_dims", "use_cuda_graph")
    assert device_backends() == ["onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"]


@pytest.mark.parametrize("backend, kwargs, needle", [
    ("onnx", {}, "unknown backend 'onnx'; choose one of"),
    ("onnxruntime", {"use_cuda_graph": True}, "backend 'onnxruntime' has no option use_cuda_graph; its options "
                                              "are threads, provider_options"),
    ("tensorrt", {"threads": 2}, "backend 'tensorrt' has no option threads"),
    ("onnxruntime", {"device": "cuda"}, r"backend 'onnxruntime' cannot keep arrays on the GPU; with device cuda "
                                        r"choose one of \['onnxruntime-cuda', 'onnxruntime-tensorrt', 'tensorrt'\]"),
    ("onnxruntime", {"device": "tpu"}, "unknown device 'tpu'"),
])
def test_open_engine_refuses_before_building(tmp_path: Path, backend: str, kwargs: dict, needle: str) -> None:
    missing = tmp_path / "missing.onnx"  # never read: the checks come first
    with pytest.raises(InputError, match=needle):
        open_engine(backend, missing, SPEC, **kwargs)


def test_onnxruntime_engine_matches_session(tmp_path: Path) -> None:
    path = tiny_bundle(tmp_path / "b") / "transformer" / "model.onnx"
    engine = open_engine("onnxruntime", path, SPEC, name="t", threads=1)
    assert isinstance(engine, OrtEngine) and engine.backend == "onnxruntime" and not engine.device_io
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    np.testing.assert_array_equal(engine.run({"x": x})["y"], ref)
    from_bytes = open_engine("onnxruntime", path.read_bytes(), SPEC, name="t", threads=1)
    np.testing.assert_array_equal(from_bytes.run({"x": x})["y"], ref)
    with pytest.raises(InputError, match="runs on host arrays only"):
        engine.run_device({"x": x})
