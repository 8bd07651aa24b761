"""Least-squares fit of the per-step linear coefficients (closed form with ridge, or gradient).

For every forecast step ``i`` the design has one column per history feature ``F(s_j)`` (and,
with latents, per history latent ``x(s_j)`` and the current latent ``x_i``); every element of
every trajectory is one row. Only the small Gram matrix ``A^T A`` (``m x m``, ``m <= 2K+1``) is
formed, so the fit is cheap however large the features are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..metrics import rel_error
from ..predictor.presets import preset
from ..predictor.schedule import history_before
from ..predictor.table import CoefficientTable

SOLVERS = ("lstsq", "gd")
#: what the ridge may pull the feature weights towards: nothing, or a fixed formula
PRIORS = ("zero", "fora", "taylorseer1", "taylorseer2", "lagrange2")


@dataclass(frozen=True)
class FitConfig:
    """Settings of one fit."""

    K: int = 3
    uses_latents: bool = True
    ridge: float = 1e-6  # relative to the mean diagonal of the Gram matrix
    solver: str = "lstsq"  # "lstsq": closed form; "gd": gradient descent on the same MSE
    gd_iters: int = 2000
    #: polynomial exactness of the feature weights: the forecast reproduces every trajectory that
    #: is a polynomial of degree <= ``exact`` in the step index, as Lagrange extrapolation of that
    #: order does, and the fit only chooses the freedom left (a formula plus a learned correction).
    #: ``0``: the weights sum to 1 (unbiased for constant features, so per-step errors do not add
    #: up coherently over the forecast steps); ``-1``: free. With latents, ``exact >= 0`` also
    #: makes the latent weights (history + current) sum to 0.
    exact: int = 0
    #: ridge centre for the feature weights: "zero", or a fixed formula the fit shrinks towards
    #: ("taylorseer1"): with noisy features the fit then stays near the formula unless the data
    #: say otherwise
    prior: str = "zero"

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise InputError(f"unknown solver '{self.solver}'; choose one of {SOLVERS}")
        if not 1 <= self.K <= 16:
            raise InputError(f"K={self.K} is out of range; use 1..16")
        if not -1 <= self.exact < self.K:
            raise InputError(f"exact={self.exact} is out of range for K={self.K}; use -1 (free) .. {self.K - 1}")
        if not self.ridge >= 0:
            raise InputError(f"ridge={self.ridge} must be >= 0")
        if self.prior not in PRIORS:
            raise InputError(f"unknown prior '{self.prior}'; choose {', '.join(PRIORS[:-1])} or {PRIORS[-1]}")


def _constraints(hist: list[int], i: int, exact: int,
                 latents: bool) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """``C w = d`` for step ``i`` with history ``hist`` (newest first) and exactness ``exact``.

    Row ``p`` (``p = 0 .. min(exact, h - 1)``) asks ``sum_j W_j ((s_j - i) / g)^p = [p == 0]``
    (``g``: the history's span, for conditioning): a polynomial of degree ``p`` is forecast
    exactly. With latents one more row makes the latent weights (history + current) sum to 0.
    Returns ``(None, None)`` for ``exact < 0`` (a free fit).
    """
    if exact < 0:
        return None, None
    h = len(hist)
    m = 2 * h + 1 if latents else h
    g = max(float(hist[0] - hist[-1]), 1.0)
    offsets = (np.asarray(hist, np.float64) - i) / g
    rows, d = [], []
    for p in range(min(exact, h - 1) + 1):
        rows.append(np.r_[offsets**p, np.zeros(m - h)])
        d.append(1.0 if p == 0 else 0.0)
    if latents:
        rows.append(np.r_[np.zeros(h), np.ones(h + 1)])
        d.append(0.0)
    return np.array(rows), np.array(d)


def _solve(G: np.ndarray, b: np.ndarray, cfg: FitConfig, C: np.ndarray | None = None,
           d: np.ndarray | None = None, prior: np.ndarray | None = None) -> np.ndarray:
    """Minimise ``0.5 w^T G w - b^T w + 0.5 lam |w - prior|^2`` (the MSE plus a ridge centred
    on ``prior``), optionally s.t. ``C w = d``. ``G``: ``(m, m)`` Gram matrix, ``b``: ``(m,)``."""
    m = G.shape[0]
    lam = cfg.ridge * float(np.trace(G)) / m
    A = G + lam * np.eye(m)
    if prior is not None:
        b = b + lam * prior
    if C is not None and d is not None:  # the constrained optimum in a null-space parametrisation
        w0 = np.linalg.lstsq(C, d, rcond=None)[0]  # a particular solution
        Z = np.linalg.svd(C)[2][C.shape[0]:].T  # (m, m - c) basis of the null space of C
        if Z.shape[1] == 0:
            return w0
        return w0 + Z @ _solve_free(Z.T @ A @ Z, Z.T @ (b - A @ w0), cfg)
    return _solve_free(A, b, cfg)


def _solve_free(A: np.ndarray, b: np.ndarray, cfg: FitConfig) -> np.ndarray:
    if cfg.solver == "lstsq":
        return np.linalg.lstsq(A, b, rcond=None)[0]
    w = np.zeros(A.shape[0])  # gradient descent on 0.5 w^T A w - b^T w, step 1/L
    step = 1.0 / max(float(np.linalg.eigvalsh(A).max()), 1e-30)
    for _ in range(cfg.gd_iters):
        w -= step * (A @ w - b)
    return w


def _prior_table(cfg: FitConfig, schedule: tuple[int, ...], N: int) -> CoefficientTable | None:
    """The ridge centre's table; a formula that needs more history than ``K`` falls back to the
    highest-order Lagrange rule ``K`` computed steps allow (``K = 2``: TaylorSeer-1, ``K = 1``: FORA)."""
    if cfg.prior == "zero":
        return None
    try:
        return preset(cfg.prior, schedule, N, K=cfg.K)
    except InputError:
        return preset({1: "fora", 2: "taylorseer1"}.get(cfg.K, "lagrange2"), schedule, N, K=cfg.K)


def _prior(prior: CoefficientTable | None, i: int, h: int, m: int) -> np.ndarray | None:
    """Ridge centre for step ``i``: the fixed formula's feature weights, zero latent weights."""
    if prior is None:
        return None
    p = np.zeros(m)
    p[:h] = prior.W[i, :h]
    return p


def fit_table(features: np.ndarray, latents: np.ndarray | None, schedule: tuple[int, ...],
              cfg: FitConfig) -> tuple[CoefficientTable, dict[str, Any]]:
    """Fit W (and U, V) on trajectories.

    Args:
        features: ``(T, N, *shape)`` the true tapped feature on every step.
        latents: ``(T, N, *shape)`` the latent fed on every step (needed with ``uses_latents``;
            must have the feature's shape).
        schedule: computed steps (step 0 included).

    Returns:
        the table and fit statistics (per-step relative residual, time).
    """
    t0 = time.perf_counter()
    T, N = features.shape[:2]
    use_lat = cfg.uses_latents and latents is not None
    if use_lat and latents is not None and latents.shape != features.shape:
        raise InputError(f"latent terms need latents shaped like the feature: {latents.shape} vs {features.shape}")
    F = features.reshape(T, N, -1).astype(np.float64)  # (T, N, D)
    X = latents.reshape(T, N, -1).astype(np.float64) if use_lat and latents is not None else None
    prior = _prior_table(cfg, tuple(schedule), N)
    W = np.zeros((N, cfg.K))
    U = np.zeros((N, cfg.K))
    V = np.zeros(N)
    residual: dict[int, float] = {}
    for i in range(N):
        if i in schedule:
            continue
        hist = history_before(schedule, i, cfg.K)
        h = len(hist)
        cols = [F[:, s] for s in hist]
        if X is not None:
            cols += [X[:, s] for s in hist] + [X[:, i]]
        A = np.stack(cols, axis=-1).reshape(-1, len(cols))  # (T*D, m)
        y = F[:, i].reshape(-1)  # (T*D,)
        C, d = _constraints(hist, i, cfg.exact, X is not None)
        w = _solve(A.T @ A, A.T @ y, cfg, C, d, _prior(prior, i, h, len(cols)))
        W[i, :h] = w[:h]
        if X is not None:
            U[i, :h] = w[h:2 * h]
            V[i] = w[2 * h]
        residual[i] = rel_error(A @ w, y)
    table = CoefficientTable(W, U, V, tuple(schedule), cfg.K, bool(X is not None))
    stats = {"fit_seconds": time.perf_counter() - t0, "trajectories": int(T), "ridge": cfg.ridge,
             "solver": cfg.solver, "rel_residual": {str(k): v for k, v in residual.items()},
             "mean_rel_residual": float(np.mean(list(residual.values()))) if residual else 0.0}
    return table, stats
