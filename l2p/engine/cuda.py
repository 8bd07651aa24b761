"""Minimal torch-free CUDA helpers over cuda-python's runtime bindings.

Device buffers, streams, events, async copies and CUDA-graph capture: just what the TensorRT
engine needs. ``cuda-python`` is imported lazily (``cuda.bindings.runtime``, or the older
``cuda.cudart``); a missing package is a :class:`~l2p.errors.MissingDependencyError` naming the
extra. Every runtime call returns ``(err, *results)``; :func:`call` checks ``err``.

Pointers and stream handles are plain ``int`` everywhere (0 is the legacy default stream).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import L2PError, missing_extra

_RT: Any = None


def runtime(extra: str = "tensorrt") -> Any:
    """The cuda-python runtime module (``cudart``), imported on first use."""
    global _RT
    if _RT is None:
        try:
            from cuda.bindings import runtime as rt  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart as rt  # older cuda-python 12.x
            except ImportError:
                raise missing_extra("cuda-python", extra, "CUDA device memory and streams") from None
        _RT = rt
    return _RT


def call(fn_name: str, *args: Any) -> Any:
    """Call ``cudart.<fn_name>(*args)``; raise :class:`L2PError` on a CUDA error.

    Returns ``None``, the single result, or a tuple of results.
    """
    rt = runtime()
    err, *out = getattr(rt, fn_name)(*args)
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        raise L2PError(f"CUDA error in {fn_name}: {_str(name)} ({_str(text)})")
    if not out:
        return None
    return out[0] if len(out) == 1 else tuple(out)


def _str(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


def compute_capability(device: int = 0) -> str:
    """Compute capability of ``device`` as ``"major.minor"``, e.g. ``"9.0"`` for an H100."""
    attr = runtime().cudaDeviceAttr
    major = call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMajor, device)
    minor = call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMinor, device)
    return f"{int(major)}.{int(minor)}"


def set_device(device: int) -> None:
    """Make ``device`` current for this thread."""
    call("cudaSetDevice", device)


class Stream:
    """A CUDA stream (blocking w.r.t. the legacy default stream). ``ptr`` is its handle."""

    def __init__(self) -> None:
        self.ptr = int(call("cudaStreamCreate"))

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.ptr)

    def close(self) -> None:
        if self.ptr:
            call("cudaStreamDestroy", self.ptr)
            self.ptr = 0

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Event:
    """A CUDA event without timing, used to order work across streams."""

    def __init__(self) -> None:
        flags = getattr(runtime(), "cudaEventDisableTiming", 2)  # 0x02 in cuda_runtime_api.h
        self.handle = call("cudaEventCreateWithFlags", flags)

    def record(self, stream: int) -> None:
        call("cudaEventRecord", self.handle, stream)

    def wait(self, stream: int) -> None:
        """Make ``stream`` wait (on the device) for the work recorded before this event."""
        call("cudaStreamWaitEvent", stream, self.handle, 0)

    def close(self) -> None:
        if self.handle is not None:
            call("cudaEventDestroy", self.handle)
            self.handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def stream_order(before: int, after: int, event: Event) -> None:
    """Make work later queued on stream ``after`` wait for work already queued on ``before``."""
    if before != after:
        event.record(before)
        event.wait(after)


class DeviceBuffer:
    """Raw device memory that only grows (``ensure``); ``ptr`` is 0 until first allocated."""

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr = 0
        self.nbytes = 0
        if nbytes:
            self.ensure(nbytes)

    def ensure(self, nbytes: int) -> bool:
        """Make the buffer at least ``nbytes`` long; returns True when it was (re)allocated."""
        nbytes = max(int(nbytes), 1)  # TensorRT wants a non-null address even for empty tensors
        if nbytes <= self.nbytes:
            return False
        self.free()
        self.ptr = int(call("cudaMalloc", nbytes))
        self.nbytes = nbytes
        return True

    def free(self) -> None:
        if self.ptr:
            call("cudaFree", self.ptr)
            self.ptr, self.nbytes = 0, 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


def memcpy_htod(dst: int, host: np.ndarray, stream: int) -> None:
    """Queue a host→device copy of the C-contiguous ``host`` array (keep it alive until sync)."""
    if not host.flags.c_contiguous:
        raise ValueError("memcpy_htod needs a C-contiguous host array")
    if host.nbytes:
        kind = runtime().cudaMemcpyKind.cudaMemcpyHostToDevice
        call("cudaMemcpyAsync", dst, host.ctypes.data, host.nbytes, kind, stream)


def memcpy_dtoh(host: np.ndarray, src: int, stream: int) -> None:
    """Queue a device→host copy into the C-contiguous ``host`` array (valid after sync)."""
    if not host.flags.c_contiguous:
        raise ValueError("memcpy_dtoh needs a C-contiguous host array")
    if host.nbytes:
        kind = runtime().cudaMemcpyKind.cudaMemcpyDeviceToHost
        call("cudaMemcpyAsync", host.ctypes.data, src, host.nbytes, kind, stream)


def memcpy_dtod(dst: int, src: int, nbytes: int, stream: int) -> None:
    """Queue a device→device copy of ``nbytes``."""
    if nbytes:
        kind = runtime().cudaMemcpyKind.cudaMemcpyDeviceToDevice
        call("cudaMemcpyAsync", dst, src, nbytes, kind, stream)


class DeviceArray:
    """A typed, C-contiguous device array without cupy: ``ptr``, ``shape``, ``dtype``.

    Exposes ``__cuda_array_interface__`` so cupy/numba can wrap it without a copy.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, buffer: DeviceBuffer | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        self.buffer = buffer if buffer is not None else DeviceBuffer(self.nbytes)
        if self.buffer.nbytes < self.nbytes:
            raise ValueError(f"buffer of {self.buffer.nbytes} bytes is too small for {self.nbytes}")

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
            "strides": None, "version": 3, "stream": None,
        }

    @classmethod
    def from_host(cls, host: np.ndarray, stream: int = 0) -> DeviceArray:
        """Copy ``host`` to a new device array (synchronous w.r.t. ``stream``)."""
        host = np.ascontiguousarray(host)
        out = cls(host.shape, host.dtype)
        memcpy_htod(out.ptr, host, stream)
        call("cudaStreamSynchronize", stream)
        return out

    def to_host(self, stream: int = 0) -> np.ndarray:
        """Copy to a new numpy array, waiting for ``stream``."""
        host = np.empty(self.shape, self.dtype)
        memcpy_dtoh(host, self.ptr, stream)
        call("cudaStreamSynchronize", stream)
        return host

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, ptr={self.ptr:#x})"


class CudaGraph:
    """One captured CUDA graph: ``capture(stream, fn)`` records ``fn()``'s work, ``launch`` replays it."""

    def __init__(self) -> None:
        self.graph: Any = None
        self.exec: Any = None

    def capture(self, stream: int, fn: Any) -> None:
        """Record the work ``fn()`` queues on ``stream`` (nothing executes during capture)."""
        rt = runtime()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", stream, mode)
        try:
            fn()
        finally:
            self.graph = call("cudaStreamEndCapture", stream)
        try:
            self.exec = call("cudaGraphInstantiateWithFlags", self.graph, 0)
        except AttributeError:  # bindings without the WithFlags spelling
            self.exec = call("cudaGraphInstantiate", self.graph, 0)

    def launch(self, stream: int) -> None:
        call("cudaGraphLaunch", self.exec, stream)

    def close(self) -> None:
        if self.exec is not None:
            call("cudaGraphExecDestroy", self.exec)
            self.exec = None
        if self.graph is not None:
            call("cudaGraphDestroy", self.graph)
            self.graph = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
