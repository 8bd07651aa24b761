"""Fixed-formula starts: the presets as points of L2P's table space, scored beside the fitted variants.

A preset (FORA, TaylorSeer, Lagrange) is a coefficient table like a least-squares fit. Under strong
classifier-free guidance, where every forecast error of a branch is amplified by the scale, plain
reuse can score better closed loop than any extrapolating fit (tiny-sd3 at 7). Calibration scores
:data:`PRESET_STARTS` on the chosen schedule and, when that schedule was searched, on the presets'
own two (the even interval and diffusers' TaylorSeer pattern) and on the search's next best
schedules, and refines from the best of all
and from the best on another schedule (the runner-up).

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..predictor.presets import preset
from ..predictor.schedule import Schedule, interval_schedule, taylorseer_pattern
from ..predictor.table import CoefficientTable

#: the fixed formulas scored as starts
PRESET_STARTS = ("fora", "taylorseer1", "taylorseer2", "lagrange2")
#: their history length as starts (zero-padded), so the closed loop can move them within "weights sum to 1"
PRESET_K = 3


def start_schedules(schedule: Schedule, num_steps: int, full_steps: int, searched: bool,
                    leaders: Sequence[Schedule] = ()) -> list[Schedule]:
    """``schedule``, then (when it was searched) the interval schedule, the TaylorSeer pattern of
    the budget and the search's ``leaders`` (its next best schedules), where they differ from it."""
    out = [schedule]
    if searched:
        out += [interval_schedule(num_steps, full_steps), taylorseer_pattern(num_steps, full_steps), *leaders]
    return list(dict.fromkeys(out))


def score_starts(schedules: list[Schedule], num_steps: int,
                 evaluate: Callable[[CoefficientTable], float]) -> list[tuple[float, CoefficientTable, dict[str, Any]]]:
    """Every preset of :data:`PRESET_STARTS` on every schedule, scored by ``evaluate`` (higher is
    better): ``(score, table, record)`` per start, in that order; the record is what calibration
    stores among its fit variants (``preset``, ``schedule``, ``K``, ``psnr_db``...)."""
    out = []
    for sched in schedules:
        for name in PRESET_STARTS:
            table = preset(name, sched, num_steps, K=PRESET_K)
            score = evaluate(table)
            out.append((score, table, {"preset": name, "schedule": list(sched), "K": PRESET_K, "exact": 0,
                                       "latents": False, "psnr_db": score}))
    return out
