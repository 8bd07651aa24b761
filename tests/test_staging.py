"""l2p.locking and l2p.staging: advisory locks, and folders replaced only as a whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from l2p import staging
from l2p.errors import BusyError, InputError
from l2p.locking import LOCK_NAME, folder_lock_path, hold_lock
from l2p.staging import STAGE_INFIX, StagedFolder

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    """The files under ``root`` but l2p's lock files."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def test_exclusive_lock_names_its_holder_and_is_gone_after(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with hold_lock(lock, "thing"):
        with pytest.raises(BusyError, match=f"thing is in use by another l2p process .*pid {os.getpid()}"):
            with hold_lock(lock, "thing"):
                pass  # flock conflicts between two open files even in one process
        with pytest.raises(BusyError):
            with hold_lock(lock, "thing", shared=True):
                pass
    assert not lock.exists()  # an exclusive holder leaves no lock file


def test_shared_locks_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with hold_lock(lock, "bundle", shared=True), hold_lock(lock, "bundle", shared=True):
        with pytest.raises(BusyError, match="bundle is in use"):
            with hold_lock(lock, "bundle"):
                pass
    with hold_lock(lock, "bundle"):  # free again
        pass


def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    """The kernel drops a flock with its process: a SIGKILLed writer never blocks the next one."""
    lock = tmp_path / "x.lock"
    code = f"from l2p.locking import hold_lock\nwith hold_lock({str(lock)!r}, 'x'):\n    print('ready', flush=True)\n" \
           "    import time; time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    with pytest.raises(BusyError, match=f"pid {proc.pid}"):
        with hold_lock(lock, "x"):
            pass
    proc.kill()
    proc.wait()
    with hold_lock(lock, "x"):
        pass


def test_lock_follows_a_replaced_file(tmp_path: Path) -> None:
    """A lock file swapped away between open and flock (a folder replaced by a stage) is not trusted."""
    import fcntl

    lock = tmp_path / "x.lock"
    real_flock = fcntl.flock
    swapped = []

    def flock_then_replace(fd: int, op: int) -> None:
        real_flock(fd, op)
        if not swapped:  # the first time: someone replaced the file meanwhile
            swapped.append(True)
            os.unlink(lock)
            lock.write_text("")

    with mock.patch("fcntl.flock", flock_then_replace):
        with hold_lock(lock, "x"):
            assert swapped
            with pytest.raises(BusyError):  # what is held is the file at the path now
                with hold_lock(lock, "x"):
                    pass


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_commit_replaces_the_folder_as_a_whole(exchange: bool, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with mock.patch.object(staging, "_exchange", staging._exchange if exchange else lambda a, b: False):
        with StagedFolder(out, "run") as st:
            stage = st.begin()
            (stage / "new.txt").write_text("new")
            assert _files(out) == {"old.txt": b"old"}  # untouched until commit
            st.commit()
    assert _files(out) == {"new.txt": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_error_before_commit_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with StagedFolder(out, "run") as st:
            (st.begin() / "new.txt").write_text("new")
            raise RuntimeError("the run failed")
    assert _files(out) == {"old.txt": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_folders_it_made_are_removed_again_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with StagedFolder(tmp_path / "a" / "b" / "out", "run") as st:
            st.begin()
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_out_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    for out in (tmp_path / "f", tmp_path / "f" / "out"):
        with pytest.raises(InputError, match="file"):
            with StagedFolder(out, "run"):
                pass
    assert _files(tmp_path) == {"f": b"mine"}


def test_stale_stages_are_cleaned_live_ones_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = tmp_path / f".out{STAGE_INFIX}dead"
    live = tmp_path / f".out{STAGE_INFIX}live"
    for d in (dead, live):
        d.mkdir()
        (d / "graph.onnx").write_bytes(b"partial")
    with hold_lock(folder_lock_path(live), "live stage"):  # a writer still deleting its old version
        with StagedFolder(out, "bundle"):
            pass
        assert not dead.exists() and live.is_dir()
    assert not (out / LOCK_NAME).exists()


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with StagedFolder(out, "bundle out") as st:
        with pytest.raises(BusyError, match="bundle out is in use"):
            with StagedFolder(out, "bundle out"):
                pass
        (st.begin() / "x").write_text("1")
        st.commit()
    assert _files(out) == {"x": b"1"}
