"""ONNX Runtime on the GPU with I/O bound on the device (CUDA EP or TensorRT EP).

``OrtDeviceEngine.run`` is the host :class:`Engine` contract (ONNX Runtime copies in and out);
``run_device`` binds device memory with ``io_binding`` so inputs and outputs stay on the GPU:

- ``OrtValue`` inputs (e.g. from :meth:`OrtDeviceEngine.to_device`) -> ``OrtValue`` outputs on cuda;
- cupy inputs (bound by pointer, zero copies) -> cupy outputs (preallocated from the spec's
  output shapes, or ORT-allocated and wrapped when a shape cannot be derived).

A GPU provider that is missing is a :class:`~l2p.errors.MissingDependencyError` naming the
extra, never a silent CPU fallback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError, MissingDependencyError
from ..spec import IOSpec
from .base import Engine
from .device_array import device_meta, device_ptr, empty, import_cupy, is_cupy, is_device_array, to_host
from .onnxruntime_backend import _import_ort, check_provider, session_options

DEVICE_PROVIDERS = {
    "CUDAExecutionProvider": "onnxruntime-cuda",
    "TensorrtExecutionProvider": "onnxruntime-tensorrt",
}
#: OrtValue.data_type() -> numpy dtype name
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool",
}


class _Meta(NamedTuple):
    shape: tuple[int, ...]
    dtype: str


def check_device_provider(provider: str, available: Sequence[str]) -> list[str]:
    """Check a GPU provider is usable; return the provider list to create the session with.

    The TensorRT EP gets the CUDA EP behind it (for nodes TensorRT does not take) when available.
    """
    if provider not in DEVICE_PROVIDERS:
        raise InputError(
            f"OrtDeviceEngine runs on {sorted(DEVICE_PROVIDERS)}, not {provider}; use OrtEngine for the CPU"
        )
    check_provider(provider, available)
    if provider == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
        return [provider, "CUDAExecutionProvider"]
    return [provider]


class OrtDeviceEngine(Engine):
    """An ONNX graph on ONNX Runtime's CUDA or TensorRT execution provider.

    Args:
        onnx_path: the ``.onnx`` file, or serialized model bytes (in-memory predictor graphs).
        spec: its I/O spec.
        provider: ``CUDAExecutionProvider`` (default) or ``TensorrtExecutionProvider``.
        device_id: CUDA device ordinal.
        provider_options: extra options for ``provider``.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str] | bytes,
        spec: IOSpec,
        name: str = "graph",
        provider: str = "CUDAExecutionProvider",
        device_id: int = 0,
        provider_options: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(name, spec)
        ort = _import_ort()
        providers = check_device_provider(provider, ort.get_available_providers())
        self.backend = DEVICE_PROVIDERS[provider]
        self.device_id = device_id
        self.device_type = "cuda"  # where run_device binds memory (tests switch it to "cpu")
        options = [{"device_id": device_id, **(provider_options or {})}]
        options += [{"device_id": device_id}] * (len(providers) - 1)
        model = onnx_path if isinstance(onnx_path, bytes) else str(Path(onnx_path))
        self.session = ort.InferenceSession(
            model, sess_options=session_options(threads), providers=providers,
            provider_options=options,
        )
        used = self.session.get_providers()
        if provider not in used:
            raise MissingDependencyError(
                f"onnxruntime could not load {provider} for {name} (it loaded {used}); refusing to fall "
                "back silently: check the CUDA/cuDNN/TensorRT libraries"
            )
        self._ortvalue = ort.OrtValue
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self._outputs, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        return dict(zip(self._outputs, outs))

    def to_device(self, array: np.ndarray) -> Any:
        """Copy a host array to an ``OrtValue`` on this engine's GPU."""
        return self._ortvalue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device_type, self.device_id)

    @staticmethod
    def to_host(x: Any) -> np.ndarray:
        """Copy an ``OrtValue``/cupy output to a numpy array."""
        return to_host(x)

    def run_device(self, feed: Mapping[str, Any], check: bool = True) -> dict[str, Any]:
        """Run with inputs and outputs on the device (see the module docstring for the types)."""
        metas: dict[str, _Meta] = {}
        for n, x in feed.items():
            if isinstance(x, self._ortvalue):
                metas[n] = _Meta(tuple(x.shape()), ORT_DTYPES.get(x.data_type(), x.data_type()))
            elif is_device_array(x):
                shape, dtype = device_meta(x, f"{self.name} input '{n}'")
                metas[n] = _Meta(shape, str(dtype))
            else:
                raise InputError(
                    f"{self.name} engine: run_device input '{n}' is a {type(x).__name__}; pass OrtValues "
                    "(engine.to_device(array)) or cupy arrays, or use run() for host arrays"
                )
        dims = self.spec.check_feed(metas, what=f"{self.name} engine") if check else None
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
