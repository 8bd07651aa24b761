"""Closed-loop refinement of a fitted table: Gauss-Newton on the cached sampler's final output.

The least-squares fit (:mod:`.fit`) is teacher-forced: each forecast step is fitted on
full-compute history, one step at a time. What users see is the end of the *cached* run, where
forecast errors feed the later computed steps through the model. This refinement takes that
end point as its objective.

Parameters: on every forecast step the feature weights may move only inside the null space of
the fit's polynomial-exactness constraints (so the refined table still forecasts polynomials of
degree <= ``exact`` exactly): ``W[i] = W0[i] + sum_k theta[i, k] * v[i, k]``, one or two numbers
per step. The residual (decoded calibration images, or final latents, minus full compute) is
linearised in ``theta`` by forward differences, one cached run per parameter, and a damped
Gauss-Newton step is taken, shortened (x1, 1/2, 1/4, 1/10) while it does not improve the score: the
cached run is far from linear in the weights under strong guidance, where the full step overshoots.
A round is kept only when the calibration score improves.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..predictor.table import CoefficientTable
from ..predictor.schedule import history_before
from ..progress import BarFactory, bar_of, no_bar
from .fit import _constraints

Direction = tuple[int, np.ndarray]  # (forecast step i, unit vector over the K feature weights)
#: fractions of the Gauss-Newton step tried in turn until one improves the score (a backtracking line search)
STEP_SCALES = (1.0, 0.5, 0.25, 0.1)


def null_directions(table: CoefficientTable, exact: int) -> list[Direction]:
    """Directions in which each forecast step's feature weights can move and stay exact to degree ``exact``.

    Returns one ``(i, v)`` per free dimension, ``v`` float64 ``(K,)`` of unit norm with zeros
    beyond the step's history. Steps whose history leaves no freedom give none.
    """
    out: list[Direction] = []
    for i in range(table.num_steps):
        if table.is_computed(i):
            continue
        hist = history_before(table.computed, i, table.K)
        h = len(hist)
        C, _ = _constraints(hist, i, exact, latents=False)
        Z = np.eye(h) if C is None else np.linalg.svd(C)[2][C.shape[0]:].T  # (h, free) orthonormal
        for k in range(Z.shape[1]):
            v = np.zeros(table.K)
            v[:h] = Z[:, k]
            out.append((i, v))
    return out


def moved(table: CoefficientTable, dirs: list[Direction], theta: np.ndarray) -> CoefficientTable:
    """``table`` with ``W[i] += theta[n] * v`` for every direction ``n = (i, v)``; U, V unchanged."""
    W = table.W.copy()
    for (i, v), t in zip(dirs, theta):
        W[i] += t * v
    return replace(table, W=W)


def refine(table: CoefficientTable, dirs: list[Direction],
           measure: Callable[[CoefficientTable], tuple[np.ndarray, float]], base_score: float, rounds: int = 1,
           damping: float = 1e-2, delta: float = 1e-3,
           log: Callable[[str], None] = lambda s: None, progress: BarFactory = no_bar,
           probe: Callable[[CoefficientTable], np.ndarray] | None = None,
           step_scales: tuple[float, ...] = STEP_SCALES, label: str = "closed-loop",
           ) -> tuple[CoefficientTable, float, list[dict[str, Any]]]:
    """Damped Gauss-Newton rounds on ``|residual(table)|^2`` over the directions ``dirs``.

    Args:
        table: the fitted table (its score on the calibration set is ``base_score``).
        dirs: from :func:`null_directions`.
        measure: one cached run of a table -> its flat float64 residual (cached run minus full
            compute) and its calibration score (higher is better, e.g. PSNR).
        rounds: Gauss-Newton rounds; the first costs ``len(dirs) + 2`` cached runs, later ones
            ``len(dirs) + 1`` (the kept candidate's residual is reused), plus one per shortened step.
        probe: the residual the Jacobian is taken of (cheaper: e.g. on a subset of the runs);
            default ``measure``'s. Each candidate is still scored by ``measure``; with a
            probe a kept round costs one more probe run.
        damping: ridge on the normal equations, relative to their mean diagonal.
        progress: makes one bar per round over its cached runs.
        delta: forward-difference step on ``theta`` (directions have unit norm).
        step_scales: fractions of the Gauss-Newton step tried in turn; the first that improves is kept.
        label: names the rounds in the log and the progress bars.

    Returns:
        the best table, its score and one record per round (``psnr_db``: the best tried step's
        score, ``kept``, ``step_scale``: that step's fraction).
    """
    records: list[dict[str, Any]] = []
    if not dirs or rounds < 1:
        return table, base_score, records
    best, best_score = table, base_score
    residual = probe if probe is not None else (lambda t: measure(t)[0])
    r0 = residual(best)
    for r in range(rounds):
        J = np.empty((r0.size, len(dirs)), np.float64)  # (residual size, parameters)
        with bar_of(progress, len(dirs) + 1, f"{label} round {r + 1}/{rounds}", "run") as bar:
            for n in range(len(dirs)):
                step = np.zeros(len(dirs))
                step[n] = delta
                J[:, n] = (residual(moved(best, dirs, step)) - r0) / delta
                bar.update()
            A = J.T @ J
            A += damping * float(np.trace(A)) / len(dirs) * np.eye(len(dirs))
            theta = -np.linalg.solve(A, J.T @ r0)  # (parameters,) the Gauss-Newton step
            tried: tuple[float, float, CoefficientTable, np.ndarray] | None = None  # (score, scale, table, residual)
            for scale in step_scales:  # backtracking: shorter steps until one improves
                cand = moved(best, dirs, scale * theta)
                rc, s = measure(cand)
                if tried is None or s > tried[0]:
                    tried = (s, scale, cand, rc)
                if s > best_score:
                    break
            bar.update()
        assert tried is not None
        s, scale, cand, rc = tried
        kept = s > best_score
        records.append({"round": r + 1, "parameters": len(dirs), "psnr_db": s, "kept": kept, "step_scale": scale})
        log(f"{label} round {r + 1} ({len(dirs)} parameters, step x{scale:g}): {s:.2f} dB "
            f"({'kept' if kept else 'dropped'})")
        if not kept:
            break
        best, best_score, r0 = cand, s, (rc if probe is None else probe(cand))
    return best, best_score, records
