"""What every safety case checks besides its own expectation.

- :func:`refused`: exit status 2 and exactly one ``error: ...`` line on stderr, no traceback.
- :func:`confined`: nothing under the test's folder changed outside the paths the command may
  write (its bundle or ``--out``, and the stage folders beside them, which must be gone
  afterwards), and no file there was opened outside those and the inputs it was given.
- :func:`tree`: a folder's files and their bytes, to prove nothing of the user's was deleted or mixed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from l2p.staging import STAGE_INFIX

from .helpers import cli

_OPENED: list[str] | None = None
#: the last answer of :func:`refused` / :func:`succeeds` in this test (the ``recorded`` fixture reports it)
LAST: dict[str, str] = {}


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_audit)


def refused(argv: list[str], *expect: str) -> str:
    """Run the CLI in this process: exit status 2 and exactly one ``error:`` line holding every ``expect``."""
    rc, _, err = cli(argv)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), f"exit status {rc}, stderr: {err!r}"
    assert "Traceback" not in err
    for e in expect:
        assert e in lines[0], f"expected {e!r} in: {lines[0]}"
    LAST.update(message=lines[0].removeprefix("error: "), outcome="refused")
    return lines[0]


def succeeds(argv: list[str]) -> str:
    """Run the CLI in this process: exit status 0, nothing on stderr; returns stdout."""
    rc, out, err = cli(argv)
    assert rc == 0 and not err.strip(), f"exit status {rc}, stderr: {err!r}"
    LAST.update(message=(out.strip().splitlines() or ["exit status 0"])[-1], outcome="ok")
    return out


@pytest.fixture(autouse=True)
def recorded(answer: Callable[..., None]) -> Iterator[None]:
    """Report the test's last l2p answer (``tools/robustness.py`` prints it); modules import this fixture."""
    LAST.clear()
    yield
    if LAST:
        answer(LAST["message"], outcome=LAST["outcome"])


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (relative) with the file's bytes (None for a folder)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = b"<link>" if os.path.islink(p) else Path(p).read_bytes()
    return out


def _inside(path: str, roots: tuple[Path, ...]) -> bool:
    p = Path(path)
    for r in roots:
        if p == r or p.is_relative_to(r):
            return True
        stage = r.parent / f".{r.name}{STAGE_INFIX}"
        if str(p).startswith(str(stage)):
            return True
    return False


@contextmanager
def confined(root: Path, *writable: Path, readable: tuple[Path, ...] = ()) -> Iterator[None]:
    """Fail when the block changes anything under ``root`` outside ``writable`` (and their stages,
    which must be gone at the end), or opens a file under ``root`` outside ``writable`` and ``readable``."""
    global _OPENED
    roots = tuple(Path(os.path.realpath(w)) for w in writable)
    before = {k: v for k, v in tree(root).items() if not _inside(str(root / k), roots)}
    _OPENED = []
    try:
        yield
    finally:
        opened, _OPENED = _OPENED, None
    after = {k: v for k, v in tree(root).items() if not _inside(str(root / k), roots)}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, b"?") != after.get(k, b"?"))
    assert not changed, f"changed outside {[str(w) for w in writable]}: {changed}"
    stages = sorted(str(p) for r in roots for p in r.parent.glob(f".{r.name}{STAGE_INFIX}*"))
    assert not stages, f"stage folders left behind: {stages}"
    allowed = roots + tuple(Path(os.path.realpath(r)) for r in readable)
    strays = sorted({p for p in opened if Path(p).is_relative_to(root) and not _inside(p, allowed)})
    assert not strays, f"opened outside the bundle/--out and the inputs: {strays}"
