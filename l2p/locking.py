"""Advisory locks on what l2p writes: a bundle (export, calibrate), a predictor name, a run folder.

``fcntl.flock`` on a small lock file, never waiting: a second writer stops at once with a
one-line :class:`~l2p.errors.BusyError` that names the holder (pid and command line). The kernel
drops a lock when its process ends, even on SIGKILL, so a crash never leaves a stale lock.
Lock files are l2p's own: ``.l2p.lock`` inside a folder, or ``.NAME.lock`` beside a predictor;
bundle manifests do not list them. An exclusive holder removes its lock file when it is done; a
shared one leaves it (another shared holder may still hold it).

Readers (``l2p sample`` reading a bundle) take no lock: writers replace whole files and folders
atomically, so a reader sees the old or the new version, never a mix.

Torch-free.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BusyError

LOCK_NAME = ".l2p.lock"
_LINE = 240  # holder lines are padded to this width, so a later, shorter line overwrites all of one


def folder_lock_path(folder: str | os.PathLike[str]) -> Path:
    """The lock file of ``folder``: ``folder/.l2p.lock``."""
    return Path(folder) / LOCK_NAME


@contextmanager
def hold_lock(path: str | os.PathLike[str], what: str, shared: bool = False) -> Iterator[None]:
    """Hold ``flock`` on the file ``path`` (created if missing) for the ``with`` block.

    Args:
        path: the lock file; its folder must exist.
        what: the thing being written, for the message (``"bundle /data/b"``).
        shared: take a shared lock (several holders; excludes exclusive ones), e.g. a calibration
            reading a bundle that an export must not replace meanwhile.

    Raises:
        BusyError: another process holds a conflicting lock.
        OSError: the lock file cannot be created (read-only file system, missing folder...).

    A lock is tied to the file's inode: when the file was replaced between opening and locking
    (a folder swapped into place by :mod:`l2p.staging`), the lock is taken again on the new one.
    """
    path = Path(path)
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(
                    f"{what} is in use by another l2p process ({holders(path, fd)}; lock file {path}); "
                    "wait for it to finish and run this again"
                ) from None
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the folder was replaced meanwhile: lock the file that is there now
        time.sleep(0.01)
    else:
        raise BusyError(f"{what} keeps being replaced by another process; wait for it to finish and run this again")
    try:
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _describe_self().ljust(_LINE)[:_LINE].encode() + b"\n", 0)
        yield
    finally:
        if not shared:  # leave no lock file behind (a waiter that opened it re-checks the path, see above)
            try:
                if _same_file(fd, path):
                    path.unlink()
            except OSError:
                pass
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _describe_self() -> str:
    cmd = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    return f"pid {os.getpid()}: {cmd}"


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def holders(path: Path, fd: int) -> str:
    """Who holds the lock on ``path``: pids from ``/proc/locks`` with their command lines, else
    what the exclusive holder wrote into the file."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if "->" not in parts and len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == key:
                pids.append(int(parts[4]))
    except (OSError, ValueError):
        pass
    found = [f"pid {p}: {_cmdline(p)}".rstrip(": ") for p in sorted(set(pids)) if p > 0]
    if found:
        return "; ".join(found)
    try:
        text = os.pread(fd, 4 * _LINE, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
