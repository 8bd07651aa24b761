"""Ring buffer of the last K computed features (and latents) for the predictor engine.

The buffer is preallocated once, ``(K, *feature_shape)``; a computed step writes its feature into
one slot. The predictor engine reads the whole buffer as-is and gets ``perm`` (the newest-first
rank of each slot), so nothing is rolled, stacked or copied on predicted steps.
"""

from __future__ import annotations

import numpy as np

from ..predictor.table import CoefficientTable


class FeatureHistory:
    """Holds ``K`` slots of features ``(K, *shape)`` float32 and, optionally, latents."""

    def __init__(self, K: int, feature_shape: tuple[int, ...], latent_shape: tuple[int, ...] | None,
                 dtype: str = "float32") -> None:
        self.K = K
        self.features = np.zeros((K, *feature_shape), dtype=dtype)  # (K, B, S, C)
        self.latents = None if latent_shape is None else np.zeros((K, *latent_shape), dtype=dtype)
        self.steps = np.full(K, -1, dtype=np.int64)  # step held by each slot, -1 = empty
        self._next = 0

    def push(self, step: int, feature: np.ndarray, latent: np.ndarray | None = None) -> None:
        """Store a computed step's feature (one copy into the preallocated slot)."""
        slot = self._next
        self.features[slot] = feature
        if self.latents is not None and latent is not None:
            self.latents[slot] = latent
        self.steps[slot] = step
        self._next = (slot + 1) % self.K

    def perm(self) -> np.ndarray:
        """``perm[slot]`` = newest-first rank of the step in ``slot``; empty slots rank last. int64 ``(K,)``."""
        key = np.where(self.steps >= 0, -self.steps, np.iinfo(np.int64).max)
        order = np.argsort(key, kind="stable")  # slots, newest first
        perm = np.empty(self.K, dtype=np.int64)
        perm[order] = np.arange(self.K)
        return perm

    def newest_first(self) -> list[int]:
        return [int(s) for s in sorted(self.steps[self.steps >= 0], reverse=True)]


def check_history(table: CoefficientTable, history: FeatureHistory, step: int) -> None:
    """Assert the buffer holds exactly the steps the table's row ``step`` expects."""
    want = table.history(step)[: table.K]
    got = history.newest_first()[: len(want)]
    if got != want:
        raise RuntimeError(f"predictor history mismatch at step {step}: have {got}, table expects {want}")
