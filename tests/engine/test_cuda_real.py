"""``l2p.engine.cuda`` and ``l2p.engine.device_array`` on a real CUDA device (marked ``gpu``).

These need cuda-python and cupy and a GPU, and no TensorRT or onnxruntime-gpu: they check the
runtime helpers the TensorRT engine is built on (buffers, async copies, streams, events,
CUDA-graph capture and replay) against cupy, an independent CUDA library, and numpy.
Deselected by default; run with ``pytest -m gpu``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp() -> Any:
    if importlib.util.find_spec("cupy") is None or importlib.util.find_spec("cuda") is None:
        pytest.skip("needs cupy and cuda-python (pip install 'l2p[gpu]')")
    import cupy

    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    return cupy


def test_compute_capability_matches_cupy(cp: Any) -> None:
    from l2p.engine.cuda import compute_capability

    cc = compute_capability(0)
    major, minor = cc.split(".")
    assert major + minor == cp.cuda.Device(0).compute_capability  # cupy spells it "90"


def test_device_array_round_trip_and_cupy_view(cp: Any) -> None:
    from l2p.engine.cuda import DeviceArray, memcpy_dtod

    host = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
    dev = DeviceArray.from_host(host)
    np.testing.assert_array_equal(dev.to_host(), host)
    view = cp.asarray(dev)  # through __cuda_array_interface__, no copy
    assert view.data.ptr == dev.ptr and view.shape == host.shape
    np.testing.assert_array_equal(cp.asnumpy(view * 2), host * 2)
    other = DeviceArray(host.shape, np.float32)
    memcpy_dtod(other.ptr, dev.ptr, dev.nbytes, 0)
    np.testing.assert_array_equal(other.to_host(), host)


def test_streams_and_events_order_work(cp: Any) -> None:
    """A copy on stream B that waits on an event after a cupy kernel on stream A sees its result."""
    from l2p.engine.cuda import Event, Stream, memcpy_dtod, stream_order

    n = 1 << 22
    a, b = Stream(), Stream()
    src = cp.zeros(n, cp.float32)
    dst = cp.empty(n, cp.float32)
    with cp.cuda.ExternalStream(a.ptr):
        src += 3.0  # queued on A
        src *= 2.0
    ev = Event()
    stream_order(a.ptr, b.ptr, ev)
    memcpy_dtod(dst.data.ptr, src.data.ptr, src.nbytes, b.ptr)
    b.synchronize()
    assert float(dst.min()) == float(dst.max()) == 6.0
    ev.close(), a.close(), b.close()


def test_cuda_graph_replays_captured_copies(cp: Any) -> None:
    from l2p.engine.cuda import CudaGraph, DeviceBuffer, Stream, memcpy_dtod

    s = Stream()
    n = 4096
    src, mid = cp.arange(n, dtype=cp.float32), DeviceBuffer(n * 4)
    dst = cp.zeros(n, cp.float32)
    g = CudaGraph()
    g.capture(s.ptr, lambda: (memcpy_dtod(mid.ptr, src.data.ptr, n * 4, s.ptr),
                              memcpy_dtod(dst.data.ptr, mid.ptr, n * 4, s.ptr)))
    s.synchronize()
    assert float(cp.abs(dst).max()) == 0.0, "capture must not execute the work"
    g.launch(s.ptr)
    s.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(dst), np.arange(n, dtype=np.float32))
    src *= -1  # same addresses, new data: a replay copies the new values
    cp.cuda.Device().synchronize()
    g.launch(s.ptr)
    s.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(dst), -np.arange(n, dtype=np.float32))
    g.close(), mid.free(), s.close()


def test_device_array_helpers_on_cupy(cp: Any) -> None:
    from l2p.engine.device_array import current_stream, device_meta, device_ptr, empty, get_xp, to_host
    from l2p.errors import InputError

    assert get_xp("cuda") is cp and get_xp("cuda:0") is cp
    x = cp.arange(24, dtype=cp.float32).reshape(2, 3, 4)  # (2, 3, 4) float32
    assert device_ptr(x) == x.data.ptr
    assert device_meta(x) == ((2, 3, 4), np.dtype(np.float32))
    with pytest.raises(InputError, match="C-contiguous"):
        device_meta(x.transpose(0, 2, 1))
    e = empty((5, 2), np.float16, like=x)
    assert isinstance(e, cp.ndarray) and e.shape == (5, 2) and e.dtype == np.float16
    s = cp.cuda.Stream()
    with s:
        assert current_stream(x) == s.ptr
    np.testing.assert_array_equal(to_host(x), np.arange(24, dtype=np.float32).reshape(2, 3, 4))
