"""Replace a folder l2p owns as a whole: write the new version beside it, then swap them.

::

    with StagedFolder(out, f"bundle {out}") as st:   # out exists and its lock is held from here on
        ...                                          # look at out again, under the lock
        new = st.begin()                             # an empty .NAME.l2p-stage-XXXX/ beside out
        ...                                          # write the new version into new
        st.commit()                                  # new and out exchanged; the old version deleted

Until :meth:`StagedFolder.commit`, ``out`` is untouched: an error deletes the stage, a SIGKILL
leaves it behind (the next writer of ``out`` deletes it). The swap is one atomic
``renameat2(RENAME_EXCHANGE)`` on Linux, so a reader sees the old or the new folder, never a
missing or half-written one; elsewhere it is two renames. Callers decide whether ``out`` may be
replaced at all (:mod:`l2p.export.out_dir`, :mod:`l2p.sampling.run_dir`): this module deletes
only its own stages and the version it swapped out.

Torch-free.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import TracebackType

from .errors import BusyError, InputError
from .locking import LOCK_NAME, folder_lock_path, hold_lock

STAGE_INFIX = ".l2p-stage-"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2``); False where that is not available."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_into_place(new: Path, out: Path) -> Path:
    """Put the folder ``new`` at ``out`` (an existing folder); returns where the old ``out`` is now."""
    if _exchange(new, out):
        return new
    old = new.with_name(new.name + "-old")
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        raise
    return old


class StagedFolder:
    """Lock ``out`` (created if missing), stage its new version beside it, swap it in on commit.

    Args:
        out: the folder to (re)write; refused when it is a file or a symlink to one.
        what: names it in messages (``"bundle /data/b"``).
    """

    def __init__(self, out: str | os.PathLike[str], what: str) -> None:
        self.out = Path(out)
        self.what = what
        self.stage: Path | None = None
        self.committed = False
        self._created: list[Path] = []  # folders this object made (removed again when nothing was written)
        self._lock = hold_lock(folder_lock_path(self.out), what)

    def __enter__(self) -> StagedFolder:
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"{self.what}: '{self.out}' is a file; give a folder path")
        missing = [p for p in [self.out, *self.out.parents] if not p.exists()]
        for p in reversed(missing):
            if p.parent.exists() and not p.parent.is_dir():
                raise InputError(f"{self.what}: '{p.parent}' is a file, so '{self.out}' cannot be a folder; "
                                 "choose another path")
            p.mkdir()
            self._created.append(p)
        try:
            self._lock.__enter__()
        except BaseException:
            self._remove_created(holding=False)
            raise
        self._clean_stale()
        return self

    def begin(self) -> Path:
        """An empty stage folder beside ``out`` (same file system, same permissions as ``out``)."""
        self.stage = Path(tempfile.mkdtemp(prefix=f".{self.out.name}{STAGE_INFIX}", dir=self.out.parent))
        os.chmod(self.stage, stat.S_IMODE(self.out.stat().st_mode))
        return self.stage

    def commit(self) -> None:
        """Swap the stage into place and delete the version it replaced."""
        if self.stage is None:
            raise RuntimeError("StagedFolder.commit() before begin()")
        old = swap_into_place(self.stage, self.out)
        self.stage, self.committed = None, True
        shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.stage is not None:
                shutil.rmtree(self.stage, ignore_errors=True)
                self.stage = None
            if not self.committed:
                self._remove_created()
        finally:
            self._lock.__exit__(kind, exc, tb)

    def _remove_created(self, holding: bool = True) -> None:
        """Leave things as they were: drop our lock file from a folder that holds nothing else
        (only while ``holding`` it), and the folders ``__enter__`` made."""
        try:
            if holding and self.out.is_dir() and os.listdir(self.out) == [LOCK_NAME]:
                (self.out / LOCK_NAME).unlink()
            for p in reversed(self._created):  # innermost first
                p.rmdir()
        except OSError:
            pass

    def _clean_stale(self) -> None:
        """Delete stages of earlier writers of ``out`` that were killed (nobody holds their lock)."""
        for p in self.out.parent.glob(f".{self.out.name}{STAGE_INFIX}*"):
            if p.is_symlink() or not p.is_dir():
                continue
            try:
                with hold_lock(folder_lock_path(p), f"stage {p}"):
                    shutil.rmtree(p, ignore_errors=True)
            except (BusyError, OSError):
                continue  # a live writer is deleting it itself
