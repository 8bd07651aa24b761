"""ONNX Runtime backends: CPU, CUDA EP and TensorRT EP, one engine class.

``OrtEngine.run`` is the host :class:`Engine` contract (ONNX Runtime copies in and out). On a GPU
provider ``run_device`` binds device memory with ``io_binding`` so inputs and outputs stay on the
GPU:

- ``OrtValue`` inputs (e.g. from :meth:`OrtEngine.to_device`) -> ``OrtValue`` outputs on cuda;
- cupy inputs (bound by pointer, zero copies) -> cupy outputs (preallocated from the spec's
  output shapes, or ORT-allocated and wrapped when a shape cannot be derived).

A provider that cannot load is an error naming what is missing, never a silent CPU fallback
(onnxruntime itself would print a warning and fall back).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError, L2PError, MissingDependencyError
from ..failures import first_line
from ..spec import IOSpec
from .base import Engine
from .device_array import ArrayMeta, device_index, device_ptr, empty, import_cupy, is_cupy
from .ort_options import import_ort as _import_ort
from .ort_options import resolve_threads, session_options  # noqa: F401  (resolve_threads: re-exported)

#: backend name -> execution provider
PROVIDERS = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}
#: providers whose engines can keep their I/O on the GPU
DEVICE_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_EXTRA = {
    "CPUExecutionProvider": "base install",
    "CUDAExecutionProvider": "gpu",
    "TensorrtExecutionProvider": "tensorrt",
}
#: OrtValue.data_type() -> numpy dtype name
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool",
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


def session_providers(provider: str, available: Sequence[str]) -> list[str]:
    """Check ``provider`` is usable; return the provider list to create the session with.

    The TensorRT EP gets the CUDA EP behind it (for nodes TensorRT does not take) when available.
    """
    check_provider(provider, available)
    if provider == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
        return [provider, "CUDAExecutionProvider"]
    return [provider]


class OrtEngine(Engine):
    """An ONNX graph run by ONNX Runtime on one execution provider.

    Args:
        source: the ``.onnx`` file (external data next to it), or serialized model bytes.
        spec: its I/O spec.
        name: used in messages.
        backend: ``onnxruntime`` (CPU), ``onnxruntime-cuda`` or ``onnxruntime-tensorrt``.
        device: ``cpu`` (host I/O; a GPU provider then runs on CUDA device 0) or ``cuda[:N]``
            (the CUDA device the GPU provider runs on and ``run_device`` binds).
        threads: intra-op threads (default: all cores, or ``$L2P_THREADS``).
        provider_options: extra options for the execution provider.
        spinning: let idle intra-op workers busy-wait (the transformer); ``False`` for engines
            that run between the transformer's calls (see :mod:`l2p.engine.ort_options`).
    """

    device_inputs = "OrtValues (engine.to_device(array)) or cupy arrays"

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes,
        spec: IOSpec,
        name: str = "graph",
        *,
        backend: str = "onnxruntime",
        device: str = "cpu",
        threads: int | None = None,
        provider_options: Mapping[str, Any] | None = None,
        spinning: bool = True,
    ) -> None:
        super().__init__(name, spec)
        if backend not in PROVIDERS:
            raise InputError(f"OrtEngine runs the backends {sorted(PROVIDERS)}, not '{backend}'")
        provider = PROVIDERS[backend]
        self.backend = backend
        self.device_io = self.supports_device_io(backend)
        self.device_id = device_index(device) or 0
        self.device_type = "cuda"  # where run_device binds memory (tests switch it to "cpu")
        ort = _import_ort()
        providers = session_providers(provider, ort.get_available_providers())
        options = [dict(provider_options or {})] + [{} for _ in providers[1:]]
        if self.device_io:
            options = [{"device_id": self.device_id, **o} for o in options]
        model = source if isinstance(source, bytes) else str(Path(source))
        try:
            self.session = ort.InferenceSession(model, sess_options=session_options(threads, spinning=spinning),
                                                providers=providers,
                                                provider_options=options)
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
                "fall back silently: check the CUDA/cuDNN/TensorRT libraries"
            )
        self._ortvalue = ort.OrtValue
        self._outputs = [o.name for o in self.session.get_outputs()]

    @classmethod
    def supports_device_io(cls, backend: str) -> bool:
        return PROVIDERS.get(backend) in DEVICE_PROVIDERS

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self._outputs, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        except Exception as e:
            if not type(e).__module__.startswith("onnxruntime"):
                raise
            raise ArtifactError(f"the {self.name} engine ({self.backend}) failed in ONNX Runtime: {type(e).__name__}: "
                                f"{first_line(e)}; the graph does not accept the inputs its I/O spec promises or is "
                                "damaged: re-export the bundle (or re-calibrate the predictor)") from None
        return dict(zip(self._outputs, outs))

    def to_device(self, array: np.ndarray) -> Any:
        """Copy a host array to an ``OrtValue`` on this engine's GPU."""
        return self._ortvalue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device_type, self.device_id)

    def _device_meta(self, name: str, x: Any) -> ArrayMeta:
        if isinstance(x, self._ortvalue):
            return ArrayMeta(tuple(x.shape()), ORT_DTYPES.get(x.data_type(), x.data_type()))
        return super()._device_meta(name, x)

    def _run_device(self, feed: Mapping[str, Any], metas: Mapping[str, ArrayMeta],
                    dims: Mapping[str, int] | None) -> dict[str, Any]:
        """Bind inputs and outputs on the device (see the module docstring for the types)."""
        like = next((x for x in feed.values() if is_cupy(x)), None)
        binding = self.session.io_binding()
        for n, x in feed.items():
            if isinstance(x, self._ortvalue):
                binding.bind_ortvalue_input(n, x)
            else:
                binding.bind_input(n, self.device_type, self.device_id, np.dtype(metas[n].dtype).type,
                                   list(metas[n].shape), device_ptr(x))
        outs: dict[str, Any] = {}
        for t in self.spec.outputs:
            if like is not None and dims is not None and t.dtype != "bfloat16":
                try:
                    shape = t.concrete(dims)
                except InputError:  # an output dim that no input carries: let ORT allocate
                    pass
                else:
                    outs[t.name] = empty(shape, t.dtype, like)
                    binding.bind_output(t.name, self.device_type, self.device_id, np.dtype(t.dtype).type,
                                        list(shape), device_ptr(outs[t.name]))
                    continue
            binding.bind_output(t.name, self.device_type, self.device_id)
        if like is not None:
            import_cupy().cuda.get_current_stream().synchronize()  # inputs written by cupy are ready
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        for t, value in zip(self.spec.outputs, binding.get_outputs()):
            if t.name not in outs:
                outs[t.name] = _wrap_cupy(value) if like is not None else value
        return outs


def _wrap_cupy(value: Any) -> Any:
    """View an ORT-allocated cuda ``OrtValue`` as a cupy array (keeps the OrtValue alive)."""
    cp = import_cupy()
    dtype = np.dtype(ORT_DTYPES[value.data_type()])
    shape = tuple(value.shape())
    nbytes = int(np.prod(shape)) * dtype.itemsize
    mem = cp.cuda.UnownedMemory(value.data_ptr(), nbytes, value)
    return cp.ndarray(shape, dtype=dtype, memptr=cp.cuda.MemoryPointer(mem, 0))
