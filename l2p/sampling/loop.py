"""The denoising loop, in plain sight.

On each step the loop runs either the full transformer engine (a computed step) or the
predictor engine (a forecast step), then the numpy scheduler. Nothing here imports torch.

The loop is written against an array namespace ``xp``: numpy on the CPU (engines' ``run``), or
cupy on the GPU (engines' ``run_device``). On the GPU everything the loop touches stays on the
device: the latents, the history ring buffer, the predictor's inputs and outputs, the
conditioning and the per-step timesteps (both uploaded once, before the loop), and the
NaN/Inf/divergence codes of :class:`StepGuard` (read back once, after the loop). Only the final
latents come back to the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np

from ..engine.base import Engine
from ..engine.device_array import to_host
from ..errors import NumericalError
from ..predictor.table import CoefficientTable
from .families.base import FamilyRuntime
from .guidance import CFG, Branches
from .history import FeatureHistory, forecast_index_inputs

#: feature taps: tap name -> transformer output that holds it
TAPS = {"output": "sample", "residual": "residual"}


@dataclass
class Forecaster:
    """A coefficient table + its baked predictor engine (+ the head engine for the residual tap)."""

    table: CoefficientTable
    engine: Engine
    tap: str = "output"
    head: Engine | None = None

    def is_computed(self, i: int) -> bool:
        return self.table.is_computed(i)


@dataclass
class StepRecord:
    """What happened on one step."""

    index: int
    timestep: float
    computed: bool
    seconds: float


@dataclass
class LoopResult:
    latents: np.ndarray  # the final latents, on the host
    steps: list[StepRecord] = field(default_factory=list)
    calls_per_step: int = 1  # transformer-engine calls per computed step and chunk (2: CFG branches one by one)
    evaluations_per_step: int = 1  # transformer evaluations per computed step (2 under CFG: both branches)
    chunks: int = 1  # consecutive row chunks the batch was denoised in (l2p.sampling.batching)

    @property
    def computed_steps(self) -> int:
        return sum(s.computed for s in self.steps)

    @property
    def transformer_calls(self) -> int:
        """Transformer-engine calls of the run (over all its chunks)."""
        return self.computed_steps * self.calls_per_step * self.chunks

    @property
    def transformer_evaluations(self) -> int:
        """Transformer evaluations of the run, each over all its rows (each CFG branch counts: what
        the FLOPs scale with; chunking the rows does not change them)."""
        return self.computed_steps * self.evaluations_per_step


@dataclass
class StepView:
    """What a capture callback sees on one step.

    Arrays are the loop's own, in its namespace (numpy, or cupy on the GPU): copy to keep.
    """

    index: int
    latents: Any  # the latent fed to the model on this step
    computed: bool
    features: dict[str, Any]  # tap -> feature used on this step (true or forecast)
    model_output: Any
    true_features: dict[str, Any] | None = None  # shadow mode: the transformer's on forecast steps
    branches: int = 1  # 2: features hold both CFG branches, (2B, ...) as [uncond; cond]


#: called on every step with a :class:`StepView`
Capture = Callable[[StepView], None]


def _taps(out: dict[str, Any]) -> dict[str, Any]:
    return {tap: out[name] for tap, name in TAPS.items() if name in out}


def _run(engine: Engine, feed: dict[str, Any], check: bool, device: bool) -> dict[str, Any]:
    """``engine.run`` on host arrays, or ``engine.run_device`` on device arrays (outputs stay there)."""
    return engine.run_device(feed, check=check) if device else engine.run(feed, check=check)


#: a latent whose largest magnitude exceeds this many times the starting noise's has diverged.
#: Every supported scheduler keeps the latent a blend of the (unit-variance) noise and the
#: model's data estimate. Measured peaks of max|x_t| / max|x_T| over legitimate full-compute and
#: fixed-formula runs: 1.7 for the trained tiny FLUX model (flow matching, 8..50 steps), 163 for
#: the random-weight tiny PixArt test model (DPM-Solver, 10 steps: an untrained epsilon model's
#: data estimate is amplified by 1/sqrt(alpha_bar) early on). 1000 leaves 6x margin above the
#: worst legitimate run. Tiny FLUX with a TaylorSeer-2 table x1000 passes it within 8 or 28 steps
#: (50 steps: it peaks at 830x); a graph whose constants differ from its predictor's coefficients
#: never gets here (load_predictor refuses it).
DIVERGENCE = 1000.0


class StepGuard:
    """The NaN/Inf and divergence guard: one int8 code per step, ``(steps,)`` in ``xp``, written
    where the arrays live (0 = fine, 1 = the model output has NaN/Inf, 2 = the next latent's
    largest magnitude exceeds ``DIVERGENCE`` x the starting noise's, or is not finite).

    On the host a bad step raises at once; on a device the codes are read back once, by
    :meth:`check` after the loop, which names the first bad step and its engine.
    """

    def __init__(self, xp: ModuleType, steps: int, initial: Any) -> None:
        self.xp = xp
        self.code = xp.zeros(steps, dtype=np.int8)
        # a device scalar on a GPU (no sync); + 1 so that zero latents still have a bound
        self.limit = (xp.abs(initial).max() + 1) * DIVERGENCE
        self.engines: list[str] = []  # engine that made each step's model output

    def record(self, i: int, model_out: Any, latents: Any, engine: str) -> None:
        """Step ``i``'s ``model_out`` (from ``engine``) and the latent the scheduler made from it."""
        xp = self.xp
        bad_out = (~xp.isfinite(model_out).all()).astype(np.int8)  # device-side reductions: no sync
        big = (~(xp.abs(latents).max() <= self.limit)).astype(np.int8)  # NaN compares False: flagged
        self.code[i] = bad_out + big * 2 * (1 - bad_out)
        self.engines.append(engine)
        if xp is np:
            self.check()

    def check(self) -> None:
        code = to_host(self.code)
        bad = np.flatnonzero(code)
        if not bad.size:
            return
        i = int(bad[0])
        if code[i] == 1:
            raise NumericalError(
                f"step {i}: the {self.engines[i]} engine produced NaN/Inf; stopping instead of writing a "
                "broken image (try an fp32 bundle: l2p export ... --precision fp32, or another backend)"
            )
        raise NumericalError(
            f"step {i}: the latent diverged after the {self.engines[i]} engine's output (its largest magnitude "
            f"passed {DIVERGENCE:g}x the starting noise's); stopping instead of writing a broken image "
            "(a predictor that does not fit this bundle or a broken engine: re-calibrate the predictor, "
            "or sample with --method full)"
        )


def denoise(rt: FamilyRuntime, scheduler: Any, transformer: Engine, latents: Any,
            static: dict[str, Any], steps: int, forecaster: Forecaster | None = None,
            capture: Capture | None = None, progress: Callable[[int], None] | None = None,
            shadow: bool = False, xp: ModuleType = np, cfg: CFG | None = None) -> LoopResult:
    """Run ``steps`` denoising steps from ``latents`` (the packed starting noise).

    Args:
        rt: the family runtime (feeds the graph).
        scheduler: a numpy scheduler (diffusers contract), reset here with ``rt.set_timesteps``;
            its ``step`` must work on ``xp`` arrays (operators and ``astype`` only).
        transformer: the full engine.
        latents: ``rt.latent_shape(B)`` float32, host or ``xp`` (uploaded once).
        static: inputs that are fixed over the run (``rt.static_inputs(cond)``; uploaded once).
        forecaster: predictor for the steps the table does not compute; ``None`` = full compute.
        capture: optional observer of every step (calibration uses it); it sees ``xp`` arrays.
        shadow: also run the transformer on forecast steps and show its features to ``capture``
            (calibration on the cached sampler's own trajectories); the forecast is still used.
        xp: the array namespace: numpy (engines' ``run``) or cupy (engines' ``run_device``; step
            times then measure the queueing of work, not its execution).
        cfg: classifier-free guidance (its ``negative`` static inputs are uploaded once); the
            features forecast and captured are then the combined output (``guided``, ``B`` rows)
            or both branches (``branches``, ``2B`` rows ``[uncond; cond]``).

    Returns:
        the final latents as a host numpy array, and a record per step.
    """
    rt.set_timesteps(scheduler, steps)
    timesteps, device = scheduler.timesteps, xp is not np
    latents = xp.asarray(latents)
    static = {k: xp.asarray(v) for k, v in static.items()}
    if cfg is not None:
        cfg = replace(cfg, negative={k: xp.asarray(v) for k, v in cfg.negative.items()})
    model = Branches(rt, transformer, static, cfg, latents, timesteps, xp)  # timestep inputs uploaded once
    index_in = {} if forecaster is None else forecast_index_inputs(
        [forecaster.is_computed(i) for i in range(len(timesteps))], forecaster.table.K, xp)
    guard = StepGuard(xp, len(timesteps), latents)
    tap_out = TAPS[forecaster.tap] if forecaster else "sample"
    history: FeatureHistory | None = None  # allocated on the first computed step
    result = LoopResult(latents, calls_per_step=model.calls, evaluations_per_step=model.evaluations)

    def run(engine: Engine, feed: dict[str, Any], check: bool) -> dict[str, Any]:
        return _run(engine, feed, check, device)

    for i, t in enumerate(timesteps):
        start = time.perf_counter()
        computed = forecaster is None or forecaster.is_computed(i)
        true_feats = None
        if computed:
            out = model.outputs(latents, i, float(t), i == 0, run)
            feature, model_out, engine = out[tap_out], model.model_output(out), transformer.name
            feats = _taps(out)
            if forecaster is not None:
                # [latents; latents] under CFG branches: only built when the predictor reads latents
                lat = model.history_latents(latents) if forecaster.table.uses_latents else None
                if history is None:
                    shape = None if lat is None else lat.shape
                    history = FeatureHistory(forecaster.table.K, feature.shape, shape, feature.dtype, xp)
                history.push(i, feature, lat)
        else:
            assert forecaster is not None and history is not None
            if shadow:
                true_feats = _taps(model.outputs(latents, i, float(t), False, run))
            feed = {"history": history.features, **index_in[i]}  # step (1,), perm (K,): uploaded once
            if forecaster.table.uses_latents:
                feed["latent_history"], feed["latent"] = history.latents, model.history_latents(latents)
            feature = _run(forecaster.engine, feed, False, device)["feature"]
            engine = forecaster.engine.name
            if forecaster.tap == "output":
                model_out = model.model_output({"sample": feature})
            else:
                assert forecaster.head is not None and cfg is None  # make_forecaster refuses the residual tap under CFG
                step_in = model.step_inputs(latents, i, float(t))
                head_feed = {k: v for k, v in {**static, **step_in}.items() if k in forecaster.head.spec.input_names}
                model_out = rt.model_output(_run(forecaster.head, {**head_feed, "residual": feature}, False, device))
            feats = {forecaster.tap: feature}
        if capture is not None:
            capture(StepView(i, latents, computed, feats, model_out, true_feats, 2 if cfg and cfg.branches else 1))
        latents = scheduler.step(model_out, t, latents)
        guard.record(i, model_out, latents, engine)
        result.steps.append(StepRecord(i, float(t), computed, time.perf_counter() - start))
        if progress is not None:
            progress(i)
    guard.check()  # the one read-back of the NaN/Inf/divergence codes on a device
    result.latents = to_host(latents)
    return result
