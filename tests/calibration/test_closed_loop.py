"""Closed-loop refinement: its directions keep polynomial exactness, and Gauss-Newton finds the
known minimiser of a residual that is linear in the weights (checked against numpy's lstsq)."""

from __future__ import annotations

import numpy as np
import pytest

from l2p.calibration.closed_loop import moved, null_directions, refine
from l2p.calibration.fit import FitConfig, fit_table
from l2p.predictor.presets import preset
from l2p.predictor.table import CoefficientTable

SCHEDULE = (0, 1, 2, 3, 7, 11, 15, 19)


def _fitted(exact: int, K: int = 4) -> CoefficientTable:
    rng = np.random.default_rng(0)
    i_ax = np.arange(20, dtype=np.float64)[None, :, None]
    F = np.sin(i_ax / 4 + rng.standard_normal((6, 1, 30))) + 0.05 * rng.standard_normal((6, 20, 30))
    return fit_table(F, None, SCHEDULE, FitConfig(K=K, uses_latents=False, exact=exact))[0]


@pytest.mark.parametrize("exact,K", [(1, 4), (2, 4), (0, 3), (-1, 3)])
def test_directions_keep_polynomial_exactness(exact: int, K: int) -> None:
    table = _fitted(exact, K)
    dirs = null_directions(table, exact)
    forecast = [i for i in range(20) if i not in SCHEDULE]
    # one direction per weight the constraints leave free: K - (exact + 1) once the history is full
    full = [i for i in forecast if len(table.history(i)) == K]
    assert sum(i in full for i, _ in dirs) == len(full) * (K - (exact + 1))
    assert all(np.isclose(np.linalg.norm(v), 1.0) for _, v in dirs)
    far = moved(table, dirs, np.random.default_rng(1).normal(0, 3, len(dirs)))
    assert not np.allclose(far.W, table.W)
    if exact < 0:
        return
    coef = np.random.default_rng(2).standard_normal(exact + 1)
    poly = sum(c * np.arange(20.0) ** p for p, c in enumerate(coef))  # (20,), degree `exact`
    for i in forecast:
        hist = far.history(i)
        np.testing.assert_allclose(far.predict(i, [poly[s:s + 1] for s in hist]), poly[i:i + 1], rtol=1e-9, atol=1e-8)


def test_gauss_newton_reaches_the_least_squares_minimiser() -> None:
    """residual = A theta - b over the free weights: one nearly undamped round lands on lstsq's answer."""
    table = _fitted(1)
    dirs = null_directions(table, 1)
    rng = np.random.default_rng(3)
    A, b = rng.standard_normal((200, len(dirs))), rng.standard_normal(200)
    # theta of a table relative to the fitted one (the directions are orthonormal per step)
    theta = lambda t: np.array([v @ (t.W[i] - table.W[i]) for i, v in dirs])  # noqa: E731
    residual = lambda t: A @ theta(t) - b  # noqa: E731
    score = lambda t: -float(np.sum(residual(t) ** 2))  # noqa: E731
    best, s, rec = refine(table, dirs, lambda t: (residual(t), score(t)), score(table), rounds=1, damping=1e-12)
    want = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(theta(best), want, rtol=1e-5, atol=1e-6)
    assert len(rec) == 1 and rec[0]["kept"] and s == pytest.approx(score(best))


def test_a_probe_on_part_of_the_runs_gives_the_jacobian() -> None:
    """With ``probe`` (the residual of a subset of the runs) the step is the lstsq answer of that
    subset, and the candidate is scored by the full ``measure``: 100 of 200 residual rows of a
    consistent linear system give its exact solution, while the score sees all rows."""
    table = _fitted(1)
    dirs = null_directions(table, 1)
    rng = np.random.default_rng(4)
    A, truth = rng.standard_normal((200, len(dirs))), rng.standard_normal(len(dirs))
    b = A @ truth
    theta = lambda t: np.array([v @ (t.W[i] - table.W[i]) for i, v in dirs])  # noqa: E731
    residual = lambda t: A @ theta(t) - b  # noqa: E731
    score = lambda t: -float(np.sum(residual(t) ** 2))  # noqa: E731
    probed = []
    best, s, rec = refine(table, dirs, lambda t: (residual(t), score(t)), score(table), rounds=1, damping=1e-12,
                          probe=lambda t: probed.append(1) or residual(t)[:100])
    np.testing.assert_allclose(theta(best), truth, rtol=1e-5, atol=1e-6)
    assert len(probed) == len(dirs) + 2  # the base, one per direction, the kept candidate
    assert rec[0]["kept"] and s == pytest.approx(score(best))


def test_a_round_that_does_not_improve_is_dropped() -> None:
    table = preset("lagrange2", SCHEDULE, 20, K=4)
    dirs = null_directions(table, 1)
    best, s, rec = refine(table, dirs, lambda t: (t.W.reshape(-1) - 1.0, 0.0), 5.0, rounds=3)
    assert best is table and s == 5.0
    assert rec == [{"round": 1, "parameters": len(dirs), "psnr_db": 0.0, "kept": False, "step_scale": 1.0}]
    assert refine(table, [], lambda t: (np.zeros(1), 1.0), 2.0) == (table, 2.0, [])


def test_a_step_that_overshoots_is_shortened() -> None:
    """A residual with a quadratic term (``A theta - b + 5 |theta|^2``): the Gauss-Newton step of its
    linearisation at the fitted table (lstsq's answer) makes the score worse, half of it better, and
    the round keeps the half step."""
    table = _fitted(1)
    dirs = null_directions(table, 1)
    rng = np.random.default_rng(5)
    A, b = rng.standard_normal((200, len(dirs))), rng.standard_normal(200)
    theta = lambda t: np.array([v @ (t.W[i] - table.W[i]) for i, v in dirs])  # noqa: E731
    residual = lambda t: A @ theta(t) - b + 5.0 * float(theta(t) @ theta(t))  # noqa: E731
    score = lambda t: -float(np.sum(residual(t) ** 2))  # noqa: E731
    full = np.linalg.lstsq(A, b, rcond=None)[0]
    assert score(moved(table, dirs, full)) < score(table) < score(moved(table, dirs, 0.5 * full))
    best, s, rec = refine(table, dirs, lambda t: (residual(t), score(t)), score(table), rounds=1, damping=1e-12)
    np.testing.assert_allclose(theta(best), 0.5 * full, rtol=0.05, atol=1e-3)  # J by forward differences
    assert rec[0]["kept"] and rec[0]["step_scale"] == 0.5 and s == pytest.approx(score(best))
