"""One registry of engine backends, chosen by name; a backend's module is imported on first use.

:func:`open_engine` is the only way the rest of l2p makes an engine: it checks the backend name,
the backend's options (:meth:`Engine.options`) and the device before the backend builds anything.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..errors import InputError
from ..spec import IOSpec
from .base import Engine
from .device_array import device_index

#: backend name -> (module, Engine subclass)
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("l2p.engine.onnxruntime_backend", "OrtEngine"),
    "onnxruntime-cuda": ("l2p.engine.onnxruntime_backend", "OrtEngine"),
    "onnxruntime-tensorrt": ("l2p.engine.onnxruntime_backend", "OrtEngine"),
    "tensorrt": ("l2p.engine.tensorrt_backend", "TrtEngine"),
}


def engine_class(backend: str) -> type[Engine]:
    """The :class:`Engine` subclass of ``backend`` (imports its module)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; choose one of {sorted(BACKENDS)}")
    module, name = BACKENDS[backend]
    cls: type[Engine] = getattr(importlib.import_module(module), name)
    return cls


def device_backends() -> list[str]:
    """The backends whose engines keep their I/O on a CUDA device (``Engine.run_device``)."""
    return [b for b in BACKENDS if engine_class(b).supports_device_io(b)]


def open_engine(backend: str, source: str | os.PathLike[str] | bytes, spec: IOSpec, *, name: str = "graph",
                device: str = "cpu", **options: Any) -> Engine:
    """An :class:`Engine` for the graph ``source`` on ``backend``.

    Args:
        backend: a name in :data:`BACKENDS`.
        source: the ``.onnx`` file, or serialized model bytes (ONNX Runtime backends only).
        spec: the graph's I/O spec.
        name: used in messages (e.g. ``"transformer"``).
        device: where the engine's I/O lives: ``"cpu"`` (host arrays through ``run``; GPU backends
            then compute on CUDA device 0) or ``"cuda"``/``"cuda:N"`` (CUDA device N; ``run_device``
            takes its arrays, ``run`` still works).
        options: the backend's own options (``engine_class(backend).options()``), e.g. ``threads``
            (ONNX Runtime) or ``use_cuda_graph`` (TensorRT).

    Raises :class:`InputError` for an unknown backend, an option the backend does not take, or a
    CUDA device for a backend without device I/O.
    """
    cls = engine_class(backend)
    unknown = sorted(set(options) - set(cls.options()))
    if unknown:
        raise InputError(f"backend '{backend}' has no option {', '.join(unknown)}; "
                         f"its options are {', '.join(cls.options()) or 'none'}")
    if device_index(device) is not None and not cls.supports_device_io(backend):
        raise InputError(f"backend '{backend}' cannot keep arrays on the GPU; with device {device} choose one "
                         f"of {device_backends()}, or use device cpu")
    return cls(source, spec, name, backend=backend, device=device, **options)
