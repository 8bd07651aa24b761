"""The array namespace of the sampling loop: numpy on the CPU, cupy on the GPU.

The loop does its scheduler arithmetic with operators on arrays from ``xp = get_xp(device)``.
On the GPU those are cupy arrays and the engines read/write their device pointers directly
(``Engine.run_device``), so latents never leave the device.

Any object with ``__cuda_array_interface__`` (cupy, numba, :class:`l2p.engine.cuda.DeviceArray`)
counts as a device array. cupy is optional (extra ``[gpu]``) and imported lazily.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError, missing_extra


def import_cupy() -> ModuleType:
    """Import cupy or raise :class:`~l2p.errors.MissingDependencyError` naming the extra."""
    try:
        import cupy
    except ImportError:
        raise missing_extra("cupy", "gpu", "device-resident sampling (--device cuda)") from None
    return cupy


class ArrayMeta(NamedTuple):
    """Shape and dtype name of an array, read without touching its data (what ``IOSpec.check_feed`` reads)."""

    shape: tuple[int, ...]
    dtype: str


def device_index(device: str) -> int | None:
    """CUDA ordinal of ``device``: None for ``"cpu"``, 0 for ``"cuda"``/``"gpu"``, N for ``"cuda:N"``."""
    d = device.lower()
    if d == "cpu":
        return None
    if d in ("cuda", "gpu"):
        return 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return int(d[5:])
    raise InputError(f"unknown device '{device}'; choose cpu, cuda or cuda:N")


def get_xp(device: str = "cpu") -> ModuleType:
    """Array module for ``device``: numpy for ``"cpu"``, cupy for ``"cuda"``/``"cuda:N"``/``"gpu"``."""
    return np if device_index(device) is None else import_cupy()


def is_device_array(x: Any) -> bool:
    """True for arrays that live on a CUDA device (``__cuda_array_interface__``)."""
    return hasattr(x, "__cuda_array_interface__")


def is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def device_ptr(x: Any) -> int:
    """Device address of the first element of a device array (``arr.data.ptr`` for cupy)."""
    return int(x.__cuda_array_interface__["data"][0])


def device_meta(x: Any, what: str = "array") -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of a device array; raises InputError if it is not C-contiguous."""
    cai = x.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None:
        c_strides = [dtype.itemsize * math.prod(shape[i + 1:]) for i in range(len(shape))]
        if any(n > 1 and int(s) != c for s, c, n in zip(strides, c_strides, shape)):
            raise InputError(
                f"{what} has strides {tuple(strides)} for shape {shape}: engines need C-contiguous "
                "device arrays; pass xp.ascontiguousarray(x)"
            )
    return shape, dtype


def empty(shape: tuple[int, ...], dtype: Any, like: Any = None) -> Any:
    """A new device array of ``shape``/``dtype``: cupy when ``like`` is cupy, else a DeviceArray."""
    if like is not None and is_cupy(like):
        return import_cupy().empty(shape, dtype=dtype)
    from .cuda import DeviceArray

    return DeviceArray(tuple(shape), dtype)


def current_stream(like: Any = None) -> int:
    """The stream the caller's array library queues work on: cupy's current stream, else 0."""
    if like is not None and is_cupy(like):
        return int(import_cupy().cuda.get_current_stream().ptr)
    return 0


def to_host(x: Any) -> np.ndarray:
    """``x`` as a numpy array: a numpy array itself; one device-to-host copy for a cupy array,
    an :class:`l2p.engine.cuda.DeviceArray` (or anything with ``to_host()``) or an ``OrtValue``."""
    if isinstance(x, np.ndarray):
        return x
    if is_cupy(x):
        return np.asarray(x.get())
    if hasattr(x, "to_host"):
        return np.asarray(x.to_host())
    if hasattr(x, "numpy") and hasattr(x, "device_name"):  # onnxruntime OrtValue
        return np.asarray(x.numpy())
    raise InputError(f"cannot copy {type(x).__name__} to the host; expected numpy, cupy or OrtValue")
