"""``--method full|fora|taylorseer1|taylorseer2|lagrange2|l2p[:NAME]`` -> a forecaster (or none)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..bundle import Bundle
from ..engine.base import Engine
from ..engine.onnxruntime_backend import OrtEngine
from ..errors import InputError, MismatchError
from ..predictor.artifact import load_predictor
from ..predictor.graph import OUTPUT, build_predictor_graph, predictor_io_spec
from ..predictor.host import HostPredictor, is_predictor_spec
from ..predictor.presets import PRESETS, preset
from ..predictor.schedule import interval_schedule
from ..predictor.table import CoefficientTable
from ..spec import IOSpec, TensorSpec
from .loop import TAPS, Forecaster

DEFAULT_PREDICTOR = "default"

#: makes a predictor/head engine: (``.onnx`` file or serialized bytes, its I/O spec, name) -> Engine
EngineFactory = Callable[[str | os.PathLike[str] | bytes, IOSpec, str], Engine]


def host_engines(threads: int | None = None) -> EngineFactory:
    """The CPU engines of a cached run's small graphs: the predictor applied in numpy (no session, no
    thread pool), the head on ONNX Runtime with idle workers sleeping, so that neither takes cores
    from the transformer's next step (see :mod:`l2p.engine.ort_options`)."""
    def make(source: str | os.PathLike[str] | bytes, spec: IOSpec, name: str) -> Engine:
        if is_predictor_spec(spec):
            return HostPredictor(source, spec, name)
        return OrtEngine(source, spec, name=name, threads=threads, spinning=False)
    return make


@dataclass(frozen=True)
class Method:
    """A parsed ``--method`` value."""

    kind: str  # "full", "preset" or "l2p"
    name: str  # preset name or predictor name

    @classmethod
    def parse(cls, text: str) -> Method:
        if text == "full":
            return cls("full", "full")
        if text in PRESETS:
            return cls("preset", text)
        if text == "l2p" or text.startswith("l2p:"):
            name = text.partition(":")[2] or DEFAULT_PREDICTOR
            if not name.replace("-", "").replace("_", "").isalnum():  # a folder name, never a path
                raise InputError(f"--method {text}: predictor names use letters, digits, '-' and '_' only")
            return cls("l2p", name)
        raise InputError(f"unknown method '{text}'; choose full, {', '.join(PRESETS)}, l2p or l2p:NAME")

    def __str__(self) -> str:
        return self.name if self.kind != "l2p" else f"l2p:{self.name}"


def feature_spec(bundle: Bundle, tap: str) -> TensorSpec:
    """The transformer output that holds ``tap``."""
    if tap not in TAPS:
        raise InputError(f"unknown tap '{tap}'; choose one of {sorted(TAPS)}")
    out = bundle.spec("transformer").output(TAPS[tap])
    return TensorSpec(tap, out.dtype, out.shape)


def preset_forecaster(bundle: Bundle, name: str, steps: int, full_steps: int, warmup: int = 1,
                      schedule: tuple[int, ...] | None = None, threads: int | None = None,
                      make_engine: EngineFactory | None = None) -> Forecaster:
    """A fixed-formula forecaster on the interval schedule (or a given one), baked into a graph."""
    sched = schedule or interval_schedule(steps, full_steps, warmup)
    table = preset(name, sched, steps)
    return forecaster_from_table(bundle, table, "output", f"{name} predictor", threads=threads,
                                 make_engine=make_engine)


def forecaster_from_table(bundle: Bundle, table: CoefficientTable, tap: str, name: str,
                          threads: int | None = None, make_engine: EngineFactory | None = None) -> Forecaster:
    """Bake ``table`` into an in-memory predictor graph and wrap it (engines: ``make_engine``, else ORT CPU)."""
    make = make_engine or host_engines(threads)
    fspec = feature_spec(bundle, tap)
    lspec = TensorSpec("latent", "float32", bundle.spec("transformer").input("hidden_states").shape)
    lat = lspec if table.uses_latents else None
    model = build_predictor_graph(table, fspec, lat)
    engine = make(model.SerializeToString(), predictor_io_spec(table, fspec, lat), name)
    return Forecaster(table, engine, tap, _head(bundle, tap, make))


def _head(bundle: Bundle, tap: str, make: EngineFactory) -> Engine | None:
    if tap == "output":
        return None
    return make(bundle.onnx_path("head"), bundle.spec("head"), "head")


def l2p_forecaster(bundle: Bundle, name: str, steps: int, full_steps: int | None,
                   threads: int | None = None, make_engine: EngineFactory | None = None) -> Forecaster:
    """Load the calibrated predictor ``name`` of this bundle, refusing a mismatch."""
    folder = bundle.predictors_dir / name
    if not folder.is_dir():
        have = sorted(p.name for p in bundle.predictors_dir.iterdir() if not p.name.startswith(".")) \
            if bundle.predictors_dir.is_dir() else []
        raise InputError(
            f"bundle {bundle.root} has no predictor '{name}' (it has {have or 'none'}); make one with: "
            f"l2p calibrate {bundle.root} --conditioning COND.npz --steps {steps} --full-steps "
            f"{full_steps or min(10, steps)} --name {name}"
        )
    pred = load_predictor(folder, expect_bundle_hash=bundle.hash, expect_steps=steps)
    computed = len(pred.schedule)
    if full_steps is not None and full_steps != computed:
        raise MismatchError(
            f"predictor '{name}' was calibrated for {computed} full steps, --full-steps asks for {full_steps}; "
            f"drop --full-steps or re-run: l2p calibrate {bundle.root} ... --steps {steps} "
            f"--full-steps {full_steps} --name {name}"
        )
    got = pred.io_spec.output(OUTPUT)  # a forged tap would feed the graph the wrong feature
    outputs = bundle.spec("transformer").output_names
    want = feature_spec(bundle, pred.tap) if TAPS.get(pred.tap) in outputs else None
    if want is None or (got.dtype, got.shape) != (want.dtype, want.shape):
        have = f"this bundle's is {want.dtype}{list(want.shape)}" if want else "this bundle's transformer has none"
        raise MismatchError(
            f"predictor '{name}' forecasts tap '{pred.tap}' as {got.dtype}{list(got.shape)}, but {have}; "
            f"re-run: l2p calibrate {bundle.root} ... --steps {steps} --name {name}"
        )
    make = make_engine or host_engines(threads)
    engine = make(pred.onnx_path, pred.io_spec, f"l2p:{name} predictor")
    return Forecaster(pred.table, engine, pred.tap, _head(bundle, pred.tap, make))


def make_forecaster(bundle: Bundle, method: str, steps: int, full_steps: int | None,
                    threads: int | None = None, make_engine: EngineFactory | None = None) -> Forecaster | None:
    """The forecaster for ``--method`` (``None`` for full compute); ``make_engine`` builds its engines."""
    m = Method.parse(method)
    if m.kind == "full":
        return None
    if m.kind == "preset":
        if full_steps is None:
            raise InputError(f"--method {method} needs --full-steps M (how many steps run the transformer)")
        return preset_forecaster(bundle, m.name, steps, full_steps, threads=threads, make_engine=make_engine)
    return l2p_forecaster(bundle, m.name, steps, full_steps, threads=threads, make_engine=make_engine)
