"""Capture sampling trajectories through the bundle's own engines (no PyTorch).

A trajectory is one (condition row, seed) pair: the latent fed to the transformer on every step
and the tapped features. Arrays are stacked as ``(T, N, *feature_shape)`` float32 where ``T`` is
the number of trajectories and ``N`` the step count. Under classifier-free guidance the features
are what the predictor forecasts: the guided output, or with ``--cfg-forecast branches`` both
branches of the row, ``(T, N, 2, *feature_shape)`` (``[uncond, cond]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..sampling.loop import Forecaster, StepView
from ..sampling.pipeline import Sampler


@dataclass
class Trajectories:
    """Captured runs.

    Attributes:
        latents: ``(T, N, *shape)`` float32: the latent fed to the model on each step.
        features: tap -> ``(T, N, *shape_tap)`` float32: the *true* feature on each step
            (the transformer's, also on forecast steps when captured in shadow mode); with both
            CFG branches forecast, ``(T, N, 2, *shape_tap)``.
        finals: ``(T, *shape)`` float32: the final latent of each run.
    """

    latents: np.ndarray
    features: dict[str, np.ndarray]
    finals: np.ndarray

    @property
    def count(self) -> int:
        return int(self.latents.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"latents": self.latents, "finals": self.finals}
        out.update({f"feature_{k}": v for k, v in self.features.items()})
        return out

    def fits(self, sampler: Sampler, rows: int, seeds: Sequence[int], steps: int) -> bool:
        """Whether these are runs :func:`capture` makes for ``rows`` conditions x ``seeds`` over
        ``steps`` steps: float32 arrays of those shapes, finite, each run starting from its seed's
        noise. A stale or planted cache fails this and is captured again."""
        n = rows * len(seeds)
        lat = sampler.rt.latent_shape(1)[1:]
        arrays = [self.latents, self.finals, *self.features.values()]
        ok = (self.latents.shape == (n, steps, *lat) and self.finals.shape == (n, *lat) and bool(self.features)
              and all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays)
              and all(f.shape[:2] == (n, steps) for f in self.features.values()))
        return ok and all(np.array_equal(self.latents[k * rows:(k + 1) * rows, 0], sampler.rt.noise(seed, rows))
                          for k, seed in enumerate(seeds))

    def take(self, index: np.ndarray) -> Trajectories:
        """The runs numbered ``index`` (int ``(n,)``), in that order; ``self`` when that is all of them."""
        if np.array_equal(index, np.arange(self.count)):
            return self
        return Trajectories(self.latents[index], {k: v[index] for k, v in self.features.items()},
                            self.finals[index])

    def feature_latents(self, tap: str) -> np.ndarray:
        """The latents beside ``tap``'s features, shaped like them (repeated over the CFG branches)."""
        feats = self.features[tap]
        if feats.ndim == self.latents.ndim + 1:  # (T, N, 2, ...): both branches see the same latent
            return np.repeat(self.latents[:, :, None], feats.shape[2], axis=2)
        return self.latents

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Trajectories:
        feats = {k[len("feature_"):]: v for k, v in arrays.items() if k.startswith("feature_")}
        return cls(arrays["latents"], feats, arrays["finals"])


def capture(sampler: Sampler, cond: dict[str, np.ndarray], seeds: Sequence[int], steps: int,
            forecaster: Forecaster | None = None, progress: Callable[[int], None] | None = None,
            shadow: bool = True, on_step: Callable[[int], None] | None = None,
            initials: Sequence[np.ndarray] | None = None) -> Trajectories:
    """Run every condition row (as one batch) for each seed and record every step.

    ``progress(n)`` is called after seed number ``n``, ``on_step(i)`` after every step ``i`` of every run.
    ``initials`` (one packed float32 latent batch per seed) replaces each seed's own noise.

    With a ``forecaster`` the run is the cached sampler's own (forecast steps use the predictor);
    with ``shadow`` the transformer also runs on forecast steps to record the true features
    (without it, forecast steps record the forecast).
    """
    lat_runs, feat_runs, finals = [], [], []
    for n, seed in enumerate(seeds):
        lat_steps: list[np.ndarray] = []
        feat_steps: dict[str, list[np.ndarray]] = {}

        def grab(v: StepView) -> None:
            lat_steps.append(v.latents.copy())
            feats = v.features if v.computed or not shadow else (v.true_features or {})
            for tap, f in feats.items():
                if v.branches > 1:  # (2B, ...) as [uncond; cond] -> (B, 2, ...)
                    f = f.reshape(v.branches, -1, *f.shape[1:]).swapaxes(0, 1)
                feat_steps.setdefault(tap, []).append(f.copy())

        res = sampler.sample(cond, seed, steps, forecaster=forecaster, capture=grab, decode=False,
                             shadow=shadow and forecaster is not None, method="full", progress=on_step,
                             initial=None if initials is None else initials[n])
        lat_runs.append(np.stack(lat_steps, axis=1))  # (B, N, *shape)
        feat_runs.append({k: np.stack(v, axis=1) for k, v in feat_steps.items()})
        finals.append(res.final)
        if progress is not None:
            progress(n)
    taps = set.intersection(*(set(f) for f in feat_runs))
    return Trajectories(
        np.concatenate(lat_runs),  # (T, N, *shape)
        {t: np.concatenate([f[t] for f in feat_runs]) for t in sorted(taps)},
        np.concatenate(finals),
    )


def full_targets(own: Trajectories, full: Trajectories, schedule: tuple[int, ...], tap: str) -> Trajectories:
    """The cached run's own history (inputs) with the full-compute run's features as targets.

    On forecast steps the target becomes the feature the full-compute run had at that step (same
    condition and seed): the final latent is the noise plus the sum of the step updates, so
    matching the full run's updates keeps the cached run on it, while the inputs are what the
    predictor really sees at sampling time (computed steps of the cached run).
    """
    target = own.features[tap].copy()  # (T, N, ...)
    forecast = [i for i in range(target.shape[1]) if i not in schedule]
    target[:, forecast] = full.features[tap][:, forecast]
    return Trajectories(own.latents, {**own.features, tap: target}, own.finals)
