"""A fake GPU for the device-resident loop: an array namespace whose arrays refuse to leave the "device".

:class:`DevArray` wraps a numpy array (the "device memory"); arithmetic, indexing and ``astype``
stay :class:`DevArray`; any implicit conversion to the host (``__array__``, ``bool``, ``float``,
iteration) raises. The explicit transfers are logged (``FakeXP.asarray`` of a host array =
host->device; ``to_host()`` / ``FakeXP.asnumpy`` = device->host, what :func:`l2p.engine.device_array.to_host`
calls). A DevArray shows a ``__cuda_array_interface__`` (pointing at host memory: only its shape and
dtype are read), so :class:`FakeDeviceEngine` goes through ``Engine.run_device``'s validation and
computes with a host engine on the wrapped arrays (its "kernel").
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import numpy as np

from l2p.engine.base import Engine
from l2p.engine.device_array import ArrayMeta


class HostTransfer(AssertionError):
    """An implicit device->host transfer (or sync) happened."""


def _raw(x: Any) -> Any:
    return x.a if isinstance(x, DevArray) else x


class DevArray:
    """A "device" array: numpy semantics, no implicit way back to the host."""

    __array_ufunc__ = None  # numpy defers to our reflected operators instead of converting us

    def __init__(self, a: np.ndarray, log: list[tuple[str, Any]]) -> None:
        self.a, self.log = a, log

    def _new(self, a: np.ndarray) -> DevArray:
        return DevArray(a, self.log)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.a.shape, "typestr": self.a.dtype.str, "data": (self.a.ctypes.data, False),
                "strides": None, "version": 3}

    def to_host(self) -> np.ndarray:
        """The explicit device->host copy (logged)."""
        self.log.append(("d2h", self.a.shape))
        return self.a.copy()

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    ndim = property(lambda self: self.a.ndim)

    def __len__(self) -> int:
        return len(self.a)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise HostTransfer("implicit device->host copy (np.asarray of a device array)")

    def _host(self, *args: Any) -> Any:
        raise HostTransfer("implicit device->host sync (bool/float/int/iter of a device array)")

    __bool__ = __float__ = __int__ = __index__ = __iter__ = tolist = item = _host

    def __getitem__(self, key: Any) -> DevArray:
        return self._new(self.a[_raw(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        if not isinstance(value, DevArray):
            raise HostTransfer("host value written into a device array inside the loop")
        self.a[key] = value.a

    def astype(self, dtype: Any, copy: bool = True) -> DevArray:
        return self._new(self.a.astype(dtype, copy=copy))

    def copy(self) -> DevArray:
        return self._new(self.a.copy())

    def all(self) -> DevArray:
        return self._new(np.asarray(self.a.all()))

    def max(self) -> DevArray:
        return self._new(np.asarray(self.a.max()))

    def clip(self, lo: float, hi: float) -> DevArray:
        return self._new(self.a.clip(lo, hi))


def _binary(op: str) -> Any:
    def f(self: DevArray, other: Any) -> DevArray:
        if isinstance(other, np.ndarray) and other.ndim:
            raise HostTransfer(f"host array operand of {op} on a device array")
        return self._new(getattr(self.a, op)(_raw(other)))

    return f


for _op in ("add", "sub", "mul", "truediv", "pow"):
    setattr(DevArray, f"__{_op}__", _binary(f"__{_op}__"))
    setattr(DevArray, f"__r{_op}__", _binary(f"__r{_op}__"))
for _op in ("lt", "le", "gt", "ge"):
    setattr(DevArray, f"__{_op}__", _binary(f"__{_op}__"))
DevArray.__neg__ = lambda self: self._new(-self.a)  # type: ignore[attr-defined]
DevArray.__invert__ = lambda self: self._new(~self.a)  # type: ignore[attr-defined]


class FakeXP:
    """A cupy look-alike over numpy that logs transfers as ``("h2d"|"d2h", shape)`` in ``log``."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log
        self.cuda = SimpleNamespace(Device=lambda i: nullcontext())

    def asarray(self, x: Any, dtype: Any = None) -> DevArray:
        if isinstance(x, DevArray):
            return x if dtype is None else x.astype(dtype)
        a = np.array(x, dtype=dtype, copy=True)
        self.log.append(("h2d", a.shape))
        return DevArray(a, self.log)

    def asnumpy(self, x: DevArray) -> np.ndarray:
        return x.to_host()

    def zeros(self, shape: Any, dtype: Any = float) -> DevArray:
        return DevArray(np.zeros(shape, dtype), self.log)

    def ones(self, shape: Any, dtype: Any = float) -> DevArray:
        return DevArray(np.ones(shape, dtype), self.log)

    def isfinite(self, x: DevArray) -> DevArray:
        return x._new(np.isfinite(x.a))

    def abs(self, x: DevArray) -> DevArray:
        return x._new(np.abs(x.a))

    def concatenate(self, xs: Any) -> DevArray:
        return DevArray(np.concatenate([_raw(x) for x in xs]), self.log)


class FakeDeviceEngine(Engine):
    """``run_device`` on DevArrays only; the "kernel" is ``inner.run`` on the wrapped arrays."""

    backend = "fake-cuda"
    device_io = True

    def __init__(self, inner: Engine, log: list[tuple[str, Any]]) -> None:
        super().__init__(inner.name, inner.spec)
        self.inner, self.log = inner, log

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError(f"{self.name}: host run() on a device engine")

    def _run_device(self, feed: Mapping[str, Any], metas: Mapping[str, ArrayMeta],
                    dims: Mapping[str, int] | None) -> dict[str, Any]:
        hosts = {k: type(v).__name__ for k, v in feed.items() if not isinstance(v, DevArray)}
        assert not hosts, f"{self.name}: other device arrays {hosts} given to run_device"
        self.log.append(("run", self.name))
        out = self.inner.run({k: v.a for k, v in feed.items()}, check=False)
        return {k: DevArray(np.array(v, copy=True), self.log) for k, v in out.items()}
