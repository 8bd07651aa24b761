"""Schedules: which sampling steps run the transformer ("computed"); the rest are forecast.

A schedule for a run of ``N`` steps (``i = 0 .. N-1``) is a sorted tuple of distinct step
indices that always contains step 0 (nothing can be forecast before anything was computed).

Conventions shared by the builders here:

- ``warmup`` counts the first steps that are always computed, step 0 included; ``warmup=0``
  and ``warmup=1`` mean the same thing (only the mandatory step 0).
- ``M`` (``full_steps``) is the *total* number of computed steps, warm-up included, so the
  transformer cost of a run is exactly ``M`` forward passes.
- After warm-up the remaining ``R = M - w`` computed steps are spread over the ``L = N - w``
  later steps (``w = max(warmup, 1)``) *end-aligned*: the first one comes one gap after the
  last warm-up step and the last one is step ``N - 1`` (the final step, which decides the
  output, is always computed when ``R >= 1``). With ``R = 0`` only the warm-up is computed.

Torch-free.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError

Schedule = tuple[int, ...]


def validate_schedule(steps: Iterable[int], num_steps: int, what: str = "schedule",
                      full_steps: int | None = None, ordered: bool = False) -> Schedule:
    """Check a schedule and return it as a sorted tuple.

    Args:
        steps: computed step indices (any order, unless ``ordered``).
        num_steps: ``N``, the number of sampling steps.
        what: how messages name the schedule (``"--schedule"``).
        full_steps: when given, the number of computed steps the schedule must have (``M``).
        ordered: refuse steps that are not listed in increasing order (a schedule typed by a user).

    Raises:
        InputError: on ``N < 1``, non-integers, duplicates, steps out of order (with ``ordered``),
            indices outside ``[0, N)``, a schedule without step 0, or a count other than ``full_steps``.
    """
    check_count(num_steps, "number of steps", 1)
    raw = list(steps)
    out: list[int] = []
    for s in raw:
        try:
            if isinstance(s, (bool, np.bool_)):
                raise TypeError
            out.append(operator.index(s))
        except TypeError:
            raise InputError(
                f"{what}: step {s!r} is not an integer; expected step indices in [0, {num_steps})"
            ) from None
    if len(set(out)) != len(out):
        dup = sorted({s for s in out if out.count(s) > 1})
        raise InputError(f"{what}: steps {dup} appear more than once in {sorted(out)}; list each computed step once")
    if ordered and out != sorted(out):
        a, b = next((a, b) for a, b in zip(out, out[1:]) if b < a)
        raise InputError(f"{what}: steps must be listed in increasing order, but {b} comes after {a} in {out}; "
                         f"e.g. {','.join(map(str, sorted(out)))}")
    bad = [s for s in out if not 0 <= s < num_steps]
    if bad:
        raise InputError(f"{what}: steps {bad} are outside [0, {num_steps - 1}] for a run of {num_steps} steps")
    if 0 not in out:
        raise InputError(
            f"{what}: {sorted(out)} does not contain step 0; step 0 is always computed "
            "(there is nothing to forecast from before it)"
        )
    if full_steps is not None and len(out) != full_steps:
        raise InputError(f"{what}: {len(out)} computed steps {sorted(out)}, but --full-steps is {full_steps}; "
                         "give as many steps as --full-steps, or drop --full-steps")
    return tuple(sorted(out))


def parse_schedule(text: str, num_steps: int, full_steps: int | None = None, what: str = "--schedule") -> Schedule:
    """A schedule typed as comma-separated step indices in increasing order, e.g. ``"0,1,2,4,11"``.

    Raises:
        InputError: for text that is not comma-separated integers, and as :func:`validate_schedule`
            with ``ordered=True`` (and the count checked against ``full_steps`` when given).
    """
    return validate_schedule(split_steps(text, what), num_steps, f"{what} {text}", full_steps, ordered=True)


def split_steps(text: str, what: str = "--schedule") -> tuple[int, ...]:
    """``"0,1,2,4"`` -> ``(0, 1, 2, 4)`` as typed (no range or order checks; see :func:`parse_schedule`).

    Raises:
        InputError: for text that is not comma-separated integers.
    """
    try:
        return tuple(int(p.strip()) for p in str(text).split(","))
    except ValueError:
        raise InputError(f"{what} {text!r}: give the computed steps as comma-separated integers in increasing "
                         "order, starting at 0, e.g. 0,1,2,4,11,18") from None


def format_schedule(schedule: Iterable[int]) -> str:
    """``(0, 1, 2, 4)`` -> ``"0,1,2,4"``: the form :func:`parse_schedule` reads."""
    return ",".join(str(s) for s in schedule)


def history_before(schedule: Sequence[int], i: int, K: int | None = None) -> list[int]:
    """The computed steps of ``schedule`` (sorted) before step ``i``, newest first: ``[s_0, s_1, ...]``,
    at most ``K`` of them (all for ``K=None``). The order every predictor row is written in."""
    return [s for s in reversed(schedule) if s < i][:K]


def schedule_from_list(steps: Iterable[int], num_steps: int) -> Schedule:
    """A schedule from an explicit list of computed steps (sorted and validated)."""
    return validate_schedule(steps, num_steps)


def interval_schedule(num_steps: int, full_steps: int, warmup: int = 1) -> Schedule:
    """Warm-up, then evenly spaced computed steps; exactly ``full_steps`` computed in total.

    With ``w = max(warmup, 1)``, ``R = full_steps - w`` and ``L = num_steps - w`` the schedule is
    ``0 .. w-1`` followed by ``s_j = (w - 1) + round(j * L / R)`` for ``j = 1 .. R`` (round half
    up, exact integer arithmetic). The gaps after warm-up are all ``floor(L/R)`` or
    ``ceil(L/R)`` and the last step ``N - 1`` is computed whenever ``R >= 1``.

    Example: ``interval_schedule(50, 10, 1)`` -> ``(0, 5, 11, 16, 22, 27, 33, 38, 44, 49)``.

    Raises:
        InputError: for ``N < 1``, ``full_steps < 1``, ``full_steps > N``, ``warmup < 0`` or
            ``warmup > full_steps``.
    """
    w, r, length = _check_counts(num_steps, full_steps, warmup)
    steps = list(range(w))
    # (2jL + R) // (2R) == floor(jL/R + 1/2): strictly increasing since L >= R.
    steps += [(w - 1) + (2 * j * length + r) // (2 * r) for j in range(1, r + 1)]
    return tuple(steps)


def power_schedule(num_steps: int, full_steps: int, warmup: int = 1, exponent: float = 1.0) -> Schedule:
    """Warm-up, then computed steps placed by a power law; exactly ``full_steps`` in total.

    With ``w``, ``R``, ``L`` as in :func:`interval_schedule`, the target positions are
    ``x_j = (w - 1) + L * (j / R) ** exponent`` for ``j = 1 .. R`` (``x_R = N - 1``).
    ``exponent = 1`` gives :func:`interval_schedule`; ``exponent > 1`` puts the computed steps
    closer together near the start, ``exponent < 1`` near the end. Positions are rounded half
    up, then made distinct: a forward pass pushes each step to at least one past its
    predecessor, a backward pass pulls each to at most one before its successor (and the last
    to ``N - 1``), which always yields ``R`` distinct steps in ``[w, N - 1]``.

    Raises:
        InputError: as :func:`interval_schedule`, and for a non-finite or non-positive exponent.
    """
    if not (isinstance(exponent, (int, float)) and math.isfinite(exponent) and exponent > 0):
        raise InputError(
            f"power schedule: exponent {exponent!r} is not allowed; use a finite number > 0 (1 = even spacing)"
        )
    w, r, length = _check_counts(num_steps, full_steps, warmup)
    if r == 0:
        return tuple(range(w))
    targets = [(w - 1) + length * (j / r) ** exponent for j in range(1, r + 1)]
    return (*range(w), *place_steps(targets, w, num_steps - 1))


def place_steps(targets: Sequence[float], first: int, last: int) -> list[int]:
    """Round target positions to distinct integer steps in ``[first, last]``, keeping their order.

    ``targets`` (increasing) are rounded half up, then a forward pass pushes each step to at
    least one past its predecessor (the first to at least ``first``) and a backward pass pulls
    each to at most one before its successor (the last to at most ``last``). With
    ``len(targets) <= last - first + 1`` this always yields distinct increasing steps.

    Raises:
        InputError: when more targets are given than steps lie in ``[first, last]``.
    """
    if len(targets) > last - first + 1:
        raise InputError(f"cannot place {len(targets)} computed steps in steps {first}..{last}")
    pos = [math.floor(float(x) + 0.5) for x in targets]
    prev = first - 1
    for j in range(len(pos)):  # forward: strictly increasing, from first on
        pos[j] = prev = max(pos[j], prev + 1)
    nxt = last + 1
    for j in reversed(range(len(pos))):  # backward: fits below last, still strictly increasing
        pos[j] = nxt = min(pos[j], nxt - 1)
    return pos


def fixed_interval_schedule(num_steps: int, interval: int, warmup: int = 1) -> Schedule:
    """TaylorSeer's own counter rule: warm-up, then every ``interval``-th step after it.

    Computed: ``0 .. w-1`` and ``w - 1 + interval * j`` (``j >= 1``) below ``N``; the number of
    computed steps follows from ``interval`` and the last step is computed only if it falls on
    the grid. Use :func:`interval_schedule` to fix the number of computed steps instead.
    """
    num_steps = check_count(num_steps, "number of steps", 1)
    interval = check_count(interval, "fixed interval schedule: interval", 1)
    w = max(check_count(warmup, "fixed interval schedule: warmup", 0, num_steps), 1)
    return (*range(w), *range(w - 1 + interval, num_steps, interval))


def taylorseer_cache_schedule(num_steps: int, interval: int, warmup: int = 3) -> Schedule:
    """The computed steps of diffusers' ``TaylorSeerCacheConfig(cache_interval=interval,
    disable_cache_before_step=warmup)``: steps ``0 .. warmup-1``, then ``warmup + 1 + interval * j``.

    Its step ``warmup`` is forecast (one step after the warm-up), e.g. ``(50, 7, 3)`` ->
    ``(0, 1, 2, 4, 11, 18, 25, 32, 39, 46)``: 10 computed steps, the last three forecast.
    """
    num_steps = check_count(num_steps, "number of steps", 1)
    interval = check_count(interval, "TaylorSeer cache schedule: interval", 1)
    warmup = check_count(warmup, "TaylorSeer cache schedule: warmup", 1, num_steps)
    return (*range(warmup), *range(warmup + 1, num_steps, interval))


#: warm-ups tried by :func:`taylorseer_pattern`, in order (diffusers' default ``disable_cache_before_step`` first)
PATTERN_WARMUPS = (3, 2, 4, 1)


def taylorseer_pattern(num_steps: int, full_steps: int) -> Schedule:
    """Diffusers' TaylorSeer cache pattern with exactly ``full_steps`` computed steps.

    The pattern of :func:`taylorseer_cache_schedule`: warm-up steps ``0 .. w-1``, step ``w``
    forecast, then every ``interval``-th step from ``w + 1``. For the first warm-up ``w`` of
    :data:`PATTERN_WARMUPS` where the natural interval ``ceil((N - w - 1) / (M - w))`` gives exactly
    ``M`` computed steps, that schedule (e.g. ``(50, 10)`` -> warm-up 3, interval 7:
    ``(0, 1, 2, 4, 11, 18, 25, 32, 39, 46)``); for budgets no interval reaches (e.g. 20/50), warm-up
    3 (at most ``M - 1``) and the other steps spread evenly from ``w + 1``, the same pattern with a
    fractional interval.
    """
    num_steps = check_count(num_steps, "number of steps", 1)
    full_steps = check_count(full_steps, "full steps", 1, num_steps)
    for w in PATTERN_WARMUPS:
        if w < full_steps and w + 1 < num_steps:
            sched = taylorseer_cache_schedule(num_steps, math.ceil((num_steps - w - 1) / (full_steps - w)), w)
            if len(sched) == full_steps:
                return sched
    w = min(PATTERN_WARMUPS[0], full_steps - 1)
    r, span = full_steps - w, num_steps - w - 1
    if w < 1 or span < r:  # one computed step (step 0), or too few steps for the skip after the warm-up
        return interval_schedule(num_steps, full_steps)
    return (*range(w), *(w + 1 + round(j * span / r) for j in range(r)))


def check_count(value: Any, what: str, lo: int, hi: int | None = None, note: str = "") -> int:
    """The one rule for every count l2p is given (steps, full steps, warm-up, seeds...).

    Args:
        value: an integer (``int`` or numpy integer; not a bool).
        what: how the caller names it in the message (``"--steps"``, ``"full steps"``...).
        lo, hi: the allowed range, both included (``hi=None``: no upper bound).
        note: appended to the message, e.g. ``" (the step count)"``.

    Returns:
        ``value`` as an ``int``.

    Raises:
        InputError: ``"<what> <value> is not an integer / is out of range; use an integer in lo..hi<note>"``.
    """
    allowed = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise InputError(f"{what} {value!r} is not an integer; use {allowed}{note}") from None
    if n < lo or (hi is not None and n > hi):
        raise InputError(f"{what} {n} is out of range; use {allowed}{note}")
    return n


def _check_counts(num_steps: int, full_steps: int, warmup: int) -> tuple[int, int, int]:
    """Validate ``(N, M, warmup)``; return ``(w, R, L)``."""
    num_steps = check_count(num_steps, "number of steps", 1)
    full_steps = check_count(full_steps, "full steps", 1, num_steps, f" for a run of {num_steps} steps "
                             "(the total number of computed steps, warm-up included)")
    warmup = check_count(warmup, "warmup", 0, full_steps, f" with {full_steps} full steps "
                         "(warm-up steps count towards the full steps; step 0 is always computed)")
    w = max(warmup, 1)
    return w, full_steps - w, num_steps - w
