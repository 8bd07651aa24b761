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
