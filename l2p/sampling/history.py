"""Ring buffer of the last K computed features (and latents) for the predictor engine.

The buffer is preallocated once, ``(K, *feature_shape)``; a computed step writes its feature into
one slot. The predictor engine reads the whole buffer as-is and gets ``perm`` (the newest-first
rank of each slot), so nothing is rolled, stacked or copied on predicted steps.

The slots live in the loop's array namespace ``xp`` (numpy, or cupy on the GPU); the bookkeeping
of which step each slot holds is a small host array, and the ``perm`` of every forecast step
follows from the schedule alone, so :func:`forecast_index_inputs` computes them all up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np


class FeatureHistory:
    """``K`` slots of features ``(K, *shape)`` ``dtype`` (default float32) and optionally latents, in ``xp``."""

    def __init__(self, K: int, feature_shape: tuple[int, ...], latent_shape: tuple[int, ...] | None,
                 dtype: Any = "float32", xp: ModuleType = np) -> None:
        self.K = K
        self.features = xp.zeros((K, *feature_shape), dtype=dtype)  # (K, B, S, C)
        self.latents = None if latent_shape is None else xp.zeros((K, *latent_shape), dtype=dtype)
        self.steps = np.full(K, -1, dtype=np.int64)  # host: step held by each slot, -1 = empty
        self._next = 0

    def push(self, step: int, feature: Any, latent: Any = None) -> None:
        """Store a computed step's feature (one copy into the preallocated slot, on the same device)."""
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


def forecast_index_inputs(computed: Sequence[bool], K: int, xp: ModuleType = np) -> dict[int, dict[str, Any]]:
    """The predictor's ``step`` and ``perm`` inputs for every forecast step, uploaded once.

    Replays the ring buffer's bookkeeping over the schedule (``computed[i]``: step ``i`` runs the
    transformer) on the host, then makes one ``xp`` array per input: ``step`` ``(F, 1)`` and
    ``perm`` ``(F, K)`` int64 for the ``F`` forecast steps that follow a computed one.

    Returns:
        ``{step i: {"step": (1,) int64, "perm": (K,) int64}}``, rows (views) of those two arrays.
    """
    ring = FeatureHistory(K, (0,), None)  # bookkeeping only: zero-size slots
    steps: list[int] = []
    perms: list[np.ndarray] = []
    for i, c in enumerate(computed):
        if c:
            ring.push(i, np.empty(0, np.float32))
        elif ring.newest_first():
            steps.append(i)
            perms.append(ring.perm())
    if not steps:
        return {}
    step_dev = xp.asarray(np.array(steps, np.int64)[:, None])  # (F, 1)
    perm_dev = xp.asarray(np.stack(perms))  # (F, K)
    return {i: {"step": step_dev[n], "perm": perm_dev[n]} for n, i in enumerate(steps)}
