"""The denoising loop, in plain sight.

On each step the loop runs either the full transformer engine (a computed step) or the
predictor engine (a forecast step), then the numpy scheduler. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.base import Engine
from ..errors import NumericalError
from ..predictor.table import CoefficientTable
from .families.base import FamilyRuntime
from .history import FeatureHistory

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
    latents: np.ndarray
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def computed_steps(self) -> int:
        return sum(s.computed for s in self.steps)


@dataclass
class StepView:
    """What a capture callback sees on one step (arrays are the loop's own: copy to keep)."""

    index: int
    latents: np.ndarray  # the latent fed to the model on this step
    computed: bool
    features: dict[str, np.ndarray]  # tap -> feature used on this step (true or forecast)
    model_output: np.ndarray
    true_features: dict[str, np.ndarray] | None = None  # shadow mode: the transformer's on forecast steps


#: called on every step with a :class:`StepView`
Capture = Callable[[StepView], None]


def _taps(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {tap: out[name] for tap, name in TAPS.items() if name in out}


def _guard(x: np.ndarray, i: int, engine: str) -> None:
    if not np.isfinite(x).all():
        raise NumericalError(
            f"step {i}: the {engine} engine produced NaN/Inf; stopping instead of writing a broken "
            "image (try an fp32 bundle: l2p export ... --precision fp32, or another backend)"
        )


def denoise(rt: FamilyRuntime, scheduler: Any, transformer: Engine, latents: np.ndarray,
            static: dict[str, np.ndarray], steps: int, forecaster: Forecaster | None = None,
            capture: Capture | None = None, progress: Callable[[int], None] | None = None,
            shadow: bool = False) -> LoopResult:
    """Run ``steps`` denoising steps from ``latents`` (the packed starting noise).

    Args:
        rt: the family runtime (feeds the graph).
        scheduler: a numpy scheduler (diffusers contract), reset here with ``rt.set_timesteps``.
        transformer: the full engine.
        latents: ``rt.latent_shape(B)`` float32.
        static: inputs that are fixed over the run (``rt.static_inputs(cond)``).
        forecaster: predictor for the steps the table does not compute; ``None`` = full compute.
        capture: optional observer of every step (calibration uses it).
        shadow: also run the transformer on forecast steps and show its features to ``capture``
            (calibration on the cached sampler's own trajectories); the forecast is still used.
    """
    rt.set_timesteps(scheduler, steps)
    tap_out = TAPS[forecaster.tap] if forecaster else "sample"
    history: FeatureHistory | None = None  # allocated on the first computed step
    result = LoopResult(latents)
    for i, t in enumerate(scheduler.timesteps):
        start = time.perf_counter()
        step_in = rt.step_inputs(latents, float(t))
        computed = forecaster is None or forecaster.is_computed(i)
        true_feats = None
        if computed:
            out = transformer.run({**static, **step_in}, check=(i == 0))
            feature, model_out, engine = out[tap_out], rt.model_output(out), transformer.name
            feats = _taps(out)
            if forecaster is not None:
                if history is None:
                    lat = latents.shape if forecaster.table.uses_latents else None
                    history = FeatureHistory(forecaster.table.K, feature.shape, lat)
                history.push(i, feature, latents)
        else:
            assert forecaster is not None and history is not None
            if shadow:
                true_feats = _taps(transformer.run({**static, **step_in}, check=False))
            feed = {"history": history.features, "step": np.array([i], np.int64), "perm": history.perm()}
            if forecaster.table.uses_latents:
                feed["latent_history"], feed["latent"] = history.latents, latents
            feature = forecaster.engine.run(feed, check=False)["feature"]
            engine = forecaster.engine.name
            if forecaster.tap == "output":
                model_out = rt.model_output({"sample": feature})
            else:
                assert forecaster.head is not None
                head_feed = {k: v for k, v in {**static, **step_in}.items() if k in forecaster.head.spec.input_names}
                model_out = rt.model_output(forecaster.head.run({**head_feed, "residual": feature}, check=False))
            feats = {forecaster.tap: feature}
        _guard(model_out, i, engine)
        if capture is not None:
            capture(StepView(i, latents, computed, feats, model_out, true_feats))
        latents = scheduler.step(model_out, t, latents)
        result.steps.append(StepRecord(i, float(t), computed, time.perf_counter() - start))
        if progress is not None:
            progress(i)
    result.latents = latents
    return result
