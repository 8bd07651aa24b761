"""Schedule builders: exact counts, distinct sorted steps, warm-up, spacing, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from l2p.errors import InputError
from l2p.predictor.schedule import (
    fixed_interval_schedule,
    format_schedule,
    interval_schedule,
    parse_schedule,
    place_steps,
    power_schedule,
    schedule_from_list,
    taylorseer_cache_schedule,
)


def _check_common(s: tuple[int, ...], n: int, m: int, warmup: int) -> None:
    w = max(warmup, 1)
    assert len(s) == m, (s, n, m, warmup)
    assert list(s) == sorted(set(s))
    assert s[0] == 0 and s[-1] <= n - 1
    assert s[:w] == tuple(range(w))
    if m > w:
        assert s[-1] == n - 1  # end-aligned: the last step is computed after warm-up


def test_interval_examples() -> None:
    assert interval_schedule(50, 10, 1) == (0, 5, 11, 16, 22, 27, 33, 38, 44, 49)
    assert interval_schedule(13, 4, 1) == (0, 4, 8, 12)
    assert interval_schedule(10, 10, 3) == tuple(range(10))
    assert interval_schedule(10, 3, 3) == (0, 1, 2)
    assert interval_schedule(1, 1, 0) == (0,)
    assert interval_schedule(8, 2, 0) == interval_schedule(8, 2, 1) == (0, 7)


@pytest.mark.parametrize("n", [1, 2, 5, 13, 28])
def test_interval_properties(n: int) -> None:
    for m in range(1, n + 1):
        for warmup in range(0, m + 1):
            s = interval_schedule(n, m, warmup)
            _check_common(s, n, m, warmup)
            w = max(warmup, 1)
            r, length = m - w, n - w
            if r:
                gaps = np.diff(s[w - 1:])
                assert set(gaps) <= {length // r, -(-length // r)}, (s, gaps)


@pytest.mark.parametrize("exponent", [0.25, 0.5, 1.0, 1.5, 3.0, 6.0])
def test_power_properties(exponent: float) -> None:
    for n in (2, 7, 20, 50):
        for m in range(1, n + 1, max(1, n // 7)):
            for warmup in {0, 1, min(3, m)}:
                _check_common(power_schedule(n, m, warmup, exponent), n, m, warmup)


def test_power_exponent_one_is_interval_and_density() -> None:
    for n, m, w in [(50, 10, 1), (30, 8, 3), (20, 20, 2), (9, 4, 0)]:
        assert power_schedule(n, m, w, 1.0) == interval_schedule(n, m, w)
    even = np.mean(interval_schedule(50, 10, 1))
    assert np.mean(power_schedule(50, 10, 1, 2.0)) < even  # denser near the start
    assert np.mean(power_schedule(50, 10, 1, 0.5)) > even  # denser near the end
    early = power_schedule(50, 10, 1, 2.0)
    assert early[2] - early[1] < early[-1] - early[-2]


@pytest.mark.parametrize(
    "args, words",
    [
        ((0, 1, 0), ["number of steps 0", ">= 1"]),
        ((10, 0, 0), ["full steps 0", "1..10"]),
        ((10, 11, 1), ["full steps 11", "1..10"]),
        ((10, 3, 4), ["warmup 4", "0..3"]),
        ((10, 3, -1), ["warmup -1", "0..3"]),
        ((10, 3.0, 1), ["full steps 3.0"]),
    ],
)
def test_errors(args: tuple, words: list[str]) -> None:
    for build in (interval_schedule, power_schedule):
        with pytest.raises(InputError) as e:
            build(*args)
        for w in words:
            assert w in str(e.value)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_power_bad_exponent(bad: float) -> None:
    with pytest.raises(InputError, match="exponent"):
        power_schedule(10, 4, 1, bad)


def test_schedule_from_list() -> None:
    assert schedule_from_list([9, 0, 3, np.int64(5)], 10) == (0, 3, 5, 9)
    with pytest.raises(InputError, match="step 0"):
        schedule_from_list([1, 2], 10)
    with pytest.raises(InputError, match="more than once"):
        schedule_from_list([0, 2, 2], 10)
    with pytest.raises(InputError, match="outside"):
        schedule_from_list([0, 10], 10)
    with pytest.raises(InputError, match="not an integer"):
        schedule_from_list([0, 1.5], 10)


def test_fixed_interval_schedule() -> None:
    assert fixed_interval_schedule(50, 6, 1) == (0, 6, 12, 18, 24, 30, 36, 42, 48)
    assert fixed_interval_schedule(10, 3, 2) == (0, 1, 4, 7)
    with pytest.raises(InputError, match="interval 0"):
        fixed_interval_schedule(10, 0)


@pytest.mark.parametrize("text, full, words", [
    ("0,2,1", None, ["--schedule 0,2,1", "increasing order", "1 comes after 2", "e.g. 0,1,2"]),
    ("0,2,2", None, ["[2] appear more than once"]),
    ("0,3,10", None, ["[10] are outside [0, 9]", "10 steps"]),
    ("0,-1,3", None, ["increasing order"]),
    ("1,3,5", None, ["does not contain step 0"]),
    ("0,3,5", 4, ["3 computed steps", "--full-steps is 4"]),
    ("0,a,5", None, ["comma-separated integers"]),
    ("", None, ["comma-separated integers"]),
])
def test_parse_schedule_refusals(text: str, full: int | None, words: list[str]) -> None:
    with pytest.raises(InputError) as e:
        parse_schedule(text, 10, full)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_parse_schedule_accepts() -> None:
    assert parse_schedule("0,1,2,4,11", 50) == (0, 1, 2, 4, 11)
    assert parse_schedule(" 0, 3 ,9", 10, 3) == (0, 3, 9)
    assert format_schedule(parse_schedule("0,1,2,4", 5)) == "0,1,2,4"


def test_place_steps() -> None:
    assert place_steps([0.4, 0.6, 0.9], 1, 9) == [1, 2, 3]  # pushed apart from the first allowed step
    assert place_steps([8.6, 8.8, 9.4], 0, 9) == [7, 8, 9]  # pulled back below the last
    assert place_steps([2.5, 4.49, 7.0], 0, 9) == [3, 4, 7]  # half up
    with pytest.raises(InputError):
        place_steps([1, 2, 3], 5, 6)


def test_taylorseer_cache_schedule() -> None:
    # diffusers' TaylorSeerCacheConfig(cache_interval=7, disable_cache_before_step=3) at 50 steps
    assert taylorseer_cache_schedule(50, 7, 3) == (0, 1, 2, 4, 11, 18, 25, 32, 39, 46)
    assert taylorseer_cache_schedule(10, 3, 1) == (0, 2, 5, 8)
    with pytest.raises(InputError):
        taylorseer_cache_schedule(10, 3, 0)


def test_taylorseer_pattern_at_every_budget() -> None:
    """The TaylorSeer pattern a budget names: diffusers' ``cache_interval`` schedule where one fits
    (10/50: the issue's (0,1,2,4,11,...,46); 7/50: interval 12), a fractional interval otherwise,
    always exactly M sorted steps starting at 0."""
    from l2p.predictor.schedule import taylorseer_pattern

    assert taylorseer_pattern(50, 10) == (0, 1, 2, 4, 11, 18, 25, 32, 39, 46)
    assert taylorseer_pattern(50, 7) == (0, 1, 2, 4, 16, 28, 40)
    assert taylorseer_pattern(50, 14) == (0, 1, *range(3, 50, 4))  # warm-up 2, interval 4
    twenty = taylorseer_pattern(50, 20)  # no interval gives 20: warm-up 3, skip 3, even from 4
    assert twenty[:4] == (0, 1, 2, 4) and twenty[-1] == 47
    for n in (1, 2, 5, 28, 50):
        for m in range(1, n + 1):
            s = taylorseer_pattern(n, m)
            assert len(s) == m and s[0] == 0 and list(s) == sorted(set(s)) and s[-1] < n, (n, m, s)
