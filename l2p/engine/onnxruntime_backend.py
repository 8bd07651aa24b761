"""ONNX Runtime backends: CPU, CUDA EP and TensorRT EP.

A provider that cannot load is an error naming what is missing, never a silent CPU fallback
(onnxruntime itself would print a warning and fall back).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import L2PError, MissingDependencyError
from ..spec import IOSpec
from .base import Engine
from .ort_options import import_ort as _import_ort
from .ort_options import session_options  # noqa: F401  (re-exported for ort_device)

PROVIDERS = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}
_EXTRA = {
    "CPUExecutionProvider": "base install",
    "CUDAExecutionProvider": "gpu",
    "TensorrtExecutionProvider": "tensorrt",
}


def check_provider(provider: str, available: Sequence[str]) -> None:
    """Raise a clear error if ``provider`` is not among onnxruntime's available providers."""
    if provider not in available:
        extra = _EXTRA.get(provider, "gpu")
        raise MissingDependencyError(
            f"onnxruntime provider {provider} is not available in this install (available: "
            f"{list(available)}); install the matching onnxruntime build: pip install 'l2p[{extra}]' "
            "(onnxruntime-gpu also needs the CUDA/cuDNN libraries)"
        )


class OrtEngine(Engine):
    """An ONNX graph run by ONNX Runtime on one execution provider.

    Args:
        onnx_path: the ``.onnx`` file (external data next to it), or serialized model bytes.
        spec: its I/O spec.
        provider: ``CPUExecutionProvider`` (default), ``CUDAExecutionProvider`` or
            ``TensorrtExecutionProvider``.
        threads: intra-op threads (default: all cores, or ``$L2P_THREADS``).
        spinning: let idle intra-op workers busy-wait (the transformer); ``False`` for engines
            that run between the transformer's calls (see :mod:`l2p.engine.ort_options`).
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str] | bytes,
        spec: IOSpec,
        name: str = "graph",
        provider: str = "CPUExecutionProvider",
        threads: int | None = None,
        provider_options: Mapping[str, Any] | None = None,
        spinning: bool = True,
    ) -> None:
        super().__init__(name, spec)
        ort = _import_ort()
        check_provider(provider, ort.get_available_providers())
        self.backend = {v: k for k, v in PROVIDERS.items()}.get(provider, provider)
        opts = [dict(provider_options or {})]
        model = onnx_path if isinstance(onnx_path, bytes) else str(Path(onnx_path))
        so = session_options(threads, spinning=spinning)
        try:
            self.session = ort.InferenceSession(model, sess_options=so, providers=[provider], provider_options=opts)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = ""
            if "NOT_IMPLEMENTED" in first and provider == "CPUExecutionProvider":
                hint = " (ONNX Runtime CPU lacks kernels for this graph; bf16 graphs need a GPU backend: "\
                       "export with --precision fp32 for CPU)"
            raise L2PError(f"onnxruntime could not load the {name} graph: {first}{hint}") from None
        used = self.session.get_providers()
        if provider not in used:
            raise MissingDependencyError(
                f"onnxruntime could not load {provider} for {name} (it loaded {used}); refusing to "
                "fall back silently: check the CUDA/TensorRT installation"
            )
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self._outputs, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        return dict(zip(self._outputs, outs))
