"""Projection fidelity: how much of the true feature lies in the span of the history.

For step ``i`` and one trajectory, project ``F_i`` onto ``span{F_{i-1}, ..., F_{i-K}}`` (the last
``K`` steps of a full-compute run) by least squares; the fidelity is ``||proj|| / ||F_i||``
(the cosine between the feature and its projection). The paper reports > 0.95 on most steps.
Near 1 the fidelity hides the differences between steps; ``sqrt(1 - fidelity²)``, the share of
the feature outside the span, shows them, so the plot and the table give that too.
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


def outside_span(fid: np.ndarray) -> np.ndarray:
    """The share of a feature's norm outside the span, ``sqrt(1 - fidelity²)`` (the projection is
    orthogonal): the relative error of the best linear forecast from those features. NaN stays NaN."""
    return np.sqrt(np.clip(1.0 - np.asarray(fid, np.float64) ** 2, 0.0, None))


def fidelity_table(fid: np.ndarray, residual: dict[str, float] | None = None) -> str:
    """A text table: step, projection fidelity, the share outside the span, and the fitted
    predictor's relative residual on its forecast steps."""
    lines = [f"{'step':>4s} {'fidelity':>9s} {'outside':>9s} {'fit_resid':>9s}"]
    for i, (f, o) in enumerate(zip(fid, outside_span(fid))):
        r = (residual or {}).get(str(i))
        lines.append(f"{i:4d} {f:9.6f} {o:9.2e} {'' if r is None else f'{r:9.2e}':>9s}")
    return "\n".join(lines)


def plot_fidelity(fid: np.ndarray, path: Path, K: int, residual: dict[str, float] | None = None,
                  schedule: tuple[int, ...] = ()) -> Path:
    """Write a PNG of the per-step relative forecast error on a log axis: the best linear forecast
    from the last ``K`` full-compute features (:func:`outside_span` of the fidelity) and the fitted
    predictor's residual on its forecast steps; computed steps are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_open

    floor = 1e-7  # a feature exactly in the span would sit at -inf on the log axis
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    for n, s in enumerate(schedule):
        ax.axvline(s, color="0.85", lw=1.0, zorder=0, label="computed step" if n == 0 else None)
    ax.axhline(float(outside_span(np.array([0.95]))[0]), color="r", ls=":", lw=0.8,
               label="fidelity 0.95 (the paper's threshold)")
    ax.semilogy(np.arange(len(fid)), np.maximum(outside_span(fid), floor), "o-", ms=3,
                label=f"best linear forecast from the last {K} full-compute steps: "
                + r"$\sqrt{1 - \mathrm{fidelity}^2}$")
    if residual:
        steps = sorted(int(k) for k in residual)
        ax.semilogy(steps, [max(residual[str(s)], floor) for s in steps], "s", ms=4,
                    label="L2P forecast from its computed steps (calibration set)")
    ax.set_xlabel("step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("relative error ||F - forecast|| / ||F||")
    ax.set_title("Per-step relative forecast error of the transformer's feature")
    ax.grid(alpha=0.3, which="both", axis="y")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
