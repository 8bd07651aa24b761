"""Which calibration runs fit the predictor and which only score it.

Calibration captures one full-compute trajectory per (seed, row) pair, stored seed-major: the
trajectory of seed number ``k`` and conditioning row ``r`` is number ``k * rows + r``. A
:class:`Part` names a set of rows and seeds (every pair of them); a split is two disjoint parts.

- ``--holdout F``: about the fraction ``F`` of the rows (spread over the list), or of the seeds
  when there is a single row, is kept out of every fit; calibration scores the predictor on it.
- without it, the schedule search fits on seeds ``1..`` and scores on seed ``0`` (all rows), then,
  where its run budget allows, fits on seed ``0`` and scores on the others: a candidate schedule
  is never scored on the runs its weights were fitted on (:func:`search_folds`).

Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Part:
    """Rows x seeds of the calibration set (indices into the conditioning rows and the seed list)."""

    rows: tuple[int, ...]
    seeds: tuple[int, ...]

    def index(self, num_rows: int) -> np.ndarray:
        """int64 ``(len(seeds) * len(rows),)``: trajectory numbers, seed-major as captured."""
        return np.array([k * num_rows + r for k in self.seeds for r in self.rows], dtype=np.int64)

    @property
    def size(self) -> int:
        return len(self.rows) * len(self.seeds)

    def to_json(self) -> dict[str, list[int]]:
        return {"rows": list(self.rows), "seeds": list(self.seeds)}

    def describe(self) -> str:
        return f"rows {list(self.rows)} x seeds {list(self.seeds)}"


def select_rows(cond: dict[str, np.ndarray], rows: Sequence[int] | None, what: str = "--rows") -> dict[str, np.ndarray]:
    """The conditioning restricted to ``rows`` (0-based, in the order given; ``None``: all).

    Raises:
        InputError: for an empty list, a repeated row or one outside the conditioning.
    """
    if rows is None:
        return cond
    n = len(next(iter(cond.values())))
    rows = list(rows)
    if not rows:
        raise InputError(f"{what}: give at least one row")
    bad = [r for r in rows if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < n]
    if bad:
        raise InputError(f"{what} {','.join(map(str, rows))}: rows {bad} are out of range: the conditioning has "
                         f"{n} rows (0..{n - 1})")
    if len(set(rows)) != len(rows):
        raise InputError(f"{what} {','.join(map(str, rows))}: each row may be listed once")
    idx = np.asarray(rows, dtype=np.int64)
    return {k: v[idx] for k, v in cond.items()}


def parse_rows(text: str, what: str = "--rows") -> tuple[int, ...]:
    """``"0,2,5"`` -> ``(0, 2, 5)`` (ranges are checked against the conditioning by :func:`select_rows`)."""
    try:
        return tuple(int(p.strip()) for p in str(text).split(","))
    except ValueError:
        raise InputError(f"{what} {text!r}: give comma-separated row numbers (0-based), e.g. 0,2,5") from None


def check_holdout(fraction: float) -> float:
    """``--holdout``: a fraction in ``[0, 1)`` (0 = none)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise InputError(f"--holdout {fraction!r} is out of range; give the fraction of the calibration rows "
                         "(or seeds, with one row) kept out of the fit, in [0, 1), e.g. 0.25")
    return float(fraction)


def _spread(n: int, count: int) -> tuple[int, ...]:
    """``count`` of ``0..n-1``, spread evenly (``(j + 1/2) * n / count``)."""
    return tuple(sorted({int((j + 0.5) * n / count) for j in range(count)}))


def holdout_split(num_rows: int, num_seeds: int, fraction: float) -> tuple[Part, Part | None]:
    """(fit part, held-out part) for ``--holdout fraction`` (``None`` held out for 0).

    Holds out ``max(1, round(fraction * rows))`` rows spread over the list; with a single row,
    that share of the seeds instead.

    Raises:
        InputError: when nothing would be left to fit on.
    """
    fraction = check_holdout(fraction)
    rows, seeds = tuple(range(num_rows)), tuple(range(num_seeds))
    if fraction == 0:
        return Part(rows, seeds), None
    if num_rows > 1:
        held = _spread(num_rows, min(max(1, round(fraction * num_rows)), num_rows - 1))
        return Part(tuple(r for r in rows if r not in held), seeds), Part(held, seeds)
    if num_seeds < 2:
        raise InputError(f"--holdout {fraction} with one conditioning row and one seed leaves nothing to fit on; "
                         "give more rows or --seeds 2 or more")
    held = _spread(num_seeds, min(max(1, round(fraction * num_seeds)), num_seeds - 1))
    return Part(rows, tuple(s for s in seeds if s not in held)), Part(rows, held)


def capped(part: Part, max_runs: int) -> Part:
    """At most ``max_runs`` of ``part``'s runs, for scores that many runs estimate well enough: all
    its rows with its first seeds, or (more rows than that) ``max_runs`` rows spread over the list
    with its first seed."""
    if part.size <= max_runs:
        return part
    if len(part.rows) >= max_runs:
        return Part(tuple(part.rows[i] for i in _spread(len(part.rows), max_runs)), part.seeds[:1])
    return Part(part.rows, part.seeds[:max_runs // len(part.rows)])


def search_folds(fit: Part, held: Part | None, max_runs: int, second: bool = True) -> list[tuple[Part, Part]]:
    """(fit, score) folds for the schedule search, together scoring at most ``max_runs`` runs, none
    of them with weights fitted on it: the held-out part when there is one; else seed 0 of the fit
    part scored with weights fitted on its other seeds, then (with ``second``, while under
    ``max_runs``) the other seeds scored with weights fitted on seed 0; with one seed, the same runs
    do both."""
    if held is not None:
        return [(fit, capped(held, max_runs))]
    if len(fit.seeds) < 2:
        return [(fit, capped(fit, max_runs))]
    first, rest = Part(fit.rows, fit.seeds[:1]), Part(fit.rows, fit.seeds[1:])
    folds = [(rest, capped(first, max_runs))]
    left = max_runs - folds[0][1].size
    if left > 0 and second:
        folds.append((first, capped(rest, left)))
    return folds
