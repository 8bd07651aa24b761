"""An engine with a batch limit, as a TensorRT plan's optimisation profile has one, around a real engine.

:class:`LimitedEngine` accepts (``Engine.accepts``) and runs only feeds whose batch dimension is at
most ``max_batch``, like a plan built with ``--max batch=N``; it refuses anything bigger the way
TensorRT does (an error, never a silent result), computes with the wrapped ONNX Runtime engine and
records the batch of every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from l2p.engine.base import Engine


class LimitedEngine(Engine):
    backend = "limited"

    def __init__(self, inner: Engine, max_batch: int) -> None:
        super().__init__(inner.name, inner.spec)
        self.inner, self.max_batch = inner, max_batch
        self.batches: list[int] = []  # the batch of every call

    def _batch(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        return max((s[0] for n, s in shapes.items() if self.spec.input(n).shape[:1] == ("batch",)), default=0)

    def accepts(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        return self._batch(shapes) <= self.max_batch

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = self._batch({k: v.shape for k, v in feed.items()})
        if batch > self.max_batch:
            raise AssertionError(f"{self.name}: batch {batch} is outside the profile (max {self.max_batch})")
        self.batches.append(batch)
        return self.inner.run(dict(feed), check=False)


def limit(sampler: Any, graph: str, max_batch: int) -> LimitedEngine:
    """Replace the sampler's engine for ``graph`` by a :class:`LimitedEngine` around it."""
    engine = LimitedEngine(sampler.engine(graph), max_batch)
    sampler._engines[graph] = engine
    return engine
