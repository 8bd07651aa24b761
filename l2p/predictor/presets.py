"""Fixed-formula forecasters as coefficient tables (the baselines L2P is compared against).

Every rule below is a fixed linear combination of the newest computed features, so it is a
:class:`~l2p.predictor.table.CoefficientTable` with ``U = V = 0``. Offsets are in step units:
for a predicted step ``i`` with history ``s_0 > s_1 > ...`` (newest first), ``k = i - s_0``.

Presets (by name, see :func:`preset`):

``fora``
    FORA (Selvaraju et al. 2024): reuse the newest computed feature, ``w = (1,)``.
``taylorseer1``, ``taylorseer2``, ``taylorseer3``
    TaylorSeer (Liu et al., ICCV 2025) as its published code computes it (and diffusers'
    ``TaylorSeerCacheConfig``): a Taylor expansion around the newest computed step,
    ``F_hat = sum_m d_m k^m / m!``, from a derivative cache refreshed on each full step,
    ``d_0 = F``, ``d_m(s_a) = (d_{m-1}(s_a) - d_{m-1}(s_{a+1})) / (s_a - s_{a+1})``: every order
    divides by the gap between the two newest computed steps at the time of its update. With
    even spacing ``n``, order 1 gives ``w = (1 + k/n, -k/n)`` and order 2
    ``w = (1 + k/n + k²/2n², -k/n - k²/n², k²/2n²)``. It is *not* polynomial extrapolation:
    ``d_1`` is a backward difference (the slope half a gap back), so order 2 is exact for
    linear but not for quadratic trajectories.
``taylorseer2-code``
    The former name of ``taylorseer2`` (the same rule), kept so that existing commands still work.
``taylorseer2-meangap``
    TaylorSeer order 2 with a *mean-gap* rule for uneven gaps: order ``m`` divides by the mean gap
    over the span it covers, ``(s_0 - s_m) / m``, which makes ``d_m = m! * F[s_0, ..., s_m]``
    (Newton divided differences with the true gaps). Equal to ``taylorseer2`` when the gaps are
    even; they differ e.g. right after a warm-up phase. Not the published rule.
``lagrange2``, ``lagrange3``
    Polynomial (Lagrange/Newton) extrapolation through the newest ``p + 1`` computed steps,
    ``w_j = prod_{m != j} (i - s_m) / (s_j - s_m)``, exact for polynomials of degree ``<= p``
    (any gaps). With even gaps and ``k = n`` this is the Newton backward-difference
    forecast, e.g. order 2: ``w = (3, -3, 1)``. Order 1 equals ``taylorseer1``.

Fallback: a rule of order ``p`` needs ``p + 1`` computed steps; a step with fewer in its
history uses the highest order it can (``h`` computed steps -> order ``h - 1``; one -> FORA).

Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InputError
from .schedule import history_before, validate_schedule
from .table import CoefficientTable

#: preset name -> (rule, order)
PRESETS: dict[str, tuple[str, int]] = {
    "fora": ("fora", 0),
    "taylorseer1": ("taylorseer", 1),
    "taylorseer2": ("taylorseer", 2),
    "taylorseer3": ("taylorseer", 3),
    "taylorseer2-code": ("taylorseer", 2),
    "taylorseer2-meangap": ("taylorseer-meangap", 2),
    "lagrange2": ("lagrange", 2),
    "lagrange3": ("lagrange", 3),
}


def taylorseer_weights(history: Sequence[int], i: int, order: int, gap_rule: str = "code") -> np.ndarray:
    """TaylorSeer weights for step ``i`` from ``history`` (computed steps, newest first).

    Args:
        history: ``[s_0, s_1, ...]``, strictly decreasing, ``len >= order + 1``.
        i: the predicted step (``k = i - s_0``).
        order: Taylor order ``p`` (0 = FORA).
        gap_rule: ``"code"`` (every order divides by the newest gap of its update, as the
            published TaylorSeer code does) or ``"meangap"`` (order ``m`` divides by ``(s_0 - s_m)/m``).

    Returns:
        float64 ``[order + 1]`` weights of ``F(s_0) .. F(s_order)``.
    """
    s = [float(v) for v in history[: order + 1]]
    if len(s) < order + 1:
        raise InputError(f"TaylorSeer order {order} needs {order + 1} computed steps, got {list(history)}")
    if gap_rule not in ("code", "meangap"):
        raise InputError(f"unknown TaylorSeer gap rule '{gap_rule}'; use 'code' or 'meangap'")
    n = order + 1
    # d[a] = weight vector of the order-m derivative estimate at history entry a (from a..a+m)
    d = [np.eye(n)[a] for a in range(n)]
    w = d[0].copy()
    k = i - s[0]
    for m in range(1, order + 1):
        if gap_rule == "meangap":
            d = [m * (d[a] - d[a + 1]) / (s[a] - s[a + m]) for a in range(n - m)]
        else:
            d = [(d[a] - d[a + 1]) / (s[a] - s[a + 1]) for a in range(n - m)]
        w += d[0] * k**m / math.factorial(m)
    return w


def lagrange_weights(history: Sequence[int], i: int, order: int) -> np.ndarray:
    """Lagrange extrapolation weights through the newest ``order + 1`` computed steps.

    Returns float64 ``[order + 1]``: ``w_j = prod_{m != j} (i - s_m) / (s_j - s_m)``.
    """
    s = [float(v) for v in history[: order + 1]]
    if len(s) < order + 1:
        raise InputError(f"Lagrange order {order} needs {order + 1} computed steps, got {list(history)}")
    w = np.ones(order + 1)
    for j in range(order + 1):
        for m in range(order + 1):
            if m != j:
                w[j] *= (i - s[m]) / (s[j] - s[m])
    return w


def fora(schedule: Sequence[int], num_steps: int, K: int | None = None) -> CoefficientTable:
    """FORA: reuse the newest computed feature (``W[i, 0] = 1``)."""
    return _table(schedule, num_steps, 0, lambda h, i, p: np.ones(1), K)


def taylorseer(
    schedule: Sequence[int], num_steps: int, order: int = 1, K: int | None = None, gap_rule: str = "code"
) -> CoefficientTable:
    """TaylorSeer of ``order`` (1, 2, ...) on ``schedule``; see the module docstring for the gap rules."""
    _check_order(order, "taylorseer", minimum=1)
    return _table(schedule, num_steps, order, lambda h, i, p: taylorseer_weights(h, i, p, gap_rule), K)


def lagrange(schedule: Sequence[int], num_steps: int, order: int = 2, K: int | None = None) -> CoefficientTable:
    """Polynomial extrapolation of ``order`` through the newest ``order + 1`` computed steps."""
    _check_order(order, "lagrange", minimum=1)
    return _table(schedule, num_steps, order, lagrange_weights, K)


def preset(name: str, schedule: Sequence[int], num_steps: int, K: int | None = None) -> CoefficientTable:
    """The fixed-formula table called ``name`` (see :data:`PRESETS`) for ``schedule``.

    Args:
        name: e.g. ``"fora"``, ``"taylorseer2"``, ``"lagrange2"``.
        schedule: computed steps (step 0 included).
        num_steps: ``N``.
        K: history length of the table; default ``order + 1``. A larger ``K`` pads zero columns
            (e.g. to share one ring-buffer size with a learned predictor).
    """
    if name not in PRESETS:
        raise InputError(f"unknown predictor preset '{name}'; known presets: {', '.join(PRESETS)}")
    rule, order = PRESETS[name]
    if rule == "fora":
        return fora(schedule, num_steps, K)
    if rule == "taylorseer":
        return taylorseer(schedule, num_steps, order, K)
    if rule == "taylorseer-meangap":
        return taylorseer(schedule, num_steps, order, K, gap_rule="meangap")
    return lagrange(schedule, num_steps, order, K)


def _check_order(order: int, what: str, minimum: int) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order < minimum:
        raise InputError(f"{what}: order {order!r} is not allowed; use an integer >= {minimum}")


def _table(
    schedule: Sequence[int],
    num_steps: int,
    order: int,
    weights: Callable[[list[int], int, int], np.ndarray],
    K: int | None,
) -> CoefficientTable:
    """Build a table: each predicted row gets ``weights(history, i, min(order, len(history)-1))``."""
    computed = validate_schedule(schedule, num_steps)
    need = order + 1
    if K is None:
        K = need
    if isinstance(K, bool) or not isinstance(K, int) or K < need:
        raise InputError(f"history length K={K!r} is too small for order {order}; use K >= {need}")
    W = np.zeros((num_steps, K))
    done = set(computed)
    for i in range(num_steps):
        if i in done:
            continue
        hist = history_before(computed, i, need)
        w = weights(hist, i, min(order, len(hist) - 1))
        W[i, : len(w)] = w
    return CoefficientTable(W, np.zeros_like(W), np.zeros(num_steps), computed, K, False)
