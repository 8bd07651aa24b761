"""The TensorRT build: a plan per bundle graph, made from the profiles and the plan cache of
:mod:`l2p.engine.trt_profiles` / :mod:`l2p.engine.trt_plans`. Needs TensorRT and a GPU (imported
on first use; a clear MissingDependencyError otherwise).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_bytes
from ..errors import ArtifactError, InputError, L2PError, missing_extra
from ..precision import Precision
from .trt_plans import (
    BuildMode,
    PlanFields,
    build_mode,
    declared_precision,
    graph_sha256,
    load_plan,
    max_plan_bytes,
    plans_dir,
    save_plan,
    sm,
)
from .trt_profiles import (
    DimsArg,
    ProfileShape,
    derive_profiles,
    dims_for_graph,
    fill_dims,
    input_dim_names,
    profiles_json,
)


def import_tensorrt(what: str = "the tensorrt backend") -> Any:
    """Import tensorrt or raise MissingDependencyError: ``pip install 'l2p[tensorrt]'``."""
    try:
        import tensorrt as trt
    except ImportError:
        raise missing_extra("tensorrt", "tensorrt", what) from None
    return trt


_LOGGER: Any = None


def trt_logger(trt: Any) -> Any:
    """One TensorRT logger per process (builder and runtime must share it)."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def current_env(device: int = 0) -> tuple[str, str]:
    """``(TensorRT version, compute capability)`` of this machine; needs tensorrt + CUDA."""
    trt = import_tensorrt()
    from . import cuda

    return str(trt.__version__), cuda.compute_capability(device)


def build_plan_bytes(
    onnx_path: str | os.PathLike[str], profiles: Sequence[ProfileShape], mode: BuildMode,
    timing_cache: bytes | None = None,
) -> tuple[memoryview, bytes]:
    """Build a serialized engine for ``onnx_path``; returns ``(plan buffer, timing cache bytes)``."""
    trt = import_tensorrt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if mode.strongly_typed and strongly is not None:  # accepted and ignored on TensorRT 11
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external data
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT could not parse {onnx_path}: {errors}")
    net_inputs = sorted(network.get_input(i).name for i in range(network.num_inputs))
    if net_inputs != sorted(p.name for p in profiles):
        raise ArtifactError(f"{onnx_path} has inputs {net_inputs}, its io spec says {sorted(p.name for p in profiles)}")
    config = builder.create_builder_config()
    for name in mode.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in mode.clear_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache or b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # cache from another GPU/version
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise L2PError(f"TensorRT failed to build {onnx_path}; see the TensorRT log above")
    return memoryview(plan), bytes(config.get_timing_cache().serialize())  # the view keeps the plan alive


def build_plans(
    bundle_path: str | os.PathLike[str],
    precision: Precision | str | None = None,
    min_dims: DimsArg = None,
    opt_dims: DimsArg = None,
    max_dims: DimsArg = None,
    timing_cache: str | os.PathLike[str] | None = None,
    graphs: Sequence[str] | None = None,
    progress: bool = True,
    force: bool = False,
    device: int = 0,
) -> dict[str, Path]:
    """Build (or reuse) a TensorRT plan for every graph of the bundle; returns ``{graph: plan path}``.

    Dims are global (``{"batch": 1}``), per graph (``{"transformer": {...}}``) or both; a missing
    ``min``/``max`` map falls back to ``opt`` (static profile). Idempotent: a plan whose key and
    sha256 still match is kept. ``timing_cache`` is loaded if present and saved (atomically)
    after each build. Needs TensorRT + a GPU (MissingDependencyError otherwise).
    """
    from ..bundle import open_bundle

    bundle = open_bundle(bundle_path)
    names = list(graphs) if graphs else list(bundle.graphs)
    unknown = [g for g in names if not bundle.has(g)]
    if unknown:
        raise InputError(f"bundle {bundle.root} has no graphs {unknown}; it has {sorted(bundle.graphs)}")
    profiles: dict[str, list[ProfileShape]] = {}
    used: set[str] = set()
    for g in names:
        lo, mid, hi = fill_dims(*(dims_for_graph(d, g) for d in (min_dims, opt_dims, max_dims)))
        profiles[g] = derive_profiles(bundle.spec(g), lo, mid, hi)
        used.update(input_dim_names(bundle.spec(g)))
    for d in (min_dims, opt_dims, max_dims):
        extra = [k for k, v in (d or {}).items() if not isinstance(v, Mapping) and k not in used]
        if extra:
            raise InputError(f"dims {extra} are not used by graphs {names} (they use {sorted(used)})")
        stray = [k for k, v in (d or {}).items() if isinstance(v, Mapping) and k not in names]
        if stray:
            raise InputError(f"per-graph dims for {stray}, but the graphs being built are {names}")
    graph_prec = {g: declared_precision(bundle.onnx_path(g), bundle.manifest) for g in names}
    trt_version, cc = current_env(device)
    modes = {g: build_mode(precision, graph_prec[g], trt_version) for g in names}  # refuse before building
    cache = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else None
    out: dict[str, Path] = {}
    for g in names:
        onnx_path = bundle.onnx_path(g)
        prec = Precision.parse(precision) if precision is not None else graph_prec[g]
        fields = PlanFields(graph_sha256(onnx_path, bundle.root, bundle.manifest.get("files")),
                            trt_version, cc, prec, tuple(profiles[g]))
        path = plans_dir(bundle.root, g) / f"{fields.key}.plan"
        if os.path.lexists(path) and not force:
            try:
                load_plan(path, fields, max_bytes=max_plan_bytes(onnx_path))
                _say(progress, f"{g}: plan up to date ({path})")
                out[g] = path
                continue
            except ArtifactError as e:
                _say(progress, f"{g}: rebuilding ({e})")
        _say(progress, f"{g}: building TensorRT {trt_version} plan for {sm(cc)}, {prec.value}, "
                       f"profile {profiles_json(profiles[g])} ...")
        t0 = time.perf_counter()
        plan, cache = build_plan_bytes(onnx_path, profiles[g], modes[g], cache)
        seconds = time.perf_counter() - t0
        out[g] = save_plan(plan_dir=path.parent, fields=fields, plan=plan, graph=g,
                           strongly_typed=modes[g].strongly_typed, build_seconds=round(seconds, 1))
        if timing_cache:
            write_bytes(timing_cache, cache)
        _say(progress, f"{g}: done in {seconds:.0f} s -> {out[g]}")
    return out


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[l2p build] {msg}", file=sys.stderr, flush=True)
