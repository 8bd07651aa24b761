"""``--method`` (full, a preset, ``l2p[:NAME]``; see :class:`~l2p.sampling.settings.Method`) -> a forecaster (or none)."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..bundle import Bundle
from ..engine.base import Engine
from ..engine.registry import open_engine
from ..errors import InputError
from ..predictor.artifact import Expect, load_predictor
from ..predictor.graph import build_predictor_graph, predictor_io_spec
from ..predictor.host import HostPredictor, is_predictor_spec
from ..predictor.presets import preset
from ..predictor.schedule import interval_schedule
from ..predictor.table import CoefficientTable
from ..spec import IOSpec, TensorSpec
from .guidance import effective_cfg_scale
from .loop import TAPS, Forecaster
from .settings import RunSettings

#: makes a predictor/head engine: (``.onnx`` file or serialized bytes, its I/O spec, name) -> Engine
EngineFactory = Callable[[str | os.PathLike[str] | bytes, IOSpec, str], Engine]


def host_engines(threads: int | None = None) -> EngineFactory:
    """The CPU engines of a cached run's small graphs: the predictor applied in numpy (no session, no
    thread pool), the head on ONNX Runtime with idle workers sleeping, so that neither takes cores
    from the transformer's next step (see :mod:`l2p.engine.ort_options`)."""
    def make(source: str | os.PathLike[str] | bytes, spec: IOSpec, name: str) -> Engine:
        if is_predictor_spec(spec):
            return HostPredictor(source, spec, name)
        return open_engine("onnxruntime", source, spec, name=name, threads=threads, spinning=False)
    return make


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


def expectation(bundle: Bundle, steps: int | None = None, full_steps: int | None = None,
                schedule: tuple[int, ...] | None = None, settings: RunSettings | None = None) -> Expect:
    """What a predictor of ``bundle`` must fit: the bundle, its scheduler config, its features, the
    step counts, with ``schedule`` the computed steps, and with ``settings`` the classifier-free
    guidance scale and forecast mode."""
    outputs = bundle.spec("transformer").output_names
    features = tuple(feature_spec(bundle, tap) for tap, out in TAPS.items() if out in outputs)
    scale = None if settings is None else effective_cfg_scale(bundle.family, settings.cfg_scale)
    return Expect(bundle_hash=bundle.hash, scheduler_hash=bundle.scheduler_hash, steps=steps,
                  full_steps=full_steps, features=features, schedule=schedule, cfg_scale=scale,
                  cfg_forecast=None if settings is None else settings.cfg_forecast)


def l2p_forecaster(bundle: Bundle, name: str, steps: int, full_steps: int | None,
                   threads: int | None = None, make_engine: EngineFactory | None = None,
                   schedule: tuple[int, ...] | None = None, settings: RunSettings | None = None) -> Forecaster:
    """Load the calibrated predictor ``name`` of this bundle, refusing a mismatch (with ``schedule``:
    a predictor calibrated for other computed steps; with ``settings``: for another classifier-free
    guidance scale or forecast mode)."""
    folder = bundle.predictor_dir(name)  # refuses links on the way
    if not folder.is_dir():
        pdir = bundle.predictors_dir
        have = sorted(p.name for p in pdir.iterdir() if not p.name.startswith(".")) if pdir.is_dir() else []
        raise InputError(
            f"bundle {bundle.root} has no predictor '{name}' (it has {have or 'none'}); make one with: "
            f"l2p calibrate {bundle.root} --conditioning COND.npz --steps {steps} --full-steps "
            f"{full_steps or min(10, steps)} --name {name}{cfg_flags(bundle, settings)}"
        )
    pred = load_predictor(folder, expect=expectation(bundle, steps, full_steps, schedule, settings))
    make = make_engine or host_engines(threads)
    engine = make(pred.graph, pred.io_spec, f"l2p:{name} predictor")  # the graph rebuilt from the coefficients
    return Forecaster(pred.table, engine, pred.tap, _head(bundle, pred.tap, make))


def cfg_flags(bundle: Bundle, settings: RunSettings | None) -> str:
    """`` --cfg-scale G --cfg-forecast MODE`` of a guided run (for remake commands), else ``""``."""
    if settings is None or effective_cfg_scale(bundle.family, settings.cfg_scale) == 1:
        return ""
    scale = effective_cfg_scale(bundle.family, settings.cfg_scale)
    return f" --cfg-scale {scale:g} --cfg-forecast {settings.cfg_forecast}"


def make_forecaster(bundle: Bundle, settings: RunSettings, threads: int | None = None,
                    make_engine: EngineFactory | None = None) -> Forecaster | None:
    """The forecaster for ``settings.method`` (``None`` for full compute); ``make_engine`` builds its engines."""
    m = settings.parsed_method
    if m.kind == "full":
        return None
    if m.kind == "preset":
        assert settings.full_steps is not None  # RunSettings refuses a preset without it
        return preset_forecaster(bundle, m.name, settings.steps, settings.full_steps, schedule=settings.schedule,
                                 threads=threads, make_engine=make_engine)
    return l2p_forecaster(bundle, m.name, settings.steps, settings.full_steps, threads=threads,
                          make_engine=make_engine, schedule=settings.schedule, settings=settings)
