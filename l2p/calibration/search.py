"""Schedule search under a full-step budget: which ``M`` of the ``N`` steps run the transformer.

Three stages, scored by caller-given objectives (in ``l2p calibrate``: fit L2P's weights for the
candidate on the fit split, or take a fixed formula's table, run the cached sampler closed loop on
the score split; per-run PSNR against full compute; higher is better):

1. **Family**: every schedule of :func:`candidate_schedules`: a warm-up prefix ``0 .. w-1``, the
   last ``tail`` steps forecast or computed, the other computed steps spaced uniformly in step index,
   uniformly in the scheduler's noise level (sigma), or by a power law, starting one regular gap or
   two steps after the warm-up; and diffusers' TaylorSeer cache pattern at this budget
   (:func:`~l2p.predictor.schedule.taylorseer_cache_schedule`, e.g. ``0,1,2,4,11,...,46`` at 10/50).
   The even interval schedule of the presets is always among them. Scored by the main objective.
2. **Formulas**: the other objectives on the best few members, the interval and the pattern: at
   high acceleration a formula's table can beat the fit on a schedule the fit ranks lower.
3. **Refinement** (:func:`refine_schedule`): from the best (schedule, objective) pair, move one
   computed step (never step 0) by up to ±3, one step at a time while that improves the score by
   more than the scatter of the per-run gains, within a bounded number of evaluations.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

#: schedule -> its score, or per-run scores (float64 ``(R,)``, the same runs for every schedule) whose mean is
#: the score; with per-run scores the refinement takes a move only when its gain stands out of their scatter
Objective = Callable[[Schedule], "float | np.ndarray"]
#: standard errors of the paired per-run gain a refinement move must clear
NOISE_Z = 1.0
#: the other objectives (fixed formulas) are scored on this many best family members
OTHERS_TOP = 3
#: how many runner-up schedules the search reports (``leaders``)
LEADERS = 3


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


def runs_of(value: float | np.ndarray) -> np.ndarray:
    """An objective's value as float64 per-run scores ``(R,)`` (a plain score is one run)."""
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


def clear_gain(new: np.ndarray, old: np.ndarray, min_gain: float, noise_z: float) -> bool:
    """Whether ``new`` beats ``old`` (per-run scores of the same runs, or plain scores) by more than
    ``min_gain`` plus ``noise_z`` standard errors of the mean paired difference: a move that only
    rides the scatter of a few runs is not taken."""
    d = new - old if new.shape == old.shape else np.atleast_1d(new.mean() - old.mean())
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()) > min_gain + noise_z * se


def refine_schedule(start: Schedule, start_score: float | np.ndarray, objective: Objective, num_steps: int,
                    max_evals: int, tried: dict[Schedule, np.ndarray] | None = None, max_shift: int = 3,
                    min_gain: float = 1e-3, noise_z: float = NOISE_Z,
                    on_eval: Callable[[], None] = lambda: None) -> tuple[Schedule, float, list[dict[str, Any]]]:
    """Local search: move one computed step at a time while the score clearly improves.

    The computed steps after step 0 are visited in turn, round robin. At each, the step moves one
    later while that improves the score, up to ``max_shift`` steps; if its first move did not
    improve, one earlier likewise. The search stops after a full round without improvement or
    after ``max_evals`` new evaluations.

    Args:
        start, start_score: where to begin and its score (or per-run scores).
        objective: schedule -> score, or per-run scores whose mean is the score (higher is better).
        max_evals: at most this many new evaluations (schedules in ``tried`` cost none).
        tried: per-run scores already known (updated in place).
        min_gain, noise_z: a move is taken only if it raises the score by more than ``min_gain``
            plus ``noise_z`` standard errors of the paired per-run gain (:func:`clear_gain`).
        on_eval: called after each new evaluation (progress).

    Returns:
        the best schedule, its score (never below ``start_score``; it rises with every move
        taken) and one record per move taken.
    """
    tried = {} if tried is None else tried
    tried.setdefault(start, runs_of(start_score))
    best = start
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
                        return best, float(tried[best].mean()), moves
                    tried[cand] = runs_of(objective(cand))
                    evals += 1
                    on_eval()
                if not clear_gain(tried[cand], tried[best], min_gain, noise_z):
                    break
                new, old = float(tried[cand].mean()), float(tried[best].mean())
                moves.append({"schedule": list(cand), "psnr_db": new, "gain_db": new - old})
                best, improved = cand, True
            if improved:
                break
        idle = 0 if improved else idle + 1
        j = j % positions + 1
    return best, float(tried[best].mean()), moves


def search_schedule(num_steps: int, full_steps: int, objective: Objective, levels: np.ndarray | None = None,
                    refine_evals: int | None = None, progress: BarFactory = no_bar,
                    log: Callable[[str], None] = lambda s: None, kind: str = "fit",
                    others: Mapping[str, Objective] | None = None,
                    others_top: int = OTHERS_TOP) -> tuple[Schedule, float, dict[str, Any]]:
    """Stage 1 over :func:`candidate_schedules`, then :func:`refine_schedule` from the best.

    Args:
        objective: scores every family member (named ``kind``: in calibration, the least-squares fit).
        others: more objectives by name (in calibration, the fixed formulas' tables), each scored on
            the ``others_top`` best members by ``objective`` and on the interval schedule and the
            TaylorSeer pattern; the refinement starts from the best (schedule, objective) pair of all
            and uses that pair's objective, so a schedule that suits a formula better than the fit is
            found too.
        refine_evals: evaluation budget of the refinement; default ``3 * (M - 1)`` (one round
            costs ``2 * (M - 1)`` when nothing improves).

    Returns:
        the chosen schedule, its score, and a record: ``candidates`` (every family member with its
        description and score by ``objective``, best first), ``others`` (the other objectives'
        scores), ``kind`` (the objective the chosen schedule was refined with), ``refinement``
        (the moves taken), ``leaders`` (the :data:`LEADERS` best other family members by their
        best score of any objective, for the caller to score again on more runs), ``evaluations``, ``psnr_db`` (the chosen one's score) and ``interval``
        (the even interval schedule's score by ``objective``).
    """
    family = candidate_schedules(num_steps, full_steps, levels)
    others = dict(others or {})
    scores: dict[str, dict[Schedule, np.ndarray]] = {kind: {}, **{k: {} for k in others}}
    tried = scores[kind]
    with bar_of(progress, len(family), "schedule search: family", "schedule") as bar:
        for sched in family:
            tried[sched] = runs_of(objective(sched))
            bar.update()
    ranked = sorted(family, key=lambda s: -tried[s].mean())
    fixed = [s for s in family if family[s] == "interval" or family[s].startswith("TaylorSeer")]
    shortlist = list(dict.fromkeys([*ranked[:others_top], *fixed]))
    with bar_of(progress, len(shortlist) * len(others), "schedule search: formulas", "schedule") as bar:
        for name, obj in others.items():
            for sched in shortlist:
                scores[name][sched] = runs_of(obj(sched))
                bar.update()
    best_kind, start = max(((k, s) for k in scores for s in scores[k]), key=lambda ks: scores[ks[0]][ks[1]].mean())
    start_runs = scores[best_kind][start]
    log(f"schedule search: {len(family)} candidates; best {family[start]} {list(start)} by {best_kind} -> "
        f"{start_runs.mean():.2f} dB, even interval {tried[next(iter(family))].mean():.2f} dB ({kind})")
    budget = 3 * (full_steps - 1) if refine_evals is None else refine_evals
    refine_obj = objective if best_kind == kind else others[best_kind]
    with bar_of(progress, budget, "schedule search: refinement", "schedule") as bar:
        best, score, moves = refine_schedule(start, start_runs, refine_obj, num_steps, budget, scores[best_kind],
                                             on_eval=bar.update)
    evaluations = sum(len(v) for v in scores.values())
    log(f"schedule refinement: {len(moves)} move(s) -> {list(best)} {score:.2f} dB ({best_kind}; "
        f"{evaluations} evaluations in all)")
    interval = next(iter(family))
    top = {sch: max(float(v[sch].mean()) for v in scores.values() if sch in v) for sch in family}
    leaders = [list(sch) for sch in sorted(top, key=lambda sch: -top[sch]) if sch not in (start, best)][:LEADERS]
    record = {"candidates": [{"schedule": list(s), "family": family[s], "psnr_db": float(tried[s].mean())}
                             for s in ranked],
              "others": [{"schedule": list(s), "kind": k, "psnr_db": float(v.mean())}
                         for k in others for s, v in scores[k].items()],
              "kind": best_kind, "leaders": leaders, "refinement": moves, "evaluations": evaluations, "psnr_db": score,
              "interval": {"schedule": list(interval), "psnr_db": float(tried[interval].mean())}}
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
