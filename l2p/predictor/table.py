"""The coefficient table: the linear form every predictor (learned or fixed-formula) shares.

A run has ``N`` steps ``i = 0 .. N-1``; the schedule lists the computed steps. On a step ``i``
that is *not* computed the feature is forecast as::

    F_hat[i] = sum_{j<K} W[i, j] * F(s_j)  +  sum_{j<K} U[i, j] * x(s_j)  +  V[i] * x[i]

where ``s_0 > s_1 > ...`` are the last ``K`` computed steps before ``i``, NEWEST FIRST, ``F(s)``
is the tapped feature at step ``s``, ``x(s)`` the latent fed to the transformer at step ``s``
and ``x[i]`` the current latent. Rows of computed steps are zero (unused). Columns ``j`` for
which no computed step exists yet (fewer than ``K`` computed before ``i``) have zero weight.

Coefficients are float64 here; the ONNX predictor graph stores them as float32 constants.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .schedule import history_before, validate_schedule


@dataclass(frozen=True, eq=False)
class CoefficientTable:
    """Per-step linear coefficients over the last ``K`` computed features (newest first).

    Attributes:
        W: float64 ``[N, K]``: weights of the features ``F(s_j)``.
        U: float64 ``[N, K]``: weights of the latents ``x(s_j)`` (all zero unless ``uses_latents``).
        V: float64 ``[N]``: weight of the current latent ``x[i]`` (all zero unless ``uses_latents``).
        computed: the schedule: sorted computed steps, step 0 included.
        K: history length (ring buffer size).
        uses_latents: whether ``U``/``V`` are used (the predictor graph then takes latents).

    Arrays are copied to read-only float64 on construction. Raises :class:`InputError` for
    wrong shapes, non-finite values, non-zero rows on computed steps, non-zero weights on
    history that does not exist yet, or non-zero ``U``/``V`` with ``uses_latents=False``.
    """

    W: np.ndarray
    U: np.ndarray
    V: np.ndarray
    computed: tuple[int, ...]
    K: int
    uses_latents: bool

    def __post_init__(self) -> None:
        if isinstance(self.K, bool) or not isinstance(self.K, (int, np.integer)) or self.K < 1:
            raise InputError(f"coefficient table: K={self.K!r} is not allowed; use an integer >= 1")
        object.__setattr__(self, "K", int(self.K))
        W = _frozen_f64(self.W, "W")
        if W.ndim != 2 or W.shape[1] != self.K or W.shape[0] < 1:
            raise InputError(f"coefficient table: W has shape {list(W.shape)}, expected [N, K={self.K}] with N >= 1")
        n = W.shape[0]
        U = _frozen_f64(self.U, "U")
        V = _frozen_f64(self.V, "V")
        if U.shape != (n, self.K):
            raise InputError(f"coefficient table: U has shape {list(U.shape)}, expected [{n}, {self.K}] like W")
        if V.shape != (n,):
            raise InputError(f"coefficient table: V has shape {list(V.shape)}, expected [{n}]")
        object.__setattr__(self, "W", W)
        object.__setattr__(self, "U", U)
        object.__setattr__(self, "V", V)
        object.__setattr__(self, "computed", validate_schedule(self.computed, n, "coefficient table schedule"))
        object.__setattr__(self, "uses_latents", bool(self.uses_latents))
        if not self.uses_latents and (U.any() or V.any()):
            raise InputError("coefficient table: U or V has non-zero entries but uses_latents=False; "
                             "set uses_latents=True or zero them")
        rows = np.asarray(self.computed)
        if W[rows].any() or U[rows].any() or V[rows].any():
            bad = [int(s) for s in rows if W[s].any() or U[s].any() or V[s].any()]
            raise InputError(f"coefficient table: rows of computed steps {bad} must be zero (they are unused)")
        for i in range(n):
            h = len(self.history(i))
            if W[i, h:].any() or U[i, h:].any():
                raise InputError(
                    f"coefficient table: step {i} has non-zero weight on history columns >= {h}, but only "
                    f"{h} computed step(s) precede it ({self.history(i)}); those columns must be zero"
                )

    @property
    def num_steps(self) -> int:
        """``N``, the number of sampling steps."""
        return int(self.W.shape[0])

    def is_computed(self, i: int) -> bool:
        """Whether step ``i`` runs the transformer."""
        self._check_step(i)
        return i in self.computed

    def history(self, i: int) -> list[int]:
        """The (at most ``K``) computed steps before ``i``, newest first: ``[s_0, s_1, ...]``."""
        self._check_step(i)
        return history_before(self.computed, i, self.K)

    def predict(
        self,
        i: int,
        features: list[np.ndarray],
        latents: list[np.ndarray] | None = None,
        latent: np.ndarray | None = None,
    ) -> np.ndarray:
        """Evaluate the linear form in numpy (float64 accumulation; a reference, not the fast path).

        Args:
            i: a predicted (not computed) step.
            features: ``F(s_j)`` newest first, at least ``len(history(i))`` arrays of one shape.
            latents: ``x(s_j)`` newest first (needed when ``uses_latents``).
            latent: ``x[i]`` (needed when ``uses_latents``).

        Returns:
            the forecast, same shape as a feature, float64.
        """
        if self.is_computed(i):
            raise InputError(f"step {i} is computed in this schedule; there is nothing to predict")
        h = len(self.history(i))
        if len(features) < h:
            raise InputError(f"step {i} needs {h} past features (newest first), got {len(features)}")
        out = sum(self.W[i, j] * np.asarray(features[j], np.float64) for j in range(h))
        if self.uses_latents:
            if latents is None or latent is None or len(latents) < h:
                raise InputError(f"step {i}: this table uses latents; pass {h} past latents and the current latent")
            out = out + sum(self.U[i, j] * np.asarray(latents[j], np.float64) for j in range(h))
            out = out + self.V[i] * np.asarray(latent, np.float64)
        return np.asarray(out)

    def arrays(self) -> dict[str, np.ndarray]:
        """``{"W", "U", "V"}`` as float64 arrays (for saving)."""
        return {"W": self.W, "U": self.U, "V": self.V}

    def describe(self) -> dict[str, Any]:
        """A small JSON-able summary (no coefficients)."""
        return {"num_steps": self.num_steps, "K": self.K, "computed": list(self.computed),
                "uses_latents": self.uses_latents}

    @classmethod
    def zeros(
        cls, num_steps: int, K: int, computed: tuple[int, ...], uses_latents: bool = False
    ) -> CoefficientTable:
        """An all-zero table (every predicted step forecasts zero; a placeholder or starting point)."""
        return cls(np.zeros((num_steps, K)), np.zeros((num_steps, K)), np.zeros(num_steps),
                   tuple(computed), K, uses_latents)

    def _check_step(self, i: int) -> None:
        if not 0 <= i < self.num_steps:
            raise InputError(f"step {i} is outside [0, {self.num_steps - 1}] for a table of {self.num_steps} steps")


def _frozen_f64(a: Any, name: str) -> np.ndarray:
    arr = np.array(a, dtype=np.float64, copy=True)
    if not np.isfinite(arr).all():
        raise InputError(f"coefficient table: {name} contains NaN or Inf; all coefficients must be finite")
    arr.setflags(write=False)
    return arr
