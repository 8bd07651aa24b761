"""One small runtime interface.

``Engine.run`` validates a host feed against the :class:`~l2p.spec.IOSpec` once, then calls the
backend's ``_run``; ``Engine.run_device`` validates a feed of device arrays the same way (from
their metadata, nothing is copied), then calls the backend's ``_run_device``. The sampling loop
only ever sees ``Engine``.

A backend is a subclass whose constructor is ``(source, spec, name, *, backend, device,
**options)``: its options are the other keyword-only parameters of that constructor
(:meth:`Engine.options`), which :func:`l2p.engine.registry.open_engine` checks before it builds
one. Backends that keep their I/O on a CUDA device set ``device_io`` and implement ``_run_device``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError, NumericalError
from ..spec import IOSpec
from .device_array import ArrayMeta, device_meta, is_device_array

#: constructor parameters every backend has; the rest of its keyword-only parameters are its options
COMMON_PARAMETERS = ("backend", "device")


class Engine(ABC):
    """A compiled graph with a fixed :class:`IOSpec`.

    Args:
        name: human-readable name used in messages (e.g. ``"transformer"``).
        spec: the graph's inputs and outputs.
    """

    backend: str = "abstract"
    #: True when ``run_device`` takes device arrays (the backend implements ``_run_device``)
    device_io: bool = False
    #: what ``run_device`` takes, for messages
    device_inputs: str = "cupy arrays (or any object with __cuda_array_interface__)"

    def __init__(self, name: str, spec: IOSpec) -> None:
        self.name = name
        self.spec = spec
        self.check_finite = False

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """This backend's options: the keyword-only constructor parameters besides ``backend``/``device``."""
        params = inspect.signature(cls.__init__).parameters.values()
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in COMMON_PARAMETERS)

    @classmethod
    def supports_device_io(cls, backend: str) -> bool:
        """Whether engines of this class opened as ``backend`` keep their I/O on a CUDA device."""
        return cls.device_io

    def run(self, feed: Mapping[str, np.ndarray], check: bool = True) -> dict[str, np.ndarray]:
        """Run the graph on host arrays; returns ``{output name: array}``.

        ``check=False`` skips feed validation (the loop validates the first call of a run only).
        """
        if check:
            self.spec.check_feed(feed, what=f"{self.name} engine")
        out = self._run(feed)
        if self.check_finite:
            for k, v in out.items():
                if not np.isfinite(v).all():
                    raise NumericalError(
                        f"{self.name} engine ({self.backend}) produced NaN/Inf in output '{k}'"
                    )
        return out

    def run_device(self, feed: Mapping[str, Any], check: bool = True) -> dict[str, Any]:
        """Run the graph on device arrays; returns device arrays, with no host copies.

        Reads each input's shape/dtype once (:meth:`_device_meta`), checks them against the spec
        unless ``check=False``, then calls ``_run_device``. Host-only engines raise InputError.
        """
        if not self.device_io:
            raise InputError(
                f"the {self.name} engine ({type(self).__name__}, backend {self.backend}) runs on host arrays "
                "only and cannot take device arrays; sample on the GPU with --backend tensorrt or "
                "onnxruntime-cuda and --device cuda, or on the CPU with --device cpu"
            )
        metas = {n: self._device_meta(n, x) for n, x in feed.items()}
        dims = self.spec.check_feed(metas, what=f"{self.name} engine") if check else None
        return self._run_device(feed, metas, dims)

    def _device_meta(self, name: str, x: Any) -> ArrayMeta:
        """Shape and dtype of the device input ``name`` (backends taking other device types extend it)."""
        if not is_device_array(x):
            raise InputError(
                f"{self.name} engine: run_device input '{name}' is a {type(x).__name__}; pass "
                f"{self.device_inputs}, or use run() for host arrays"
            )
        shape, dtype = device_meta(x, f"{self.name} input '{name}'")
        return ArrayMeta(shape, str(dtype))

    @abstractmethod
    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Backend-specific execution; ``feed`` is already validated."""

    def _run_device(self, feed: Mapping[str, Any], metas: Mapping[str, ArrayMeta],
                    dims: Mapping[str, int] | None) -> dict[str, Any]:
        """Backend-specific execution on device arrays (backends with ``device_io``).

        ``metas``: each input's shape/dtype; ``dims``: the symbolic dim values when the feed was
        checked, else None.
        """
        raise NotImplementedError(f"{type(self).__name__} sets device_io but does not implement _run_device")

    def accepts(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """Whether the engine can run inputs of these shapes (beyond the spec's own check): True
        unless the backend has fixed limits (a TensorRT plan's optimisation profile)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, backend={self.backend!r})"
