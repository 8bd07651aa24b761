"""Timing that tells the truth: warm-up, repeats, interleaving, paired ratios, noise marks.

One cold run against one warm run, on a machine where other work comes and goes, gives speed-ups
that flip between invocations. So:

- every task runs ``warmup`` times untimed first (lazy initialisation, arenas, caches);
- then ``repeats`` rounds, each running *every* task once, in an order that rotates per round, so
  drift (other load, clocks, thermal) hits all tasks alike;
- a speed-up is the median of per-round ratios (each against the same round's baseline), with
  its range over the rounds;
- a speed-up above its bound (the FLOPs reduction: a loop cannot run faster than the work it
  skips) is printed with a mark, as noise, not as a result.

Torch-free, numpy-free.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: footnote for values marked by :func:`format_speedup`
NOISE_NOTE = ("* above the FLOPs reduction, which bounds what skipping work can gain: timing noise "
              "(other load on the machine), not a result")

#: a task: runs once; returns the seconds it measured itself, or None to be timed from outside
Task = Callable[[], "float | None"]


@dataclass(frozen=True)
class Stat:
    """Median and range of repeated measurements (seconds, or ratios)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def ratio_to(self, other: Stat) -> Stat:
        """Per-round ``other / self`` (e.g. baseline seconds / these seconds = a speed-up)."""
        if len(other.samples) != len(self.samples):
            raise ValueError(f"paired ratios need equal rounds: {len(other.samples)} vs {len(self.samples)}")
        return Stat(tuple(o / s for o, s in zip(other.samples, self.samples)))


def interleaved(tasks: Mapping[str, Task], repeats: int = 3, warmup: int = 1) -> dict[str, Stat]:
    """Time ``tasks`` in ``repeats`` interleaved rounds after ``warmup`` untimed ones.

    Round ``r`` runs the tasks in their given order rotated by ``r``. A task returning a float is
    credited with that many seconds (e.g. its denoising loop only); one returning ``None`` with the
    wall time of the call.

    Returns:
        ``{name: Stat}`` with ``repeats`` samples each, in round order (pair them with
        :meth:`Stat.ratio_to`).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    names = list(tasks)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            got = tasks[name]()
            secs = time.perf_counter() - start if got is None else float(got)
            if r >= warmup:
                times[name].append(secs)
    return {n: Stat(tuple(t)) for n, t in times.items()}


def is_noise(speedup: float, bound: float) -> bool:
    """Whether ``speedup`` exceeds ``bound`` at the printed precision (two decimals)."""
    return round(speedup, 2) > round(bound, 2)


def format_speedup(speedup: float, bound: float | None = None) -> str:
    """``"4.93x"``, or ``"5.31x*"`` when above ``bound`` (see :data:`NOISE_NOTE`)."""
    mark = "*" if bound is not None and is_noise(speedup, bound) else ""
    return f"{speedup:.2f}x{mark}"
