"""The settings of one calibration (``l2p calibrate``'s options): budget, name, fit variants,
schedule, refit and closed-loop rounds, rows and hold-out; checked on construction.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..predictor.artifact import check_name
from ..predictor.schedule import Schedule, format_schedule, parse_schedule
from ..sampling.settings import RunSettings
from .fit import FitConfig
from .split import check_holdout


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of one calibration (saved with the predictor; same settings = nothing to do)."""

    steps: int
    full_steps: int
    name: str = "default"
    seeds: int = 4
    tap: str = "output"
    latents: bool = True  # also try fits with the latent terms (chosen only if they score better)
    solver: str = "lstsq"
    #: "search", "interval" or the computed steps themselves ("0,1,2,4,11,..."; see :attr:`fixed_schedule`)
    schedule: str = "search"
    warmup: int = 1  # for "interval"
    refit: int = 1  # rounds of refitting on the cached sampler's own trajectories
    # fit variants tried on the calibration set (the best score wins): each history length K,
    # polynomial exactness (see FitConfig.exact; only degrees that leave the fit some freedom,
    # exact <= K - 2, and -1 = free), ridge strength, ridge centre
    Ks: tuple[int, ...] = (3, 4, 5)
    exacts: tuple[int, ...] = (0, 1, 2)
    priors: tuple[str, ...] = ("lagrange2",)
    ridges: tuple[float, ...] = (1e-6,)
    refit_target: str = "full"  # "full": the full-compute run's feature; "true": F(own latent)
    #: Gauss-Newton rounds on the cached sampler's final images (see closed_loop.py); 0 = off
    closed_loop: int = 1
    #: the conditioning rows used (``--rows``; ``None``: all), in this order
    rows: tuple[int, ...] | None = None
    #: fraction of the rows (of the seeds with one row) kept out of every fit and only scored (``--holdout``)
    holdout: float = 0.0

    def __post_init__(self) -> None:
        RunSettings(steps=self.steps, full_steps=self.full_steps)  # the one check of the step counts
        check_name(self.name)
        if self.full_steps == self.steps:
            raise InputError(
                f"--full-steps {self.full_steps} with --steps {self.steps}: every step runs the transformer, so "
                f"there is nothing to forecast and no predictor to calibrate; sample with --method full, or give "
                f"--full-steps below {self.steps}"
            )
        if self.schedule not in ("search", "interval"):  # the computed steps, as --schedule gives them
            sched = parse_schedule(self.schedule, self.steps, self.full_steps, "--schedule (choose search, "
                                   "interval or the computed steps)")
            object.__setattr__(self, "schedule", format_schedule(sched))
        object.__setattr__(self, "holdout", check_holdout(self.holdout))
        if self.rows is not None:
            object.__setattr__(self, "rows", tuple(self.rows))
        if not 1 <= self.seeds <= 256:
            raise InputError(f"--seeds {self.seeds} is out of range; use 1..256")
        if self.refit_target not in ("full", "true"):
            raise InputError(f"--refit-target {self.refit_target}: choose full or true")
        if not 0 <= self.refit <= 10:
            raise InputError(f"--refit {self.refit} is out of range; use 0..10")
        if not 0 <= self.closed_loop <= 10:
            raise InputError(f"--closed-loop {self.closed_loop} is out of range; use 0..10")
        if not self.Ks or any(not 1 <= k <= 16 for k in self.Ks):
            raise InputError(f"--K {list(self.Ks)}: give history lengths in 1..16")
        if not self.exacts or any(e < -1 for e in self.exacts):
            raise InputError(f"--exact {list(self.exacts)}: give degrees >= -1 (-1 = free fit)")
        if self.tap == "residual" and self.latents:
            object.__setattr__(self, "latents", False)  # latent terms need the feature's shape

    def variants(self) -> list[FitConfig]:
        """Every fit variant to try, in a fixed order."""
        out = []
        for K in self.Ks:
            for exact in sorted({e for e in self.exacts if e <= K - 2} or {min(self.exacts)}):
                for lat in (False, True) if self.latents else (False,):
                    for prior in self.priors:
                        for ridge in self.ridges:
                            out.append(FitConfig(K, lat, ridge, self.solver, exact=min(exact, K - 1), prior=prior))
        return list(dict.fromkeys(out))

    @property
    def fixed_schedule(self) -> Schedule | None:
        """The computed steps given as ``schedule`` (``None`` for "search" and "interval")."""
        return None if self.schedule in ("search", "interval") else tuple(int(x) for x in self.schedule.split(","))

    def search_variants(self) -> list[FitConfig]:
        """The few variants each candidate schedule is scored with (no latents, K = 4 or the nearest)."""
        K = min(self.Ks, key=lambda k: abs(k - 4))
        found = [v for v in self.variants() if v.K == K and not v.uses_latents and v.exact >= 1]
        return found[:2] or [v for v in self.variants() if v.K == K][:1]
