"""Native TensorRT engine: name-based I/O, device buffers, optional CUDA-graph replay. No torch.

``TrtEngine.run`` takes and returns numpy arrays (the :class:`Engine` contract);
``TrtEngine.run_device`` takes and returns device arrays (cupy, or any object with
``__cuda_array_interface__``) without host copies, ordered against the caller's cupy stream.

Plans come from the cache that ``l2p build`` fills (:mod:`l2p.engine.trt_build`, keys and cache
in :mod:`l2p.engine.trt_plans`); a plan built for another TensorRT version, GPU, graph, precision
or profile is refused, never run.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, bundle_of
from ..errors import ArtifactError, InputError, L2PError
from ..precision import Precision
from ..spec import IOSpec
from .base import Engine
from .device_array import ArrayMeta, current_stream, device_index, device_ptr, empty
from .trt_build import build_plan_bytes, import_tensorrt, trt_logger
from .trt_plans import (
    PlanFields,
    build_mode,
    declared_precision,
    graph_name_of,
    graph_sha256,
    load_plan,
    max_plan_bytes,
    plans_dir,
    read_sidecar,
    select_plan,
)
from .trt_profiles import derive_profiles, fill_dims


class TrtEngine(Engine):
    """A TensorRT engine for one ONNX graph.

    Where the plan comes from, in order:

    - ``plan_path``: that plan file (its sidecar is checked against this machine and graph);
    - ``min_dims``/``opt_dims``/``max_dims``: built now, in memory, for that profile (not cached);
    - else the newest matching plan in ``plan_dir`` (default ``BUNDLE/plans/<graph>`` when the
      ONNX file lies in a bundle), as made by ``l2p build``.

    Args:
        source: the graph's ``.onnx`` file.
        spec: its I/O spec.
        name: used in messages.
        backend: ``tensorrt`` (the registry name).
        device: ``cuda[:N]``: CUDA device N; ``cpu``: host I/O through ``run`` on device 0.
        bundle: the opened bundle that holds the graph (graph hash from its manifest, plan cache
            ``BUNDLE/plans/<graph>``); default: the bundle whose folder holds ``source``, if any.
        plan_dir: where to look for cached plans instead.
        precision: plan precision to require (None: any cached plan / the graph's own precision).
        use_cuda_graph: capture one CUDA graph per input-shape combination and replay it.
    """

    backend = "tensorrt"
    device_io = True

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes,
        spec: IOSpec,
        name: str = "graph",
        *,
        backend: str = "tensorrt",
        device: str = "cpu",
        bundle: Bundle | None = None,
        plan_dir: str | os.PathLike[str] | None = None,
        precision: Precision | str | None = None,
        plan_path: str | os.PathLike[str] | None = None,
        min_dims: Mapping[str, int] | None = None,
        opt_dims: Mapping[str, int] | None = None,
        max_dims: Mapping[str, int] | None = None,
        use_cuda_graph: bool = False,
    ) -> None:
        super().__init__(name, spec)
        if isinstance(source, bytes):
            raise InputError(f"{name}: the {backend} backend builds from an .onnx file, not in-memory model bytes; "
                             "save the graph or use an onnxruntime backend")
        trt = import_tensorrt()
        from . import cuda

        self._cuda = cuda
        ordinal = device_index(device) or 0
        cuda.set_device(ordinal)
        self.trt_version, self.compute_capability = str(trt.__version__), cuda.compute_capability(ordinal)
        onnx_path = Path(source).resolve()
        bundle = bundle if bundle is not None else bundle_of(onnx_path)
        root = bundle.root.resolve() if bundle is not None else None
        manifest = bundle.manifest if bundle is not None else {}
        onnx_sha = graph_sha256(onnx_path, root, manifest.get("files"))
        self.plan_path: Path | None = None
        if min_dims or opt_dims or max_dims:
            lo, mid, hi = fill_dims(dict(min_dims or {}), dict(opt_dims or {}), dict(max_dims or {}))
            self.profiles = tuple(derive_profiles(spec, lo, mid, hi))
            graph_prec = declared_precision(onnx_path, manifest)
            self.precision = Precision.parse(precision) if precision is not None else graph_prec
            mode = build_mode(self.precision, graph_prec, self.trt_version)
            plan: bytes | bytearray | memoryview = build_plan_bytes(onnx_path, self.profiles, mode)[0]
        else:
            if plan_path is not None:
                fields = PlanFields.from_dict(read_sidecar(Path(plan_path).with_suffix(".json")))
            else:
                if plan_dir is None:
                    if bundle is None:
                        raise InputError(
                            f"{name}: {onnx_path} is not inside a bundle; pass plan_dir=, plan_path= or "
                            "min/opt/max dims to build a plan in memory"
                        )
                    plan_dir = plans_dir(bundle.root, graph_name_of(bundle, onnx_path) or name)
                plan_path, fields = select_plan(plan_dir, onnx_sha, self.trt_version,
                                                self.compute_capability, precision)
            self.precision = Precision.parse(precision if precision is not None else fields.precision)
            current = PlanFields(onnx_sha, self.trt_version, self.compute_capability, self.precision, fields.profiles)
            # refuses foreign, tampered, oversized or linked plans before deserializing
            plan = load_plan(plan_path, current, max_bytes=max_plan_bytes(onnx_path))
            self.plan_path, self.profiles = Path(plan_path), fields.profiles
        self._load(trt, plan)
        self.use_cuda_graph = use_cuda_graph
        self.stream = cuda.Stream()
        self._event = cuda.Event()
        self._buffers: dict[str, Any] = {}
        self._graphs: dict[Any, Any] = {}

    def _load(self, trt: Any, plan: bytes | bytearray | memoryview) -> None:
        self.runtime = trt.Runtime(trt_logger(trt))
        if hasattr(self.runtime, "engine_host_code_allowed"):  # TensorRT >= 10: never run code shipped in a plan
            self.runtime.engine_host_code_allowed = False
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ArtifactError(f"{self.name}: TensorRT could not deserialize the plan; "
                                "rebuild it with: l2p build BUNDLE")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_in[n]]
        self._outputs = [n for n in self.spec.output_names if n in names]
        n_out = len(names) - len(self._inputs)
        if sorted(self._inputs) != sorted(self.spec.input_names) or len(self._outputs) != n_out:
            raise ArtifactError(f"{self.name}: plan tensors {names} do not match the io spec ({self.spec.describe()})")
        self._dtypes: dict[str, np.dtype] = {}
        for n in names:
            try:
                self._dtypes[n] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
            except TypeError:
                raise ArtifactError(f"{self.name}: tensor '{n}' has TensorRT type {self.engine.get_tensor_dtype(n)} "
                                    "with no numpy equivalent; export graphs with fp32/fp16 I/O") from None
        for t in self.spec.inputs:
            if str(self._dtypes[t.name]) != t.dtype:
                raise ArtifactError(
                    f"{self.name}: plan input '{t.name}' is {self._dtypes[t.name]}, spec says {t.dtype}"
                )
        self._ranges = {n: [tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(n, 0)]
                        for n in self._inputs}

    # -- shapes, buffers, execution ------------------------------------------------------------

    def accepts(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """Whether every shape lies inside the plan's optimisation profile."""
        return all(n in self._ranges and len(s) == len(self._ranges[n][0])
                   and all(a <= v <= b for v, a, b in zip(s, self._ranges[n][0], self._ranges[n][2]))
                   for n, s in shapes.items())

    def _set_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Set input shapes (checked against the profile); return the output shapes."""
        for n, s in shapes.items():
            lo, _, hi = self._ranges[n]
            if any(not a <= v <= b for v, a, b in zip(s, lo, hi)):
                raise InputError(
                    f"{self.name} engine: input '{n}' has shape {list(s)}, outside the plan's profile "
                    f"(min {list(lo)}, max {list(hi)}); rebuild with wider dims: l2p build BUNDLE --min ... --max ..."
                )
            if tuple(self.context.get_tensor_shape(n)) != tuple(s) and not self.context.set_input_shape(n, tuple(s)):
                raise InputError(f"{self.name} engine: TensorRT refused shape {list(s)} for input '{n}'")
        out = {n: tuple(int(d) for d in self.context.get_tensor_shape(n)) for n in self._outputs}
        if any(d < 0 for s in out.values() for d in s):
            raise L2PError(f"{self.name} engine: outputs {out} have data-dependent shapes, which l2p does not support")
        return out

    def _nbytes(self, name: str, shape: tuple[int, ...]) -> int:
        return math.prod(shape) * self._dtypes[name].itemsize

    def _owned(self, name: str, nbytes: int) -> int:
        """Pointer of this engine's buffer for ``name``, grown as needed (growing drops CUDA graphs)."""
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = self._cuda.DeviceBuffer()
        if buf.ensure(nbytes):
            self._drop_graphs()
        return int(buf.ptr)

    def _bind(self, ptrs: Mapping[str, int]) -> None:
        for n, p in ptrs.items():
            if not self.context.set_tensor_address(n, p):
                raise L2PError(f"{self.name} engine: TensorRT refused the address of tensor '{n}'")

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise L2PError(f"{self.name} engine: TensorRT execute_async_v3 failed; see the TensorRT log above")

    def _execute(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Run once; with CUDA graphs, replay the graph for these shapes or run then capture one."""
        if not self.use_cuda_graph:
            self._enqueue()
            return
        key = tuple(sorted((n, tuple(s)) for n, s in shapes.items()))
        graph = self._graphs.get(key)
        if graph is not None:
            graph.launch(self.stream.ptr)
            return
        self._enqueue()  # the real run; it also flushes deferred shape updates before capture
        graph = self._cuda.CudaGraph()
        try:
            graph.capture(self.stream.ptr, self._enqueue)
        except L2PError as e:
            warnings.warn(f"{self.name} engine: CUDA graph capture failed ({e}); running without CUDA graphs",
                          stacklevel=3)
            self.use_cuda_graph = False
            return
        self._graphs[key] = graph

    def _drop_graphs(self) -> None:
        for g in self._graphs.values():
            g.close()
        self._graphs.clear()

    # -- public ----------------------------------------------------------------------------------

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = self.stream.ptr
        hosts = {n: np.ascontiguousarray(feed[n]) for n in self._inputs}  # alive until synchronize
        shapes = {n: tuple(a.shape) for n, a in hosts.items()}
        out_shapes = self._set_shapes(shapes)
        for n, a in hosts.items():
            self._cuda.memcpy_htod(self._owned(n, a.nbytes), a, s)
        outs = {n: np.empty(shape, self._dtypes[n]) for n, shape in out_shapes.items()}
        for n, o in outs.items():
            self._owned(n, o.nbytes)
        self._bind({n: b.ptr for n, b in self._buffers.items()})
        self._execute(shapes)
        for n, o in outs.items():
            self._cuda.memcpy_dtoh(o, self._buffers[n].ptr, s)
        self.stream.synchronize()
        return outs

    def _run_device(self, feed: Mapping[str, Any], metas: Mapping[str, ArrayMeta],
                    dims: Mapping[str, int] | None) -> dict[str, Any]:
        """Run on device arrays (cupy or ``__cuda_array_interface__``); returns new device arrays.

        Outputs are cupy arrays when the inputs are cupy, else :class:`l2p.engine.cuda.DeviceArray`.
        Work is ordered after the caller's current cupy stream and before its later work; nothing
        is copied to the host. With ``use_cuda_graph`` the inputs/outputs go through the engine's
        fixed buffers (device-to-device copies) so the captured addresses stay valid.
        """
        like = feed[self._inputs[0]]
        caller, s = current_stream(like), self.stream.ptr
        self._cuda.stream_order(caller, s, self._event)  # wait for whoever produced the inputs
        shapes = {n: metas[n].shape for n in self._inputs}
        out_shapes = self._set_shapes(shapes)
        outs = {n: empty(shape, self._dtypes[n], like) for n, shape in out_shapes.items()}
        if self.use_cuda_graph:
            for n in self._inputs:
                nbytes = self._nbytes(n, shapes[n])
                self._cuda.memcpy_dtod(self._owned(n, nbytes), device_ptr(feed[n]), nbytes, s)
            for n, shape in out_shapes.items():
                self._owned(n, self._nbytes(n, shape))
            self._bind({n: b.ptr for n, b in self._buffers.items()})
            self._execute(shapes)
            for n, shape in out_shapes.items():
                self._cuda.memcpy_dtod(device_ptr(outs[n]), self._buffers[n].ptr, self._nbytes(n, shape), s)
        else:
            self._bind({**{n: device_ptr(feed[n]) for n in self._inputs},
                        **{n: device_ptr(o) for n, o in outs.items()}})
            self._execute(shapes)
        self._cuda.stream_order(s, caller, self._event)  # the caller's later work waits for us
        return outs

    def close(self) -> None:
        """Free device buffers, CUDA graphs, the stream and the TensorRT objects."""
        if getattr(self, "stream", None) is None:
            return
        self.stream.synchronize()
        self._drop_graphs()
        for b in self._buffers.values():
            b.free()
        self._buffers.clear()
        self._event.close()
        self.stream.close()
        self.stream = None  # type: ignore[assignment]
        del self.context, self.engine, self.runtime
