"""Fixed-formula tables against their formulas applied directly to known trajectories, the
published TaylorSeer closed forms, and an independent TaylorSeer-style derivative cache.
Also the CoefficientTable validation rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from l2p.errors import InputError
from l2p.predictor.presets import PRESETS, preset
from l2p.predictor.schedule import fixed_interval_schedule, interval_schedule, power_schedule
from l2p.predictor.table import CoefficientTable

RNG = np.random.default_rng(0)
COEF = RNG.standard_normal((4, 6))  # vector coefficients of a polynomial trajectory, 6 channels
SCHEDULES = {  # (N, schedule)
    "even": (25, fixed_interval_schedule(25, 4, 1)),
    "interval+warmup": (30, interval_schedule(30, 9, 3)),
    "power-early": (40, power_schedule(40, 10, 2, 2.5)),
    "irregular": (20, (0, 1, 3, 4, 9, 10, 16)),
}


def poly(t: float, degree: int) -> np.ndarray:
    """F(t) = sum_{d <= degree} COEF[d] t^d, shape [6]."""
    return sum(COEF[d] * float(t) ** d for d in range(degree + 1))


def forecast(table: CoefficientTable, i: int, traj) -> np.ndarray:
    """The linear form evaluated directly from the trajectory (independent of table.predict)."""
    hist = [s for s in table.computed if s < i][::-1][: table.K]
    return sum(table.W[i, j] * traj(s) for j, s in enumerate(hist))


def predicted_steps(table: CoefficientTable, min_history: int) -> list[int]:
    return [i for i in range(table.num_steps)
            if i not in table.computed and sum(s < i for s in table.computed) >= min_history]


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize(
    "name, degree, min_history",
    [("fora", 0, 1), ("taylorseer1", 1, 2), ("taylorseer2", 1, 2), ("taylorseer3", 1, 2),
     ("lagrange2", 2, 3), ("lagrange3", 3, 4), ("taylorseer2-code", 1, 2), ("taylorseer2-meangap", 1, 2)],
)
def test_exact_on_polynomials(kind: str, name: str, degree: int, min_history: int) -> None:
    """FORA: constants; TaylorSeer (any order, any gaps): linear; Lagrange p: degree p."""
    n, sched = SCHEDULES[kind]
    t = preset(name, sched, n)
    steps = predicted_steps(t, min_history)
    assert steps
    for i in steps:
        np.testing.assert_allclose(forecast(t, i, lambda s: poly(s, degree)), poly(i, degree), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name, sched", [("taylorseer2", (0, 2, 4)), ("taylorseer2-meangap", (0, 3, 5))])
def test_taylorseer2_is_taylor_not_lagrange(name: str, sched: tuple[int, ...]) -> None:
    """On F = c t^2 TaylorSeer-2 misses by exactly -c * (s0 - s1) * k (backward-difference slope);
    for the mean-gap variant on any gaps, for the published rule on even gaps."""
    c = COEF[2]
    t = preset(name, sched, 9)
    for i in range(sched[-1] + 1, 9):
        k, g1 = i - sched[-1], sched[-1] - sched[-2]
        got = forecast(t, i, lambda s: c * s**2)
        np.testing.assert_allclose(got - c * i**2, -c * g1 * k, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_gap", [2, 3, 5])
def test_taylorseer_published_closed_form(n_gap: int) -> None:
    """Even spacing, interval n: order 1 w = (1+k/n, -k/n); order 2 TaylorSeer's published form."""
    N = 6 * n_gap + 1
    sched = fixed_interval_schedule(N, n_gap, 1)
    t1, t2 = preset("taylorseer1", sched, N), preset("taylorseer2", sched, N)
    t2code, t2mean = preset("taylorseer2-code", sched, N), preset("taylorseer2-meangap", sched, N)
    checked = 0
    for i in range(N):
        if i in sched:
            assert not t1.W[i].any() and not t2.W[i].any()
            continue
        h = sum(s < i for s in sched)
        k, n = i - max(s for s in sched if s < i), n_gap
        if h >= 2:
            np.testing.assert_allclose(t1.W[i], [1 + k / n, -k / n], rtol=1e-12)
        if h >= 3:
            want = [1 + k / n + k**2 / (2 * n**2), -k / n - k**2 / n**2, k**2 / (2 * n**2)]
            np.testing.assert_allclose(t2.W[i], want, rtol=1e-12)
            np.testing.assert_allclose(t2code.W[i], want, rtol=1e-12)
            np.testing.assert_allclose(t2mean.W[i], want, rtol=1e-12)
            checked += 1
    assert checked == 4 * (n_gap - 1)


def test_fallback_to_lower_order() -> None:
    sched = (0, 4, 8)
    t = preset("taylorseer2", sched, 12)
    np.testing.assert_array_equal(t.W[1:4], [[1, 0, 0]] * 3)  # one computed step: FORA
    np.testing.assert_allclose(t.W[6], [1.5, -0.5, 0])  # two: order 1
    assert t.W[10, 2] != 0  # three: order 2
    lg = preset("lagrange3", sched, 12)
    np.testing.assert_allclose(lg.W[6], [1.5, -0.5, 0, 0])  # two points: linear (k = 2, gap 4)


class DerivativeCache:
    """Independent TaylorSeer-style forecaster (as in TaylorSeer's taylorseer_utils): on each
    full step the cache is refreshed d0 = F, d_m = (d_{m-1}^new - d_{m-1}^old) / gap_m for the
    orders the previous cache supports; a forecast is sum_m d_m k^m / m!.

    gap_rule="code": gap_m = s0 - s1 for every order (the original code).
    gap_rule="mean": gap_m = (s0 - s_m) / m, the mean gap over the span of order m
    (the taylorseer2-meangap variant; equal to the code's rule for even gaps).
    """

    def __init__(self, order: int, gap_rule: str) -> None:
        self.order, self.gap_rule = order, gap_rule
        self.steps: list[int] = []
        self.d: list[np.ndarray] = []

    def full(self, step: int, feature: np.ndarray) -> None:
        self.steps.append(step)
        new = [feature]
        for m in range(1, self.order + 1):
            if len(self.d) < m:
                break
            s = self.steps[::-1]
            gap = s[0] - s[1] if self.gap_rule == "code" else (s[0] - s[m]) / m
            new.append((new[m - 1] - self.d[m - 1]) / gap)
        self.d = new

    def forecast(self, step: int) -> np.ndarray:
        k = step - self.steps[-1]
        return sum(dm * k**m / math.factorial(m) for m, dm in enumerate(self.d))


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("name, order, rule", [("taylorseer1", 1, "mean"), ("taylorseer1", 1, "code"),
                                               ("taylorseer2", 2, "code"), ("taylorseer3", 3, "code"),
                                               ("taylorseer2-code", 2, "code"), ("taylorseer2-meangap", 2, "mean")])
def test_taylorseer_matches_derivative_cache(kind: str, name: str, order: int, rule: str) -> None:
    n, sched = SCHEDULES[kind]
    feats = np.random.default_rng(1).standard_normal((n, 2, 5))  # random trajectory [N, ...]
    table = preset(name, sched, n)
    ref = DerivativeCache(order, rule)
    for i in range(n):
        if i in sched:
            ref.full(i, feats[i])
        else:
            got = forecast(table, i, lambda s: feats[s])
            np.testing.assert_allclose(got, ref.forecast(i), rtol=1e-10, atol=1e-12)


def test_gap_rules_differ_only_on_uneven_gaps() -> None:
    even = fixed_interval_schedule(30, 5, 1)
    np.testing.assert_allclose(preset("taylorseer2", even, 30).W, preset("taylorseer2-meangap", even, 30).W)
    uneven = (0, 1, 2, 8, 14)  # warm-up gaps of 1, then 6
    assert not np.allclose(preset("taylorseer2", uneven, 20).W, preset("taylorseer2-meangap", uneven, 20).W)
    np.testing.assert_array_equal(preset("taylorseer2", uneven, 20).W, preset("taylorseer2-code", uneven, 20).W)


def test_preset_lookup_and_padding() -> None:
    with pytest.raises(InputError) as e:
        preset("taylorseer9", (0, 5), 10)
    for known in PRESETS:
        assert known in str(e.value)
    t = preset("taylorseer1", (0, 5), 10, K=4)
    assert t.K == 4 and t.W.shape == (10, 4) and not t.W[:, 2:].any()
    with pytest.raises(InputError, match="K=2"):
        preset("taylorseer2", (0, 5), 10, K=2)
    for name in PRESETS:
        t = preset(name, (0, 2, 5, 7), 10)
        assert not t.uses_latents and not t.U.any() and not t.V.any()
        assert t.W.dtype == np.float64


# ----------------------------------------------------------------------------- table rules

def _ok_table(**over) -> dict:
    W = np.zeros((6, 2))
    W[1, 0] = 1.0
    W[3:6] = [[1.5, -0.5]] * 3
    args = dict(W=W, U=np.zeros((6, 2)), V=np.zeros(6), computed=(0, 2), K=2, uses_latents=False)
    args.update(over)
    return args


def test_table_history_and_predict() -> None:
    t = CoefficientTable(**_ok_table())
    assert t.num_steps == 6 and t.history(5) == [2, 0] and t.history(1) == [0] and t.history(0) == []
    assert t.is_computed(2) and not t.is_computed(3)
    f = [np.full(3, 2.0), np.full(3, 1.0)]
    np.testing.assert_allclose(t.predict(4, f), np.full(3, 2.5))
    with pytest.raises(InputError, match="computed"):
        t.predict(2, f)
    assert not t.W.flags.writeable


@pytest.mark.parametrize(
    "over, match",
    [
        ({"W": np.zeros((6, 3))}, "W has shape"),
        ({"U": np.zeros((5, 2))}, "U has shape"),
        ({"V": np.zeros(7)}, "V has shape"),
        ({"W": np.full((6, 2), np.nan)}, "NaN"),
        ({"computed": (1, 2)}, "step 0"),
        ({"U": np.ones((6, 2))}, "uses_latents=False"),
        ({"K": 0}, "K=0"),
    ],
)
def test_table_validation(over: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        CoefficientTable(**_ok_table(**over))


def test_table_rejects_weight_on_missing_history_and_computed_rows() -> None:
    args = _ok_table()
    args["W"] = args["W"].copy()
    args["W"][1, 1] = 0.1  # step 1 has only one computed step before it
    with pytest.raises(InputError, match="step 1 has non-zero weight on history columns >= 1"):
        CoefficientTable(**args)
    args = _ok_table()
    args["W"] = args["W"].copy()
    args["W"][2, 0] = 1.0  # step 2 is computed
    with pytest.raises(InputError, match=r"computed steps \[2\]"):
        CoefficientTable(**args)
