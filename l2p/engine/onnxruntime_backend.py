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

from ..errors import InputError, L2PError, MissingDependencyError, missing_extra
from ..spec import IOSpec
from .base import Engine

PROVIDERS = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}
MAX_THREADS_PER_CORE = 4  # --threads above this many per core is refused
_EXTRA = {
    "CPUExecutionProvider": "base install",
    "CUDAExecutionProvider": "gpu",
    "TensorrtExecutionProvider": "tensorrt",
}


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_extra("onnxruntime", "gpu", "the onnxruntime backend") from None
    return ort


def session_options(threads: int | None = None, deterministic: bool = True) -> Any:
    """Session options: full graph optimisation; fixed thread count for reproducible timing."""
    ort = _import_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads is None:
        env = os.environ.get("L2P_THREADS", "0").strip()
        if not env.isdigit():
            raise InputError(f"L2P_THREADS={env!r} is not a thread count; set a positive integer or unset it")
        threads = int(env) or (os.cpu_count() or 1)
    limit = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= threads <= limit:  # onnxruntime would start them all: thousands exhaust the memory
        raise InputError(f"--threads {threads} is out of range; use 1..{limit} ({os.cpu_count()} cores here)")
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if deterministic:
        so.use_deterministic_compute = True
    return so


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
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str] | bytes,
        spec: IOSpec,
        name: str = "graph",
        provider: str = "CPUExecutionProvider",
        threads: int | None = None,
        provider_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, spec)
        ort = _import_ort()
        check_provider(provider, ort.get_available_providers())
        self.backend = {v: k for k, v in PROVIDERS.items()}.get(provider, provider)
        opts = [dict(provider_options or {})]
        model = onnx_path if isinstance(onnx_path, bytes) else str(Path(onnx_path))
        so = session_options(threads)
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
