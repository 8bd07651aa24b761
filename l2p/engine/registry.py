"""Backends chosen by name from a lazy registry (importing a backend happens on first use)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..errors import InputError
from ..spec import IOSpec
from .base import Engine

#: backend name -> (module, factory function)
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("l2p.engine.onnxruntime_backend", "OrtEngine"),
    "onnxruntime-cuda": ("l2p.engine.onnxruntime_backend", "OrtEngine"),
    "onnxruntime-tensorrt": ("l2p.engine.onnxruntime_backend", "OrtEngine"),
    "tensorrt": ("l2p.engine.tensorrt_backend", "TrtEngine"),
}


def load_engine(
    backend: str, onnx_path: str | os.PathLike[str], spec: IOSpec, name: str = "graph", **options: Any
) -> Engine:
    """Create an :class:`Engine` for ``onnx_path`` on ``backend`` (see :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; choose one of {sorted(BACKENDS)}")
    module, factory = BACKENDS[backend]
    cls = getattr(importlib.import_module(module), factory)
    if backend.startswith("onnxruntime"):
        from .onnxruntime_backend import PROVIDERS

        options.setdefault("provider", PROVIDERS[backend])
    engine: Engine = cls(onnx_path, spec, name=name, **options)
    return engine


#: backends whose engines keep their I/O on the GPU (``Engine.run_device``): name -> (module, class)
DEVICE_BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime-cuda": ("l2p.engine.ort_device", "OrtDeviceEngine"),
    "onnxruntime-tensorrt": ("l2p.engine.ort_device", "OrtDeviceEngine"),
    "tensorrt": ("l2p.engine.tensorrt_backend", "TrtEngine"),
}


def load_device_engine(
    backend: str, onnx_path: str | os.PathLike[str] | bytes, spec: IOSpec, name: str = "graph",
    device_id: int = 0, **options: Any
) -> Engine:
    """An engine on CUDA device ``device_id`` whose ``run_device`` takes and returns device arrays.

    ``onnx_path`` may be serialized model bytes for the ONNX Runtime backends (in-memory predictors).
    """
    if backend not in DEVICE_BACKENDS:
        raise InputError(f"backend '{backend}' cannot keep arrays on the GPU; with a cuda device choose one "
                         f"of {sorted(DEVICE_BACKENDS)}")
    module, factory = DEVICE_BACKENDS[backend]
    cls = getattr(importlib.import_module(module), factory)
    if backend == "tensorrt":
        options["device"] = device_id
    else:
        from .onnxruntime_backend import PROVIDERS

        options.setdefault("provider", PROVIDERS[backend])
        options["device_id"] = device_id
    engine: Engine = cls(onnx_path, spec, name=name, **options)
    return engine
