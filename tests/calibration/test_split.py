"""Fit / score splits of the calibration runs (--rows, --holdout)."""

from __future__ import annotations

import numpy as np
import pytest

from l2p.calibration.split import Part, check_holdout, holdout_split, parse_rows, search_folds, select_rows
from l2p.errors import InputError


def test_part_index_is_seed_major() -> None:
    assert Part((1, 3), (0, 2)).index(4).tolist() == [1, 3, 9, 11]
    assert Part((0, 1, 2), (1,)).index(3).tolist() == [3, 4, 5]


@pytest.mark.parametrize("rows, seeds, f, held_rows, held_seeds", [
    (8, 4, 0.25, (2, 6), (0, 1, 2, 3)),
    (4, 2, 0.25, (2,), (0, 1)),
    (2, 3, 0.9, (1,), (0, 1, 2)),  # always leaves a row to fit on
    (1, 4, 0.5, (0,), (1, 3)),  # one row: seeds are held out
])
def test_holdout_split(rows: int, seeds: int, f: float, held_rows: tuple, held_seeds: tuple) -> None:
    fit, held = holdout_split(rows, seeds, f)
    assert held is not None and (held.rows, held.seeds) == (held_rows, held_seeds)
    assert not set(fit.index(rows).tolist()) & set(held.index(rows).tolist())  # disjoint runs
    assert fit.size + held.size == rows * seeds  # together: every run
    assert search_folds(fit, held, 64) == [(fit, held)]


def test_no_holdout() -> None:
    fit, held = holdout_split(3, 4, 0.0)
    assert held is None and fit == Part((0, 1, 2), (0, 1, 2, 3))
    # the search never scores a run with weights fitted on it: seed 0 by the other seeds' fit ...
    assert search_folds(fit, None, 3) == [(Part((0, 1, 2), (1, 2, 3)), Part((0, 1, 2), (0,)))]
    # ... then, while the run budget lasts, the other seeds by seed 0's fit
    folds = search_folds(fit, None, 9)
    assert folds[1] == (Part((0, 1, 2), (0,)), Part((0, 1, 2), (1, 2)))
    for f, score in folds:
        assert not set(f.index(3).tolist()) & set(score.index(3).tolist())
    assert sum(score.size for _, score in folds) == 9
    assert sum(score.size for _, score in search_folds(fit, None, 100)) == 12  # every run scored once
    assert len(search_folds(fit, None, 100, second=False)) == 1
    one = Part((0,), (0,))
    assert search_folds(one, None, 16) == [(one, one)]  # one seed: nothing else to do


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, float("nan"), True])
def test_holdout_refusals(bad: float) -> None:
    with pytest.raises(InputError, match="--holdout"):
        check_holdout(bad)
    with pytest.raises(InputError, match="nothing to fit on"):
        holdout_split(1, 1, 0.5)


def test_rows() -> None:
    cond = {"a": np.arange(5 * 2).reshape(5, 2), "b": np.arange(5)}
    assert parse_rows("0, 2,4") == (0, 2, 4)
    sub = select_rows(cond, parse_rows("4,0"))
    assert sub["b"].tolist() == [4, 0] and sub["a"].tolist() == [[8, 9], [0, 1]]
    assert select_rows(cond, None) is cond
    for text, words in [("0,5", "rows [5] are out of range"), ("1,1", "listed once"), ("-1", "out of range")]:
        with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
            select_rows(cond, parse_rows(text))
    with pytest.raises(InputError, match="comma-separated row numbers"):
        parse_rows("0,x")


def test_capped_keeps_spread_rows_and_first_seeds() -> None:
    from l2p.calibration.split import capped

    part = Part(tuple(range(32)), (0, 1))
    assert capped(part, 64) == part
    assert capped(part, 32) == Part(tuple(range(32)), (0,))
    small = capped(part, 16)
    assert small.seeds == (0,) and small.size == 16 and small.rows == tuple(range(1, 32, 2))
    assert capped(Part((0, 1, 2), (0, 1, 2, 3, 4)), 7) == Part((0, 1, 2), (0, 1))


def test_run_caps_scale_with_the_cost_of_a_run() -> None:
    from l2p.calibration.calibrate import run_cap

    assert [run_cap(16, m) for m in (20, 10, 7, 5, 2, 1)] == [16, 16, 22, 32, 64, 64]
    assert run_cap(32, 10) == 32 and run_cap(32, 5) == 64 and run_cap(32, 0) == 64
