"""The least-squares fit against known answers: exact polynomial trajectories, gradient vs. closed form."""

from __future__ import annotations

import numpy as np
import pytest

from l2p.calibration.fidelity import projection_fidelity
from l2p.calibration.fit import FitConfig, fit_table
from l2p.errors import InputError
from l2p.predictor.presets import lagrange_weights


def quadratic_trajectories(T: int = 6, N: int = 20, D: int = 40, seed: int = 0) -> np.ndarray:
    """F_t(i) = a_t + b_t * i + c_t * i^2 with random vectors: (T, N, D)."""
    rng = np.random.default_rng(seed)
    a, b, c = (rng.standard_normal((T, 1, D)) for _ in range(3))
    i = np.arange(N, dtype=np.float64)[None, :, None]
    return a + b * i + c * i**2 / N


def test_recovers_lagrange_weights_on_quadratics() -> None:
    F = quadratic_trajectories()
    schedule = (0, 1, 2, 6, 11, 15, 19)
    table, stats = fit_table(F, None, schedule, FitConfig(K=3, uses_latents=False, ridge=0.0))
    for i in range(20):
        if i in schedule or i < 3:
            continue
        hist = table.history(i)
        # the quadratic lies exactly in the span of 3 history features: the unique weights are
        # Lagrange extrapolation's, computed here from the formula, not by the fit
        np.testing.assert_allclose(table.W[i, :3], lagrange_weights(hist, i, 2), rtol=1e-6, atol=1e-8)
        assert stats["rel_residual"][str(i)] < 1e-8


def test_gradient_solver_matches_closed_form() -> None:
    rng = np.random.default_rng(1)
    F = quadratic_trajectories() + 0.05 * rng.standard_normal((6, 20, 40))
    X = rng.standard_normal((6, 20, 40))
    schedule = (0, 4, 9, 14, 19)
    t1, _ = fit_table(F, X, schedule, FitConfig(K=3, ridge=1e-3))
    t2, _ = fit_table(F, X, schedule, FitConfig(K=3, ridge=1e-3, solver="gd", gd_iters=20000))
    np.testing.assert_allclose(t2.W, t1.W, atol=2e-3)
    np.testing.assert_allclose(t2.V, t1.V, atol=2e-3)
    assert t1.uses_latents and np.abs(t1.U).sum() > 0


def test_latent_terms_are_used_when_they_explain_the_target() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((8, 12, 30))
    F = 0.5 * X + 0.01 * rng.standard_normal(X.shape)  # the feature is mostly the current latent
    table, stats = fit_table(F, X, (0, 5, 10), FitConfig(K=2, exact=-1))
    for i in (3, 7, 11):
        assert abs(table.V[i] - 0.5) < 0.05
        assert stats["rel_residual"][str(i)] < 0.1


def test_bad_settings() -> None:
    with pytest.raises(InputError):
        FitConfig(solver="adam")
    with pytest.raises(InputError):
        FitConfig(K=0)
    with pytest.raises(InputError, match="shaped like"):
        fit_table(np.zeros((2, 5, 4)), np.zeros((2, 5, 3)), (0, 2), FitConfig())


def test_projection_fidelity() -> None:
    F = quadratic_trajectories(T=3, N=12, D=50)
    fid = projection_fidelity(F, K=3)
    assert np.isnan(fid[0]) and np.all(fid[3:] > 0.999999)
    noise = np.random.default_rng(0).standard_normal((3, 12, 400))
    assert np.all(projection_fidelity(noise, K=3)[3:] < 0.2)  # ~sqrt(3/400) for unrelated vectors


def test_outside_span_is_the_best_linear_forecast_error() -> None:
    """sqrt(1 - fidelity^2) equals the relative residual of the least-squares forecast from the last K features."""
    from l2p.calibration.fidelity import fidelity_table, outside_span

    rng = np.random.default_rng(1)
    F = quadratic_trajectories(T=1, N=10, D=60) + 0.05 * rng.standard_normal((1, 10, 60))
    got = outside_span(projection_fidelity(F, K=3))
    for i in range(1, 10):
        H = F[0, max(0, i - 3):i].T  # (D, k)
        c = np.linalg.lstsq(H, F[0, i], rcond=None)[0]
        want = np.linalg.norm(F[0, i] - H @ c) / np.linalg.norm(F[0, i])
        assert abs(got[i] - want) < 1e-6 * max(want, 1e-3)
    assert np.isnan(got[0]) and "outside" in fidelity_table(projection_fidelity(F, K=3))


def test_affine_constraint_and_prior() -> None:
    rng = np.random.default_rng(3)
    F = quadratic_trajectories() + 0.3 * rng.standard_normal((6, 20, 40))
    X = rng.standard_normal((6, 20, 40))
    schedule = (0, 4, 9, 14, 19)
    table, _ = fit_table(F, X, schedule, FitConfig(K=3, ridge=1e-3))
    for i in range(20):
        if i not in schedule:
            assert abs(table.W[i].sum() - 1) < 1e-9 and abs(table.U[i].sum() + table.V[i]) < 1e-9
    # an overwhelming ridge centred on TaylorSeer-1 returns TaylorSeer-1's weights
    from l2p.predictor.presets import preset

    strong, _ = fit_table(F, None, schedule, FitConfig(K=3, uses_latents=False, ridge=1e9, prior="taylorseer1"))
    np.testing.assert_allclose(strong.W, preset("taylorseer1", schedule, 20, K=3).W, atol=1e-6)


@pytest.mark.parametrize("exact", [1, 2])
def test_polynomial_exactness(exact: int) -> None:
    """With ``exact=d`` the fitted weights forecast any degree-``d`` polynomial exactly, even when
    fitted on trajectories that are not polynomials; with K = d + 1 they are Lagrange's weights."""
    rng = np.random.default_rng(4)
    i_ax = np.arange(20, dtype=np.float64)[None, :, None]
    F = np.sin(i_ax / 4 + rng.standard_normal((6, 1, 40))) + 0.05 * rng.standard_normal((6, 20, 40))
    schedule = (0, 1, 2, 3, 7, 11, 15, 19)
    table, _ = fit_table(F, None, schedule, FitConfig(K=4, uses_latents=False, exact=exact))
    coef = rng.standard_normal(exact + 1)
    poly = sum(c * np.arange(20.0) ** p for p, c in enumerate(coef))  # (20,)
    for i in range(4, 20):
        if i in schedule:
            continue
        hist = table.history(i)
        assert len(hist) == 4
        np.testing.assert_allclose(table.predict(i, [poly[s:s + 1] for s in hist]), poly[i:i + 1], rtol=1e-9, atol=1e-8)
    tight, _ = fit_table(F, None, schedule, FitConfig(K=exact + 1, uses_latents=False, exact=exact))
    for i in (5, 9, 18):
        hist = tight.history(i)
        np.testing.assert_allclose(tight.W[i, :exact + 1], lagrange_weights(hist, i, exact), rtol=1e-9)


def test_exactness_leaves_room_to_learn() -> None:
    """A trajectory with a non-polynomial part is forecast better by the exact-degree-1 fit with
    K = 4 than by Lagrange-2 extrapolation (the fit uses its one free weight)."""
    rng = np.random.default_rng(5)
    i_ax = np.arange(30, dtype=np.float64)[None, :, None]
    F = np.exp(-i_ax / 6) * rng.standard_normal((8, 1, 50)) + i_ax * rng.standard_normal((8, 1, 50))
    schedule = tuple(range(0, 30, 4)) + (29,)
    table, _ = fit_table(F, None, schedule, FitConfig(K=4, uses_latents=False, exact=1))
    from l2p.predictor.presets import preset

    lag = preset("lagrange2", schedule, 30, K=4)
    err = lambda t: sum(np.sum((t.predict(i, [F[:, s] for s in t.history(i)]) - F[:, i]) ** 2)  # noqa: E731
                        for i in range(13, 30) if i not in schedule)
    assert err(table) < 0.5 * err(lag)


def test_exact_out_of_range() -> None:
    with pytest.raises(InputError, match="exact"):
        FitConfig(K=3, exact=3)
    with pytest.raises(InputError, match="exact"):
        FitConfig(K=3, exact=-2)
