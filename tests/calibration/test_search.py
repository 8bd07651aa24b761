"""The schedule search on objectives whose optimum is known: valid schedules of the budget's
count, never worse than the even interval, and a refinement that only ever improves."""

from __future__ import annotations

import numpy as np
import pytest

from l2p.calibration.search import candidate_schedules, moved, refine_schedule, search_schedule
from l2p.predictor.schedule import interval_schedule, taylorseer_cache_schedule, validate_schedule

FLUX_SIGMAS = np.linspace(1.0, 0.02, 50)
SHIFTED = 3 * FLUX_SIGMAS / (1 + 2 * FLUX_SIGMAS)  # SD3-style shift: tiny sigma steps at the end


def _valid(s: tuple[int, ...], n: int, m: int) -> None:
    assert validate_schedule(s, n, full_steps=m, ordered=True) == s


@pytest.mark.parametrize("n, m", [(50, 10), (50, 7), (50, 5), (50, 20), (12, 4), (10, 2), (10, 1), (6, 6)])
@pytest.mark.parametrize("levels", [None, SHIFTED])
def test_family_is_valid_and_covers_the_published_shapes(n: int, m: int, levels: np.ndarray | None) -> None:
    lv = None if levels is None else np.interp(np.linspace(0, 49, n), np.arange(50), levels)
    fam = candidate_schedules(n, m, lv)
    assert next(iter(fam)) == interval_schedule(n, m) and fam[interval_schedule(n, m)] == "interval"
    for s in fam:
        _valid(s, n, m)
    if (n, m) == (50, 10):
        assert taylorseer_cache_schedule(50, 7, 3) in fam  # diffusers' TaylorSeer at 10/50
        assert any(s[-1] < n - 1 for s in fam) and any(s[:3] == (0, 1, 2) for s in fam)
        assert len(fam) <= 45  # the search's cost: one closed-loop score per member


def test_sigma_spacing_follows_the_noise_levels() -> None:
    fam = candidate_schedules(50, 10, SHIFTED)
    sig = [s for s, label in fam.items() if label == "warm-up 1, tail 0, sigma spacing"][0]
    steps = np.diff(SHIFTED[list(sig)])  # equal sigma steps between the computed steps, up to rounding
    assert np.ptp(steps) < 0.35 * np.abs(steps).mean()


def test_moves() -> None:
    s = (0, 3, 5, 9)
    assert moved(s, 1, 1, 10) == (0, 4, 5, 9) and moved(s, 1, -2, 10) == (0, 1, 5, 9)
    assert moved(s, 1, 2, 10) is None and moved(s, 1, -3, 10) is None  # onto a neighbour / step 0
    assert moved(s, 3, 1, 10) is None and moved(s, 3, -1, 10) == (0, 3, 5, 8)  # stays below N


def _distance_objective(target: tuple[int, ...]):  # type: ignore[no-untyped-def]
    calls: list[tuple[int, ...]] = []

    def f(s: tuple[int, ...]) -> float:
        calls.append(s)
        return -float(np.abs(np.asarray(s) - np.asarray(target)).sum())
    return f, calls


def test_refinement_only_improves_and_respects_its_budget() -> None:
    target = (0, 1, 2, 4, 11, 18, 25, 32, 39, 46)
    f, calls = _distance_objective(target)
    start = interval_schedule(50, 10)
    best, score, moves = refine_schedule(start, f(start), f, 50, max_evals=500)
    assert best == target and score == 0.0
    gains = [mv["gain_db"] for mv in moves]
    assert all(g > 0 for g in gains) and [mv["psnr_db"] for mv in moves] == sorted(mv["psnr_db"] for mv in moves)
    calls.clear()
    _, limited, _ = refine_schedule(start, f(start), f, 50, max_evals=7)
    assert len(calls) <= 8 and f(start) <= limited  # the start's own score, then at most 7 new ones
    # a local optimum: a full round without gains stops the search at 2 evaluations per step
    calls.clear()
    same, s0, none = refine_schedule(target, 0.0, f, 50, max_evals=500)
    assert same == target and s0 == 0.0 and not none and len(calls) <= 2 * (len(target) - 1)


def test_refinement_never_returns_worse_than_its_start() -> None:
    rng = np.random.default_rng(0)
    table = {}

    def noisy(s: tuple[int, ...]) -> float:  # an arbitrary objective
        return table.setdefault(s, float(rng.standard_normal()))
    start = interval_schedule(30, 6)
    best, score, moves = refine_schedule(start, noisy(start), noisy, 30, max_evals=40)
    assert score >= noisy(start) and score == noisy(best)
    _valid(best, 30, 6)


@pytest.mark.parametrize("m", [10, 7, 5])
def test_search_returns_a_valid_schedule_at_least_as_good_as_the_interval(m: int) -> None:
    target = taylorseer_cache_schedule(50, {10: 7, 7: 14, 5: 15}[m], {10: 3, 7: 3, 5: 1}[m])
    assert len(target) == m
    f, calls = _distance_objective(target)
    best, score, record = search_schedule(50, m, f, levels=SHIFTED)  # default refinement budget
    _valid(best, 50, m)
    assert score >= f(interval_schedule(50, m)) and score == f(best)
    scores = {tuple(c["schedule"]): c["psnr_db"] for c in record["candidates"]}
    assert score >= max(scores.values())  # the refinement starts at the best member
    leaders = [tuple(x) for x in record["leaders"]]  # the next best members, for a second look
    assert len(leaders) == 3 and best not in leaders and all(x in scores for x in leaders)
    ranked = [tuple(c["schedule"]) for c in record["candidates"]]  # best first; the first is the start
    assert leaders == [x for x in ranked if x not in (ranked[0], best)][:3]
    assert record["evaluations"] == len(set(calls) - {best} | {best}) <= len(scores) + 3 * (m - 1)
    if m == 10:
        assert best == target  # in the family
    best, score, _ = search_schedule(50, m, f, levels=SHIFTED, refine_evals=500)
    assert best == target  # reached by the refinement


def test_refinement_takes_no_move_within_the_scatter_of_the_runs() -> None:
    """Per-run scores: a gain smaller than the scatter of the paired gains is not a move."""
    target = (0, 1, 2, 4, 11, 18, 25, 32, 39, 46)
    start = interval_schedule(50, 10)
    rng = np.random.default_rng(1)

    def per_run(scatter: float):  # type: ignore[no-untyped-def]
        cache: dict = {}

        def f(s: tuple[int, ...]) -> np.ndarray:
            dist = float(np.abs(np.asarray(s) - np.asarray(target)).sum())
            return cache.setdefault(s, -dist + scatter * rng.standard_normal(8))
        return f
    quiet = per_run(0.01)
    best, score, moves = refine_schedule(start, quiet(start), quiet, 50, max_evals=500)
    assert best == target and moves  # gains of 1 per move stand far out of a scatter of 0.01
    loud = per_run(20.0)
    best, score, moves = refine_schedule(start, loud(start), loud, 50, max_evals=500)
    for mv in moves:  # any move taken cleared a standard error of about 20 * sqrt(2 / 8) = 10
        assert mv["gain_db"] > 3
    assert len(moves) < 5


def test_search_refines_the_best_formula_where_it_beats_the_fit() -> None:
    """A second objective (a fixed formula) scored on the shortlist wins and is refined with its own objective."""
    fit_target, formula_target = taylorseer_cache_schedule(50, 7, 3), interval_schedule(50, 10)
    fit, _ = _distance_objective(fit_target)
    formula, calls = _distance_objective((0, 6, 11, 16, 21, 27, 32, 37, 42, 48))  # near the interval schedule

    def shifted(s: tuple[int, ...]) -> float:
        return fit(s) - 100.0  # the fit is far worse everywhere
    best, score, record = search_schedule(50, 10, shifted, levels=SHIFTED, others={"formula": formula}, kind="fit")
    assert record["kind"] == "formula" and best == (0, 6, 11, 16, 21, 27, 32, 37, 42, 48) and score == 0.0
    assert formula_target in {tuple(o["schedule"]) for o in record["others"]}
    # the formula scores the 3 best members, the interval and the TaylorSeer patterns, then refines
    assert len(calls) == len(set(calls)) <= 3 + 1 + 4 + 3 * 9
    assert all(c["psnr_db"] <= -100 for c in record["candidates"])  # the family is scored by the fit
    best, _, record = search_schedule(50, 10, fit, levels=SHIFTED, others={"formula": lambda s: formula(s) - 100})
    assert record["kind"] == "fit" and best == fit_target
