"""Projection fidelity: how much of the true feature lies in the span of the history.

For step ``i`` and one trajectory, project ``F_i`` onto ``span{F_{i-1}, ..., F_{i-K}}`` (the last
``K`` steps of a full-compute run) by least squares; the fidelity is ``||proj|| / ||F_i||``
(the cosine between the feature and its projection). The paper reports > 0.95 on most steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def projection_fidelity(features: np.ndarray, K: int = 3) -> np.ndarray:
    """``features`` ``(T, N, *shape)`` -> fidelity ``(N,)`` averaged over trajectories (NaN for i < 1)."""
    T, N = features.shape[:2]
    F = features.reshape(T, N, -1).astype(np.float64)  # (T, N, D)
    out = np.full(N, np.nan)
    for i in range(1, N):
        vals = []
        for t in range(T):
            H = F[t, max(0, i - K):i][::-1].T  # (D, k) newest first
            y = F[t, i]
            coef = np.linalg.lstsq(H, y, rcond=None)[0]
            vals.append(np.linalg.norm(H @ coef) / max(np.linalg.norm(y), 1e-30))
        out[i] = float(np.mean(vals))
    return out


def fidelity_table(fid: np.ndarray, residual: dict[str, float] | None = None) -> str:
    """A text table: step, projection fidelity, and the fitted predictor's relative residual."""
    lines = [f"{'step':>4s} {'fidelity':>9s} {'fit_resid':>9s}"]
    for i, f in enumerate(fid):
        r = (residual or {}).get(str(i))
        lines.append(f"{i:4d} {f:9.4f} {'' if r is None else f'{r:9.4f}':>9s}")
    return "\n".join(lines)


def plot_fidelity(fid: np.ndarray, path: Path, K: int, residual: dict[str, float] | None = None,
                  schedule: tuple[int, ...] = ()) -> Path:
    """Write a PNG of fidelity per step (and the fit residual), computed steps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_open

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    ax.plot(np.arange(len(fid)), fid, "o-", ms=3, label=f"projection fidelity (span of last {K})")
    if residual:
        steps = sorted(int(k) for k in residual)
        ax.plot(steps, [1 - residual[str(s)] for s in steps], "s", ms=3, label="1 - fitted predictor residual")
    for s in schedule:
        ax.axvline(s, color="0.85", lw=0.8, zorder=0)
    ax.axhline(0.95, color="r", ls="--", lw=0.8, label="0.95")
    ax.set_xlabel("step")
    ax.set_ylim(min(0.5, float(np.nanmin(fid)) - 0.02), 1.005)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("How much of each step's feature lies in the span of the history")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path
