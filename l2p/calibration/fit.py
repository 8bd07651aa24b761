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
from ..predictor.table import CoefficientTable

SOLVERS = ("lstsq", "gd")


@dataclass(frozen=True)
class FitConfig:
    """Settings of one fit."""

    K: int = 3
    uses_latents: bool = True
    ridge: float = 1e-6  # relative to the mean diagonal of the Gram matrix
    solver: str = "lstsq"  # "lstsq": closed form; "gd": gradient descent on the same MSE
    gd_iters: int = 2000

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise InputError(f"unknown solver '{self.solver}'; choose one of {SOLVERS}")
        if not 1 <= self.K <= 16:
            raise InputError(f"K={self.K} is out of range; use 1..16")
        if not self.ridge >= 0:
            raise InputError(f"ridge={self.ridge} must be >= 0")


def _history(schedule: tuple[int, ...], i: int, K: int) -> list[int]:
    return [s for s in schedule if s < i][::-1][:K]


def _solve(G: np.ndarray, b: np.ndarray, cfg: FitConfig) -> np.ndarray:
    m = G.shape[0]
    lam = cfg.ridge * float(np.trace(G)) / m
    A = G + lam * np.eye(m)
    if cfg.solver == "lstsq":
        return np.linalg.lstsq(A, b, rcond=None)[0]
    w = np.zeros(m)  # gradient descent on 0.5 w^T A w - b^T w (the MSE + ridge), step 1/L
    step = 1.0 / max(float(np.linalg.eigvalsh(A).max()), 1e-30)
    for _ in range(cfg.gd_iters):
        w -= step * (A @ w - b)
    return w


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
    W = np.zeros((N, cfg.K))
    U = np.zeros((N, cfg.K))
    V = np.zeros(N)
    residual: dict[int, float] = {}
    for i in range(N):
        if i in schedule:
            continue
        hist = _history(schedule, i, cfg.K)
        h = len(hist)
        cols = [F[:, s] for s in hist]
        if X is not None:
            cols += [X[:, s] for s in hist] + [X[:, i]]
        A = np.stack(cols, axis=-1).reshape(-1, len(cols))  # (T*D, m)
        y = F[:, i].reshape(-1)  # (T*D,)
        w = _solve(A.T @ A, A.T @ y, cfg)
        W[i, :h] = w[:h]
        if X is not None:
            U[i, :h] = w[h:2 * h]
            V[i] = w[2 * h]
        residual[i] = float(np.linalg.norm(A @ w - y) / max(np.linalg.norm(y), 1e-30))
    table = CoefficientTable(W, U, V, tuple(schedule), cfg.K, bool(X is not None))
    stats = {"fit_seconds": time.perf_counter() - t0, "trajectories": int(T), "ridge": cfg.ridge,
             "solver": cfg.solver, "rel_residual": {str(k): v for k, v in residual.items()},
             "mean_rel_residual": float(np.mean(list(residual.values()))) if residual else 0.0}
    return table, stats
