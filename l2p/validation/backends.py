"""A GPU backend against ONNX Runtime CPU: every graph of a bundle on random inputs. Torch-free.

Engines on both sides come from :func:`l2p.engine.registry.open_engine`; the error measure is
:func:`l2p.metrics.max_errors` (max abs error and max abs error / max |reference|) per output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..bundle import Bundle, open_bundle
from ..engine.base import Engine
from ..engine.device_array import to_host
from ..engine.registry import open_engine
from ..engine.trt_plans import declared_precision, plans_dir
from ..engine.trt_profiles import DimsArg, dims_for_graph, dims_from_profiles, input_dim_names
from ..errors import InputError
from ..metrics import max_errors
from ..precision import Precision

#: max relative error (max |got - ref| / max |ref|) allowed per precision
TOLERANCES = {Precision.FP32: 1e-4, Precision.FP16: 2e-2, Precision.BF16: 5e-2}
VALIDATE_BACKENDS = ("tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt")


def compare_outputs(got: Mapping[str, Any], ref: Mapping[str, np.ndarray], rtol: float) -> dict[str, dict[str, Any]]:
    """Per output: ``max_abs``, ``max_rel`` (max abs error / max |ref|), ``ok`` (finite and <= rtol)."""
    report: dict[str, dict[str, Any]] = {}
    for name, r in ref.items():
        g = to_host(got[name])
        if g.shape != r.shape:
            report[name] = {"ok": False, "error": f"shape {list(g.shape)}, reference {list(r.shape)}"}
            continue
        max_abs, max_rel = max_errors(g, r)
        ok = bool(np.isfinite(g).all()) and max_rel <= rtol
        report[name] = {"max_abs": max_abs, "max_rel": max_rel, "ok": ok}
    return report


def _check_installed(backend: str) -> None:
    """MissingDependencyError now, before any graph is opened, when ``backend`` is not installed."""
    if backend == "tensorrt":
        from ..engine.trt_build import current_env

        current_env()
    else:
        from ..engine.onnxruntime_backend import PROVIDERS, _import_ort, check_provider

        check_provider(PROVIDERS[backend], _import_ort().get_available_providers())


def validate_backend(
    bundle_path: str | os.PathLike[str],
    backend: str = "tensorrt",
    precision: Precision | str | None = None,
    reference: str = "onnxruntime",
    dims: DimsArg = None,
    graphs: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run each graph on ``backend`` and on ONNX Runtime CPU with random inputs; compare outputs.

    ``dims`` (global and/or per graph) give the sample shapes; without them the TensorRT backend
    uses the min shapes of the bundle's built plans. Returns ``{"graphs": {graph: {..., "outputs":
    {name: {max_abs, max_rel, ok}}}}, "results": [flat rows: graph, output, max_abs, rel, limit,
    ok], "ok"}``. Raises MissingDependencyError when the backend is not installed (checked first).
    """
    if backend not in VALIDATE_BACKENDS:
        raise InputError(f"unknown backend '{backend}' to validate; choose one of {list(VALIDATE_BACKENDS)}")
    if reference != "onnxruntime":
        raise InputError(f"reference '{reference}' is not supported; the reference is onnxruntime (CPU)")
    _check_installed(backend)
    bundle = open_bundle(bundle_path)
    asked = Precision.parse(precision) if precision is not None else None
    report: dict[str, Any] = {"bundle": str(bundle.root), "backend": backend, "reference": reference,
                              "graphs": {}}
    for g in graphs or list(bundle.graphs):
        spec, onnx_path = bundle.spec(g), bundle.onnx_path(g)
        engine, plan, gdims = _engine(bundle, g, backend, asked, dims_for_graph(dims, g))
        prec = getattr(engine, "precision", None) or asked or declared_precision(onnx_path, bundle.manifest)
        feed = spec.sample_inputs(gdims, seed=seed)
        try:
            got = engine.run(feed)
        finally:
            engine.close()
        ref = open_engine("onnxruntime", onnx_path, spec, name=g).run(feed)
        outputs = compare_outputs(got, ref, TOLERANCES[prec])
        report["graphs"][g] = {"precision": prec.value, "rtol": TOLERANCES[prec], "dims": gdims, "plan": plan,
                               "outputs": outputs, "ok": all(o["ok"] for o in outputs.values())}
    report["results"] = [  # flat rows for tables: graph, output, max_abs, rel, limit, ok
        {"graph": g, "output": o, "max_abs": r.get("max_abs", float("nan")), "rel": r.get("max_rel", float("nan")),
         "limit": gr["rtol"], "ok": r["ok"]}
        for g, gr in report["graphs"].items() for o, r in gr["outputs"].items()
    ]
    report["ok"] = all(r["ok"] for r in report["graphs"].values())
    return report


def _engine(bundle: Bundle, graph: str, backend: str, precision: Precision | None,
            dims: dict[str, int]) -> tuple[Engine, str | None, dict[str, int]]:
    """The engine under test for ``graph``, the plan it runs (TensorRT) and the sample dims."""
    spec, onnx_path = bundle.spec(graph), bundle.onnx_path(graph)
    if backend == "tensorrt":
        if dims:  # an in-memory plan for exactly these shapes
            engine = open_engine(backend, onnx_path, spec, name=graph, bundle=bundle, precision=precision,
                                 min_dims=dims, opt_dims=dims, max_dims=dims)
            return engine, None, dims
        trt: Any = open_engine(backend, onnx_path, spec, name=graph, bundle=bundle, precision=precision,
                               plan_dir=plans_dir(bundle.root, graph))
        return trt, str(trt.plan_path), dims_from_profiles(spec, trt.profiles, "min")
    if not dims:
        example = ",".join(f"{n}=N" for n in input_dim_names(spec))
        raise InputError(f"validating {backend} needs sample dims for '{graph}': pass --dims {example} "
                         f"(its inputs are {spec.describe()})")
    return open_engine(backend, onnx_path, spec, name=graph), None, dims


def format_backend_report(report: Mapping[str, Any]) -> str:
    """The report of :func:`validate_backend` as a table, one row per graph output."""
    lines = [f"{'graph/output':40s} {'max_abs':>10s} {'rel':>10s} {'limit':>8s}  result"]
    for r in report["results"]:
        lines.append(f"{r['graph'] + '/' + r['output']:40s} {r['max_abs']:10.3e} {r['rel']:10.3e} "
                     f"{r['limit']:8.1e}  {'ok' if r['ok'] else 'FAIL'}")
    lines.append("PASSED" if report["ok"] else "FAILED")
    return "\n".join(lines)
