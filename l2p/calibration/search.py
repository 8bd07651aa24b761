"""Schedule search under a full-step budget: which ``M`` of the ``N`` steps run the transformer.

Two stages, both scored by a caller-given objective (in ``l2p calibrate``: fit L2P's weights for the
candidate on the fit split, run the cached sampler closed loop on the score split, PSNR against full
compute; higher is better):

1. **Family**: every schedule of :func:`candidate_schedules`: a warm-up prefix ``0 .. w-1``, the
   last ``tail`` steps forecast or computed, the other computed steps spaced uniformly in step index,
   uniformly in the scheduler's noise level (sigma), or by a power law, starting one regular gap or
   two steps after the warm-up; and diffusers' TaylorSeer cache pattern at this budget
   (:func:`~l2p.predictor.schedule.taylorseer_cache_schedule`, e.g. ``0,1,2,4,11,...,46`` at 10/50).
   The even interval schedule of the presets is always among them.
2. **Refinement** (:func:`refine_schedule`): from the best, move one computed step (never step 0)
   by up to ±3, one step at a time while that improves the score, within a bounded number of
   evaluations.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..predictor.schedule import Schedule, interval_schedule, place_steps, taylorseer_cache_schedule
from ..progress import BarFactory, bar_of, no_bar
from ..sampling.pipeline import Sampler
from ..sampling.schedulers import make_scheduler

#: warm-up prefixes tried (``w = 1``: only step 0), at most half the budget
WARMUPS = (1, 2, 3, 4)
#: spacings of the computed steps after the warm-up: (name, kind, power-law exponent)
SPACINGS = (("index", "power", 1.0), ("sigma", "sigma", 1.0), ("power 1.4", "power", 1.4),
            ("power 0.75", "power", 0.75))

Objective = Callable[[Schedule], float]


def _tails(num_steps: int, full_steps: int, w: int) -> list[int]:
    """How many final steps are left to the forecast: none, and about half a regular gap (the
    refinement moves the last computed step by up to 3 more)."""
    gap = (num_steps - w) / max(full_steps - w, 1)
    return sorted({0, int(gap / 2)})


def _spread(levels: np.ndarray, first: float, last: int, count: int, kind: str, exponent: float,
            start_inclusive: bool) -> list[float]:
    """``count`` target positions from ``first`` to ``last`` (``first`` itself only when
    ``start_inclusive``): uniform in ``u ** exponent`` over the step index, or uniform in the noise level."""
    if start_inclusive:
        u = np.linspace(0.0, 1.0, count) if count > 1 else np.ones(1)
    else:
        u = np.arange(1, count + 1) / count
    if kind == "power":
        return list(first + (last - first) * u**exponent)
    idx = np.arange(len(levels), dtype=np.float64)
    lo = float(np.interp(first, idx, levels))
    target = lo + (float(levels[last]) - lo) * u  # (count,) evenly spaced levels
    # levels decrease with the step index: interpolate the index on the reversed (increasing) levels
    return list(np.interp(-target, -levels, idx))


def candidate_schedules(num_steps: int, full_steps: int, levels: np.ndarray | None = None) -> dict[Schedule, str]:
    """The family of stage 1, each schedule with a description, in a fixed order (no duplicates).

    Args:
        num_steps: ``N``.
        full_steps: ``M``, the computed steps of every candidate (``1 <= M <= N``).
        levels: float ``(N,)`` the scheduler's noise level per step (sigma, or the timestep),
            decreasing; ``None`` leaves out the sigma spacing.

    Returns:
        schedule -> e.g. ``"warm-up 3, tail 3, sigma spacing"``; the first is the even interval schedule.
    """
    out: dict[Schedule, str] = {interval_schedule(num_steps, full_steps): "interval"}
    warmups = [w for w in WARMUPS if w == 1 or 2 * w <= full_steps]
    for w in warmups:
        r = full_steps - w
        if r < 1:
            break
        for tail in _tails(num_steps, full_steps, w):
            last = num_steps - 1 - tail
            for lead in ("gap", "2"):
                first = w + 1 if lead == "2" else w - 1
                if last - first + 1 < r or (lead == "2" and r < 2):
                    continue
                for name, kind, p in SPACINGS:
                    if (kind == "sigma" and levels is None) or (lead == "2" and name != "index"):
                        continue
                    targets = _spread(levels if levels is not None else np.zeros(0), first, last, r, kind, p,
                                      start_inclusive=lead == "2")
                    steps = place_steps(targets, first if lead == "2" else w, last)
                    label = f"warm-up {w}, tail {tail}, {name} spacing" + (", lead 2" if lead == "2" else "")
                    out.setdefault((*range(w), *steps), label)
    for w in warmups:  # diffusers' TaylorSeer cache pattern: warm-up, skip one, then every `interval`;
        fits = [i for i in range(1, num_steps)  # the widest interval that makes exactly M computed steps
                if w < num_steps and len(taylorseer_cache_schedule(num_steps, i, w)) == full_steps]
        if fits:
            out.setdefault(taylorseer_cache_schedule(num_steps, fits[-1], w),
                           f"TaylorSeer cache pattern (warm-up {w}, interval {fits[-1]})")
    return out


def moved(schedule: Schedule, j: int, shift: int, num_steps: int) -> Schedule | None:
    """``schedule`` with its ``j``-th computed step (``j >= 1``: never step 0) moved by ``shift``;
    ``None`` if that step would reach a neighbour or leave ``[1, N-1]``."""
    lo = schedule[j - 1]
    hi = schedule[j + 1] if j + 1 < len(schedule) else num_steps
    s = schedule[j] + shift
    return (*schedule[:j], s, *schedule[j + 1:]) if lo < s < hi else None


def refine_schedule(start: Schedule, start_score: float, objective: Objective, num_steps: int,
                    max_evals: int, tried: dict[Schedule, float] | None = None, max_shift: int = 3,
                    min_gain: float = 1e-3,
                    on_eval: Callable[[], None] = lambda: None) -> tuple[Schedule, float, list[dict[str, Any]]]:
    """Local search: move one computed step at a time while the score improves.

    The computed steps after step 0 are visited in turn, round robin. At each, the step moves one
    later while that improves the score, up to ``max_shift`` steps; if its first move did not
    improve, one earlier likewise. The search stops after a full round without improvement or
    after ``max_evals`` new evaluations.

    Args:
        start, start_score: where to begin and its score.
        objective: schedule -> score (higher is better).
        max_evals: at most this many new evaluations (schedules in ``tried`` cost none).
        tried: scores already known (updated in place).
        min_gain: a move is taken only if it raises the score by more than this.
        on_eval: called after each new evaluation (progress).

    Returns:
        the best schedule, its score (never below ``start_score``; it rises with every move
        taken) and one record per move taken.
    """
    tried = {} if tried is None else tried
    tried.setdefault(start, start_score)
    best, best_score = start, start_score
    moves: list[dict[str, Any]] = []
    evals, j, idle, positions = 0, 1, 0, len(start) - 1
    while positions and idle < positions:
        improved = False
        for sign in (1, -1):
            for _ in range(max_shift):
                cand = moved(best, j, sign, num_steps)
                if cand is None:
                    break
                if cand not in tried:
                    if evals >= max_evals:
                        return best, best_score, moves
                    tried[cand] = objective(cand)
                    evals += 1
                    on_eval()
                if tried[cand] <= best_score + min_gain:
                    break
                moves.append({"schedule": list(cand), "psnr_db": tried[cand], "gain_db": tried[cand] - best_score})
                best, best_score, improved = cand, tried[cand], True
            if improved:
                break
        idle = 0 if improved else idle + 1
        j = j % positions + 1
    return best, best_score, moves


def search_schedule(num_steps: int, full_steps: int, objective: Objective, levels: np.ndarray | None = None,
                    refine_evals: int | None = None, progress: BarFactory = no_bar,
                    log: Callable[[str], None] = lambda s: None) -> tuple[Schedule, float, dict[str, Any]]:
    """Stage 1 over :func:`candidate_schedules`, then :func:`refine_schedule` from the best.

    Args:
        refine_evals: evaluation budget of the refinement; default ``3 * (M - 1)`` (one round
            costs ``2 * (M - 1)`` when nothing improves).

    Returns:
        the chosen schedule, its score, and a record: ``candidates`` (every family member with its
        description and score, best first), ``refinement`` (the moves taken), ``evaluations``,
        ``psnr_db`` (the chosen one's score) and ``interval`` (the even interval schedule's).
    """
    family = candidate_schedules(num_steps, full_steps, levels)
    tried: dict[Schedule, float] = {}
    with bar_of(progress, len(family), "schedule search: family", "schedule") as bar:
        for sched in family:
            tried[sched] = objective(sched)
            bar.update()
    ranked = sorted(family, key=lambda s: -tried[s])
    start = ranked[0]
    log(f"schedule search: {len(family)} candidates; best {family[start]} {list(start)} -> {tried[start]:.2f} dB, "
        f"even interval {tried[next(iter(family))]:.2f} dB")
    budget = 3 * (full_steps - 1) if refine_evals is None else refine_evals
    with bar_of(progress, budget, "schedule search: refinement", "schedule") as bar:
        best, score, moves = refine_schedule(start, tried[start], objective, num_steps, budget, tried,
                                             on_eval=bar.update)
    log(f"schedule refinement: {len(moves)} move(s) -> {list(best)} {score:.2f} dB "
        f"({len(tried)} schedules evaluated in all)")
    interval = next(iter(family))
    record = {"candidates": [{"schedule": list(s), "family": family[s], "psnr_db": tried[s]} for s in ranked],
              "refinement": moves, "evaluations": len(tried), "psnr_db": score,
              "interval": {"schedule": list(interval), "psnr_db": tried[interval]}}
    return best, score, record


def noise_levels(sampler: Sampler, steps: int) -> np.ndarray | None:
    """float64 ``(N,)``: the noise level of each of the ``steps`` sampling steps as the sampler's
    scheduler sets them (sigma; for DDPM-style schedulers ``sqrt((1 - a) / a)`` of the cumulative
    alpha ``a``; else the timestep), or ``None`` where it does not decrease strictly."""
    sched = make_scheduler(sampler.bundle.scheduler_config())
    sampler.rt.set_timesteps(sched, steps)
    sigmas = getattr(sched, "sigmas", None)
    if sigmas is not None and len(sigmas) > steps:
        lv = np.asarray(sigmas[:steps], np.float64)
    elif getattr(sched, "alphas_cumprod", None) is not None:
        a = np.asarray(sched.alphas_cumprod, np.float64)[np.asarray(sched.timesteps[:steps], np.int64)]
        lv = np.sqrt((1 - a) / a)
    else:
        lv = np.asarray(sched.timesteps[:steps], np.float64)
    return lv if len(lv) == steps and bool(np.all(np.diff(lv) < 0)) else None
