"""GPU backends: TensorRT engine, ONNX Runtime with device I/O binding, the cupy array namespace.

Unmarked tests run on CPU and check the errors for missing packages/providers and the pure
helpers. Tests marked ``gpu``/``tensorrt`` need the hardware and are skipped (with a reason)
when it or the package is absent; they are deselected by default (``-m gpu`` / ``-m tensorrt``).
References are ONNX Runtime CPU runs of the same graph, never the code under test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from l2p.bundle import write_manifest
from l2p.engine import Engine, open_engine
from l2p.engine.device_array import device_index, device_meta, device_ptr, get_xp, to_host
from l2p.engine.onnxruntime_backend import OrtEngine, session_providers
from l2p.errors import ArtifactError, InputError, MismatchError, MissingDependencyError
from l2p.spec import IOSpec, TensorSpec

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUPY = importlib.util.find_spec("cupy") is not None
HAS_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()
SPEC = IOSpec((TensorSpec("x", "float32", ("batch", "seq", 8)),), (TensorSpec("y", "float32", ("batch", "seq", 8)),))


def tiny_bundle(root: Path) -> Path:
    """A one-graph bundle: y = relu(x @ W + b), x: [batch, seq, 8] float32."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        initializer=[numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    (root / "transformer").mkdir(parents=True)
    onnx.save(model, str(root / "transformer" / "model.onnx"))
    (root / "transformer" / "io_spec.json").write_text(json.dumps(SPEC.to_dict()))
    write_manifest(root, {"family": "tiny", "precision": "fp32", "graphs": {
        "transformer": {"onnx": "transformer/model.onnx", "spec": "transformer/io_spec.json"}}})
    return root


class FakeDeviceArray:
    """Just a ``__cuda_array_interface__``: no memory behind it."""

    def __init__(self, shape: tuple[int, ...], strides: tuple[int, ...] | None = None) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (0xABC0, False),
                                         "strides": strides, "version": 3}


# -- CPU: pure helpers and missing-dependency errors ---------------------------------------------


def test_get_xp() -> None:
    assert get_xp("cpu") is np
    with pytest.raises(InputError, match="unknown device"):
        get_xp("tpu")
    assert [device_index(d) for d in ("cpu", "CPU", "cuda", "gpu", "cuda:3")] == [None, None, 0, 0, 3]
    for bad in ("cuda:", "cuda:x", "tpu"):
        with pytest.raises(InputError, match="unknown device"):
            device_index(bad)


@pytest.mark.skipif(HAS_CUPY, reason="cupy is installed")
def test_get_xp_cuda_without_cupy() -> None:
    with pytest.raises(MissingDependencyError, match=r"l2p\[gpu\]"):
        get_xp("cuda:0")


def test_device_array_helpers() -> None:
    a = FakeDeviceArray((2, 3, 4))
    assert device_ptr(a) == 0xABC0
    assert device_meta(a) == ((2, 3, 4), np.dtype("float32"))
    assert device_meta(FakeDeviceArray((2, 3, 4), (48, 16, 4)))[0] == (2, 3, 4)
    assert device_meta(FakeDeviceArray((1, 3, 4), (999, 16, 4)))[0] == (1, 3, 4)  # size-1 dims: any stride
    with pytest.raises(InputError, match="C-contiguous"):
        device_meta(FakeDeviceArray((2, 3, 4), (4, 8, 24)))
    x = np.ones(3)
    assert to_host(x) is x
    with pytest.raises(InputError):
        to_host([1, 2])


def test_session_providers() -> None:
    with pytest.raises(MissingDependencyError, match=r"l2p\[gpu\]"):
        session_providers("CUDAExecutionProvider", ["CPUExecutionProvider"])
    with pytest.raises(MissingDependencyError, match=r"l2p\[tensorrt\]"):
        session_providers("TensorrtExecutionProvider", ["CPUExecutionProvider"])
    assert session_providers("CPUExecutionProvider", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    both = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert session_providers("TensorrtExecutionProvider", both) == both[:2]
    assert session_providers("CUDAExecutionProvider", both) == ["CUDAExecutionProvider"]


@pytest.mark.skipif(HAS_CUDA_EP, reason="the CUDA provider is available")
def test_ort_cuda_engine_without_cuda_provider(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b")
    for device in ("cpu", "cuda"):
        with pytest.raises(MissingDependencyError, match="CUDAExecutionProvider"):
            open_engine("onnxruntime-cuda", root / "transformer" / "model.onnx", SPEC, device=device)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_trt_engine_without_tensorrt(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b")
    with pytest.raises(MissingDependencyError, match=r"pip install 'l2p\[tensorrt\]'"):
        open_engine("tensorrt", root / "transformer" / "model.onnx", SPEC, name="transformer")


@pytest.mark.skipif(HAS_CUDA_PYTHON, reason="cuda-python is installed")
def test_cuda_helpers_without_cuda_python() -> None:
    from l2p.engine import cuda

    with pytest.raises(MissingDependencyError, match="cuda-python"):
        cuda.Stream()


def test_gpu_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, l2p.engine.trt_build, l2p.engine.trt_plans, l2p.engine.trt_profiles, "
        "l2p.engine.tensorrt_backend, l2p.engine.onnxruntime_backend, l2p.engine.registry, "
        "l2p.engine.cuda, l2p.engine.device_array, l2p.validation.backends\n"
        "from l2p.engine import device_backends; device_backends()\n"
        "bad = [m for m in ('torch', 'tensorrt', 'cupy', 'cuda') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- GPU: TensorRT -------------------------------------------------------------------------------


@pytest.fixture
def trt_bundle(tmp_path: Path) -> Path:
    if not HAS_TRT:
        pytest.skip("tensorrt is not installed (pip install 'l2p[tensorrt]')")
    try:
        from l2p.engine.trt_build import current_env

        current_env()
    except Exception as e:  # no GPU / driver / cuda-python
        pytest.skip(f"no usable CUDA device: {e}")
    return tiny_bundle(tmp_path / "b")


def _ort_cpu(root: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return OrtEngine(root / "transformer" / "model.onnx", SPEC, name="ref").run(feed)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_build_plans_and_trt_engine_match_ort(trt_bundle: Path) -> None:
    from l2p.engine.trt_build import build_plans

    dims = dict(min_dims={"batch": 1, "seq": 1}, opt_dims={"batch": 1, "seq": 16}, max_dims={"batch": 2, "seq": 64})
    cache = trt_bundle / "plans" / "timing.cache"
    plans = build_plans(trt_bundle, timing_cache=cache, progress=False, **dims)
    plan = plans["transformer"]
    assert plan.is_file() and plan.with_suffix(".json").is_file() and cache.is_file()
    mtime = plan.stat().st_mtime_ns
    assert build_plans(trt_bundle, progress=False, **dims) == plans  # idempotent: skipped
    assert plan.stat().st_mtime_ns == mtime

    engine: Any = open_engine("tensorrt", trt_bundle / "transformer" / "model.onnx", SPEC, name="transformer")
    assert engine.plan_path == plan
    for shape in [(1, 16, 8), (2, 64, 8), (1, 1, 8), (2, 5, 8)]:
        feed = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        got, ref = engine.run(feed)["y"], _ort_cpu(trt_bundle, feed)["y"]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(InputError, match="outside the plan's profile"):
        engine.run({"x": np.zeros((3, 4, 8), np.float32)})
    engine.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_trt_refuses_edited_sidecar(trt_bundle: Path) -> None:
    from l2p.engine.tensorrt_backend import TrtEngine
    from l2p.engine.trt_build import build_plans

    plan = build_plans(trt_bundle, opt_dims={"batch": 1, "seq": 4}, progress=False)["transformer"]
    side = plan.with_suffix(".json")
    info = json.loads(side.read_text())
    info["trt_version"] = "9.0.0"
    side.write_text(json.dumps(info))
    with pytest.raises(MismatchError, match="TensorRT 9.0.0"):
        TrtEngine(trt_bundle / "transformer" / "model.onnx", SPEC, name="transformer")


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_cuda_graph_replay_equals_plain_run(trt_bundle: Path) -> None:
    from l2p.engine.tensorrt_backend import TrtEngine

    onnx_path = trt_bundle / "transformer" / "model.onnx"
    dims = dict(min_dims={"batch": 1, "seq": 1}, opt_dims={"batch": 1, "seq": 16}, max_dims={"batch": 2, "seq": 64})
    plain = TrtEngine(onnx_path, SPEC, **dims)
    graphed = TrtEngine(onnx_path, SPEC, use_cuda_graph=True, **dims)
    rng = np.random.default_rng(2)
    for shape in [(1, 16, 8), (1, 16, 8), (2, 64, 8), (1, 16, 8), (1, 16, 8)]:  # capture, replay, grow, recapture
        feed = {"x": rng.standard_normal(shape).astype(np.float32)}
        np.testing.assert_array_equal(graphed.run(feed)["y"], plain.run(feed)["y"])
    assert graphed.use_cuda_graph and graphed._graphs
    plain.close()
    graphed.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("use_cuda_graph", [False, True])
def test_trt_run_device_cupy(trt_bundle: Path, use_cuda_graph: bool) -> None:
    if not HAS_CUPY:
        pytest.skip("cupy is not installed (pip install 'l2p[gpu]')")
    import cupy as cp

    from l2p.engine.tensorrt_backend import TrtEngine

    engine = TrtEngine(trt_bundle / "transformer" / "model.onnx", SPEC, use_cuda_graph=use_cuda_graph,
                       min_dims={"batch": 1, "seq": 1}, opt_dims={"batch": 1, "seq": 8},
                       max_dims={"batch": 2, "seq": 32})
    x = np.random.default_rng(3).standard_normal((2, 8, 8)).astype(np.float32)
    for _ in range(3):
        out = engine.run_device({"x": cp.asarray(x) * 1.0})["y"]  # produced on cupy's stream
        assert isinstance(out, cp.ndarray)
        y = (out * 2.0).get() / 2.0  # consumed on cupy's stream
        np.testing.assert_allclose(y, _ort_cpu(trt_bundle, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    engine.close()


# -- GPU: ONNX Runtime with device I/O binding ---------------------------------------------------


@pytest.fixture
def cuda_ep_bundle(tmp_path: Path) -> Path:
    if not HAS_CUDA_EP:
        pytest.skip("onnxruntime has no CUDAExecutionProvider here (pip install 'l2p[gpu]')")
    return tiny_bundle(tmp_path / "b")


@pytest.mark.gpu
def test_ort_device_run_device_ortvalue_roundtrip(cuda_ep_bundle: Path) -> None:
    engine: Any = open_engine("onnxruntime-cuda", cuda_ep_bundle / "transformer" / "model.onnx", SPEC, name="t",
                              device="cuda")
    x = np.random.default_rng(4).standard_normal((2, 5, 8)).astype(np.float32)
    out: Any = engine.run_device({"x": engine.to_device(x)})["y"]
    assert out.device_name().lower() == "cuda"
    ref = _ort_cpu(cuda_ep_bundle, {"x": x})["y"]
    np.testing.assert_allclose(to_host(out), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(engine.run({"x": x})["y"], ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="run_device input"):
        engine.run_device({"x": x})


@pytest.mark.gpu
def test_ort_device_run_device_cupy(cuda_ep_bundle: Path) -> None:
    if not HAS_CUPY:
        pytest.skip("cupy is not installed (pip install 'l2p[gpu]')")
    import cupy as cp

    engine = open_engine("onnxruntime-cuda", cuda_ep_bundle / "transformer" / "model.onnx", SPEC, name="t",
                         device="cuda:0")
    x = np.random.default_rng(5).standard_normal((1, 7, 8)).astype(np.float32)
    out = engine.run_device({"x": cp.asarray(x)})["y"]
    assert isinstance(out, cp.ndarray) and out.shape == (1, 7, 8)
    np.testing.assert_allclose(cp.asnumpy(out), _ort_cpu(cuda_ep_bundle, {"x": x})["y"], rtol=1e-4, atol=1e-4)


# -- CPU: TrtEngine/build_plans control flow against a fake TensorRT + CUDA runtime ---------------
# The fakes follow the documented API shapes (cuda-python's (err, *results) tuples; TensorRT's
# name-based tensors); device memory is host memory, kernels are ONNX Runtime CPU runs, and a
# CUDA graph records the closures queued during capture. This checks l2p's logic, not the APIs.


class _FakeRuntime:
    """cuda.bindings.runtime look-alike."""

    class cudaError_t:  # noqa: N801
        cudaSuccess = 0

    class cudaDeviceAttr:  # noqa: N801
        cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMinor = 75, 76

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 1, 2, 3

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    cudaEventDisableTiming = 2

    def __init__(self) -> None:
        self.mem: dict[int, Any] = {}
        self.capturing: list[Any] | None = None
        self.calls: list[str] = []
        self.launches = 0
        self.deserialized: list[bool] = []  # the runtime's engine_host_code_allowed at each deserialization

    def __getattr__(self, name: str) -> Any:  # every other call succeeds and is logged
        return lambda *a: (self.calls.append(name), (0,))[1]

    def cudaDeviceGetAttribute(self, attr: int, dev: int) -> tuple[int, int]:  # noqa: N802
        return 0, 9 if attr == 75 else 0

    def cudaStreamCreate(self) -> tuple[int, int]:  # noqa: N802
        return 0, 77

    def cudaEventCreateWithFlags(self, flags: int) -> tuple[int, object]:  # noqa: N802
        return 0, object()

    def cudaMalloc(self, n: int) -> tuple[int, int]:  # noqa: N802
        import ctypes

        buf = ctypes.create_string_buffer(n)
        self.mem[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaFree(self, ptr: int) -> tuple[int]:  # noqa: N802
        del self.mem[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:  # noqa: N802
        import ctypes

        assert self.capturing is None, "copies are not part of the captured graph"
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamBeginCapture(self, stream: int, mode: int) -> tuple[int]:  # noqa: N802
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream: int) -> tuple[int, list[Any]]:  # noqa: N802
        graph, self.capturing = self.capturing, None
        return 0, graph

    def cudaGraphInstantiateWithFlags(self, graph: list[Any], flags: int) -> tuple[int, list[Any]]:  # noqa: N802
        return 0, graph

    def cudaGraphLaunch(self, graph: list[Any], stream: int) -> tuple[int]:  # noqa: N802
        self.launches += 1
        for fn in graph:
            fn()
        return (0,)


def _fake_tensorrt(rt: _FakeRuntime) -> Any:
    import ctypes
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.BuilderFlag = types.SimpleNamespace(FP16=0, BF16=1, TF32=2)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = np.dtype

    class Network:
        def __init__(self) -> None:
            self.path, self.num_inputs = "", 0

        def get_input(self, i: int) -> Any:
            return types.SimpleNamespace(name=["x"][i])

    class Parser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            self.network.path, self.network.num_inputs = path, 1
            return True

    class Config:
        def __init__(self) -> None:
            self.profile: dict[str, Any] = {}
            self.flags: set[int] = {2}

        set_flag = lambda self, f: self.flags.add(f)  # noqa: E731
        clear_flag = lambda self, f: self.flags.discard(f)  # noqa: E731
        create_timing_cache = lambda self, data: data  # noqa: E731
        set_timing_cache = lambda self, cache, ignore_mismatch: True  # noqa: E731
        get_timing_cache = lambda self: types.SimpleNamespace(serialize=lambda: b"timing")  # noqa: E731

        def add_optimization_profile(self, p: Any) -> None:
            self.profile = p.shapes

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        create_network = lambda self, flags: Network()  # noqa: E731
        create_builder_config = lambda self: Config()  # noqa: E731
        create_optimization_profile = lambda self: types.SimpleNamespace(  # noqa: E731
            shapes={}, set_shape=lambda n, a, b, c, s=None: None)

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            assert 2 not in config.flags, "fp32 plans clear TF32"
            return json.dumps({"onnx": network.path}).encode()

    class Context:
        def __init__(self, engine: Any) -> None:
            self.engine, self.shapes, self.addrs = engine, {"x": (-1, -1, 8)}, {}

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shapes["x"]  # the tiny graph: y has x's shape

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addrs[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            shape, x_ptr, y_ptr = self.shapes["x"], self.addrs["x"], self.addrs["y"]  # baked, like a graph

            def kernel() -> None:
                n = int(np.prod(shape)) * 4
                x = np.frombuffer((ctypes.c_char * n).from_address(x_ptr), np.float32).reshape(shape)
                y = np.ascontiguousarray(self.engine.session.run(None, {"x": x.copy()})[0])
                ctypes.memmove(y_ptr, y.ctypes.data, n)

            rt.capturing.append(kernel) if rt.capturing is not None else kernel()
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, plan: bytes) -> None:
            self.session = ort.InferenceSession(json.loads(bytes(plan))["onnx"], providers=["CPUExecutionProvider"])

        get_tensor_name = lambda self, i: ["x", "y"][i]  # noqa: E731
        get_tensor_mode = lambda self, n: "in" if n == "x" else "out"  # noqa: E731
        get_tensor_dtype = lambda self, n: np.float32  # noqa: E731
        get_tensor_profile_shape = lambda self, n, i: [(1, 1, 8), (1, 16, 8), (2, 64, 8)]  # noqa: E731
        create_execution_context = lambda self: Context(self)  # noqa: E731

    trt.Builder, trt.OnnxParser = Builder, Parser
    def deserialize(self: Any, plan: bytes) -> Engine:
        rt.deserialized.append(self.engine_host_code_allowed)
        return Engine(plan)

    # TensorRT 10's default is False; the fake's True checks that l2p sets it
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None, "engine_host_code_allowed": True,
                                       "deserialize_cuda_engine": deserialize})
    return trt


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> _FakeRuntime:
    from l2p.engine import cuda

    rt = _FakeRuntime()
    monkeypatch.setattr(cuda, "_RT", rt)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(rt))
    return rt


def test_fake_gpu_build_load_run(tmp_path: Path, fake_gpu: _FakeRuntime) -> None:
    from l2p.engine import cuda
    from l2p.engine.trt_build import build_plans
    from l2p.validation.backends import format_backend_report, validate_backend

    root = tiny_bundle(tmp_path / "b")
    dims = dict(min_dims={"batch": 1, "seq": 1}, opt_dims={"batch": 1, "seq": 16}, max_dims={"batch": 2, "seq": 64})
    cache = root / "plans" / "timing.cache"
    plans = build_plans(root, timing_cache=cache, progress=False, **dims)
    assert cache.read_bytes() == b"timing"
    assert build_plans(root, progress=False, **dims) == plans
    engine: Any = open_engine("tensorrt", root / "transformer" / "model.onnx", SPEC, name="transformer",
                              use_cuda_graph=True)
    assert engine.plan_path == plans["transformer"] and engine.compute_capability == "9.0"
    plain = open_engine("tensorrt", root / "transformer" / "model.onnx", SPEC, name="transformer", device="cuda")
    rng, kept = np.random.default_rng(0), []
    for shape in [(1, 16, 8), (1, 16, 8), (2, 64, 8), (1, 3, 8), (1, 16, 8)]:
        feed = {"x": rng.standard_normal(shape).astype(np.float32)}
        ref = _ort_cpu(root, feed)["y"]
        np.testing.assert_allclose(engine.run(feed)["y"], ref, rtol=1e-6)
        x_dev = cuda.DeviceArray.from_host(feed["x"])
        kept += [(engine.run_device({"x": x_dev})["y"], ref), (plain.run_device({"x": x_dev})["y"], ref)]
    for y_dev, ref in kept:  # device outputs are fresh arrays, not overwritten by later runs
        np.testing.assert_allclose(y_dev.to_host(), ref, rtol=1e-6)
    plain.close()
    # (1,16,8) captured then replayed; growing to (2,64,8) dropped it; (1,16,8) was captured again
    assert fake_gpu.launches == 6 and sorted(s for ((_, s),) in engine._graphs) == [(1, 3, 8), (1, 16, 8), (2, 64, 8)]
    with pytest.raises(InputError, match="outside the plan's profile"):
        engine.run({"x": np.zeros((3, 4, 8), np.float32)})
    engine.close()
    report = validate_backend(root, "tensorrt")
    assert report["ok"] and report["graphs"]["transformer"]["dims"] == {"batch": 1, "seq": 1}
    report = validate_backend(root, "tensorrt", dims={"batch": 2, "seq": 5})
    assert report["ok"] and report["graphs"]["transformer"]["plan"] is None
    (row,) = report["results"]
    assert row["graph"] == "transformer" and row["output"] == "y" and row["rel"] < row["limit"] == 1e-4
    assert "PASSED" in format_backend_report(report)


def test_fake_gpu_plans_follow_bundle_rules(tmp_path: Path, fake_gpu: _FakeRuntime) -> None:
    """A plan under BUNDLE/plans is deserialized only with host code refused, and never when it, its
    sidecar or a folder on the way is a symbolic link, or when it is larger than its graph allows."""
    from l2p.engine.trt_build import build_plans

    root = tiny_bundle(tmp_path / "b")
    dims = dict(min_dims={"batch": 1, "seq": 1}, opt_dims={"batch": 1, "seq": 16}, max_dims={"batch": 2, "seq": 64})
    plan = build_plans(root, progress=False, **dims)["transformer"]
    onnx_path = root / "transformer" / "model.onnx"
    open_engine("tensorrt", onnx_path, SPEC, name="transformer").close()
    assert fake_gpu.deserialized == [False]
    outside = tmp_path / "outside"
    (root / "plans").rename(outside)
    (root / "plans").symlink_to(outside)
    with pytest.raises(ArtifactError, match="'plans' in .* is a symbolic link"):
        open_engine("tensorrt", onnx_path, SPEC, name="transformer")
    (root / "plans").unlink()
    (outside).rename(root / "plans")
    data = plan.read_bytes()
    plan.unlink()
    (tmp_path / "copy.plan").write_bytes(data)
    plan.symlink_to(tmp_path / "copy.plan")
    with pytest.raises(ArtifactError, match="symbolic link"):
        open_engine("tensorrt", onnx_path, SPEC, name="transformer")
    plan.unlink()
    plan.write_bytes(data)
    sidecar = plan.with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "plan_size": 1 << 40}))
    with pytest.raises(ArtifactError, match="more than a plan of this graph can be"):
        open_engine("tensorrt", onnx_path, SPEC, name="transformer")
    assert fake_gpu.deserialized == [False]


def test_ort_device_binding_logic_on_cpu(tmp_path: Path) -> None:
    """run_device's io_binding calls, with host memory standing in for the device."""
    root = tiny_bundle(tmp_path / "b")
    engine = OrtEngine.__new__(OrtEngine)  # skip the GPU-provider check, keep the logic
    Engine.__init__(engine, "t", SPEC)
    engine.session = ort.InferenceSession(str(root / "transformer" / "model.onnx"), providers=["CPUExecutionProvider"])
    engine._ortvalue, engine._outputs, engine.device_id, engine.device_type = ort.OrtValue, ["y"], 0, "cpu"
    engine.device_io = True
    x = np.random.default_rng(6).standard_normal((2, 3, 8)).astype(np.float32)
    ref = _ort_cpu(root, {"x": x})["y"]
    out = engine.run_device({"x": engine.to_device(x)})["y"]
    assert isinstance(out, ort.OrtValue)
    np.testing.assert_allclose(to_host(out), ref, rtol=1e-6)
    by_pointer = FakeDeviceArray(x.shape)
    by_pointer.__cuda_array_interface__["data"] = (x.ctypes.data, False)
    np.testing.assert_allclose(to_host(engine.run_device({"x": by_pointer})["y"]), ref, rtol=1e-6)
    with pytest.raises(InputError, match="dtype"):
        engine.run_device({"x": engine.to_device(x.astype(np.float64))})
