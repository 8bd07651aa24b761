"""``l2p.timing``: warm-up rounds are dropped, rounds interleave all tasks in a rotating order,
speed-ups pair each round with its own baseline. Fake tasks report fixed seconds: no clock."""

from __future__ import annotations

import pytest

from l2p.timing import Stat, format_speedup, interleaved, is_noise


def test_interleaved_rounds_rotate_and_drop_the_warmup() -> None:
    calls: list[str] = []
    secs = {"a": iter([9.0, 1.0, 2.0, 3.0]), "b": iter([9.0, 10.0, 20.0, 30.0]), "c": iter([9.0, 5.0, 5.0, 5.0])}

    def task(name: str):  # type: ignore[no-untyped-def]
        return lambda: (calls.append(name), next(secs[name]))[1]

    got = interleaved({n: task(n) for n in "abc"}, repeats=3, warmup=1)
    assert calls == list("abc" "bca" "cab" "abc")  # round r starts at task r mod 3
    assert got["a"].samples == (1.0, 2.0, 3.0) and got["b"].samples == (10.0, 20.0, 30.0)
    speed = got["a"].ratio_to(got["b"])  # b's seconds / a's seconds, round by round
    assert speed.samples == (10.0, 10.0, 10.0) and speed.median == 10.0
    assert (got["c"].median, got["c"].low, got["c"].high) == (5.0, 5.0, 5.0)


def test_a_task_returning_none_is_timed_from_outside() -> None:
    got = interleaved({"x": lambda: None}, repeats=2, warmup=0)
    assert len(got["x"].samples) == 2 and all(s >= 0 for s in got["x"].samples)


def test_ratios_need_paired_rounds_and_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="equal rounds"):
        Stat((1.0, 2.0)).ratio_to(Stat((1.0,)))
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"x": lambda: 1.0}, repeats=0)


def test_noise_mark() -> None:
    assert format_speedup(4.93, 4.98) == "4.93x" and not is_noise(4.93, 4.98)
    assert format_speedup(5.31, 4.98) == "5.31x*" and is_noise(5.31, 4.98)
    assert format_speedup(4.981, 4.98) == "4.98x"  # equal at the printed precision: not marked
    assert format_speedup(7.0) == "7.00x"
