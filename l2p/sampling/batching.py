"""Batches larger than an engine takes: the largest batch it accepts, and running in chunks.

An engine takes any batch unless it has fixed limits: a TensorRT plan's optimisation profile
(:meth:`~l2p.engine.base.Engine.accepts`; ONNX Runtime accepts everything). A run of ``B``
images goes through each engine as one batch when the engine takes it, else in consecutive
chunks of the largest batch it takes (found by binary search on ``accepts``, which assumes a
profile whose smallest batch is 1, e.g. ``l2p build --min batch=1 --max batch=8``; with a larger
smallest batch, a chunk below it stops with the engine's own profile error, never a wrong image).
Image ``k`` of a chunked run is the image ``k`` of the same run in one batch: every row is
computed independently of the others.

- :func:`largest_batch`: the search;
- :func:`run_in_chunks`: one engine call, split (text encoders, VAE decoder);
- :func:`transformer_plan`: the rows per denoising chunk, and whether both CFG branches go in one
  ``2b`` call (see :func:`~l2p.sampling.guidance.fusable`);
- :func:`merge_loops`: the :class:`~l2p.sampling.loop.LoopResult` of the whole run from its chunks'.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.base import Engine
from ..spec import IOSpec
from .families.base import FamilyRuntime
from .guidance import fusable
from .loop import LoopResult, StepRecord

#: the symbolic name of the leading batch dimension in every exported graph's io spec
BATCH = "batch"


def largest_batch(fits: Callable[[int], bool], batch: int) -> int:
    """The largest ``b`` in ``1..batch`` with ``fits(b)``; 0 when not even 1 fits.

    ``fits`` must be monotone (true up to a limit, false above it); ``batch`` itself is tried
    first, so an engine without limits costs one call.
    """
    if batch < 1 or fits(batch):
        return max(batch, 0)
    lo, hi = 0, batch  # fits(lo) (or lo == 0), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _batched(spec: IOSpec, name: str, output: bool = False) -> bool:
    return (spec.output(name) if output else spec.input(name)).shape[:1] == (BATCH,)


def cut(arrays: Mapping[str, Any], spec: IOSpec, rows: slice) -> dict[str, Any]:
    """``rows`` of every input with a leading batch dimension in ``spec``; the others as they are."""
    return {k: v[rows] if _batched(spec, k) else v for k, v in arrays.items()}


def shapes_at(arrays: Mapping[str, Any], spec: IOSpec, batch: int) -> dict[str, tuple[int, ...]]:
    """The shapes ``arrays`` (engine inputs) would have at ``batch`` rows."""
    return {k: (batch, *v.shape[1:]) if _batched(spec, k) else tuple(v.shape) for k, v in arrays.items()}


def chunks(total: int, size: int) -> list[slice]:
    """Consecutive row slices of at most ``size`` rows covering ``0..total``."""
    return [slice(s, min(s + size, total)) for s in range(0, total, max(size, 1))]


def run_in_chunks(engine: Engine, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``engine.run(feed)`` in consecutive chunks of the largest batch the engine accepts; the
    outputs with a batch dimension are concatenated along it (in row order).

    A feed the engine takes whole, or one without a consistent batch, runs in one call (the
    engine's own checks then speak).
    """
    spec = engine.spec
    rows = {v.shape[0] for k, v in feed.items() if _batched(spec, k)}
    if len(rows) != 1:
        return engine.run(dict(feed))
    total = rows.pop()
    size = largest_batch(lambda b: engine.accepts(shapes_at(feed, spec, b)), total) or total
    if size >= total:
        return engine.run(dict(feed))
    parts = [engine.run(cut(feed, spec, s)) for s in chunks(total, size)]
    return {k: np.concatenate([p[k] for p in parts]) if _batched(spec, k, output=True) else parts[0][k]
            for k in parts[0]}


@dataclass(frozen=True)
class BatchPlan:
    """How a run of ``total`` images goes through the transformer.

    Attributes:
        total: images (rows) of the run.
        size: rows per chunk (``total``: one chunk).
        fused: under classifier-free guidance, both branches in one call at batch ``2 * size``.
    """

    total: int
    size: int
    fused: bool = False

    @property
    def slices(self) -> list[slice]:
        return chunks(self.total, self.size)

    @property
    def count(self) -> int:
        """How many chunks."""
        return len(self.slices)


def transformer_plan(engine: Engine, rt: FamilyRuntime, static: Mapping[str, np.ndarray],
                     negative: Mapping[str, np.ndarray] | None, total: int, fuse: bool = True,
                     chunk: bool = True) -> BatchPlan:
    """The chunks of a run of ``total`` rows through the transformer ``engine``.

    Unguided (``negative`` is ``None``): chunks of the largest batch the engine accepts. Guided:
    with ``fuse``, the largest ``b`` whose two branches go in one ``2b`` call
    (:func:`~l2p.sampling.guidance.fusable`: the profile takes ``2b`` and the negative inputs agree
    with the conditional ones); when none does, the largest ``b`` that both branches take in
    separate calls. Without ``chunk`` the run is one chunk (fused when ``2 * total`` fits).
    When the engine accepts no batch at all, one chunk: its own error then says what it takes.

    Args:
        static: the conditional static inputs at ``total`` rows (``rt.static_inputs``).
        negative: the negative branch's static inputs, or ``None`` (unguided).
    """
    spec = engine.spec
    step = rt.step_inputs(np.broadcast_to(np.zeros((), np.float32), rt.latent_shape(total)), 1.0)  # shapes only

    def fused_fits(b: int) -> bool:
        assert negative is not None
        rows = slice(0, b)
        return fusable(engine, cut(static, spec, rows), cut(negative, spec, rows), cut(step, spec, rows))

    def fits(b: int) -> bool:
        return all(engine.accepts(shapes_at({**s, **step}, spec, b)) for s in (static, negative) if s is not None)

    if not chunk:
        return BatchPlan(total, total, negative is not None and fuse and fused_fits(total))
    if negative is not None and fuse:
        size = largest_batch(fused_fits, total)
        if size:
            return BatchPlan(total, size, True)
    return BatchPlan(total, largest_batch(fits, total) or total, False)


def merge_loops(parts: Sequence[LoopResult]) -> LoopResult:
    """The record of a run from its chunks' (in row order): final latents concatenated, each
    step's seconds summed over the chunks, ``chunks`` counted (engine calls scale with it)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    steps = [StepRecord(s.index, s.timestep, s.computed, sum(p.steps[i].seconds for p in parts))
             for i, s in enumerate(first.steps)]
    return LoopResult(np.concatenate([p.latents for p in parts]), steps, first.calls_per_step,
                      first.evaluations_per_step, chunks=sum(p.chunks for p in parts))
