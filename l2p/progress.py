"""Progress bars for long work, handed in as a factory so that library code never imports tqdm.

A :data:`BarFactory` takes ``(total, description, unit)`` and returns a :class:`Bar`. Library
functions (calibration, capture, the closed loop) take one and default to :func:`no_bar`; the
CLI passes :func:`terminal_bar`: tqdm on stderr with counts, rate and time left, shown only
when stderr is a terminal (logs and pipes stay clean).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Bar(Protocol):
    """What long work needs of a progress bar."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


#: ``(total, description, unit) -> Bar``
BarFactory = Callable[[int, str, str], Bar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def no_bar(total: int, desc: str, unit: str = "it") -> Bar:
    """A bar that shows nothing (the default of library code)."""
    return _NoBar()


def terminal_bar(total: int, desc: str, unit: str = "it") -> Bar:
    """A tqdm bar on stderr when it is a terminal (else disabled); leaves no line behind."""
    from tqdm import tqdm

    bar: Bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr,
                    disable=not sys.stderr.isatty(), dynamic_ncols=True)
    return bar


@contextmanager
def bar_of(factory: BarFactory, total: int, desc: str, unit: str = "it") -> Iterator[Bar]:
    """``with bar_of(factory, n, "fit variants", "fit") as bar: ... bar.update()``; closed on exit."""
    bar = factory(total, desc, unit)
    try:
        yield bar
    finally:
        bar.close()
