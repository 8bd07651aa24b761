"""``l2p sample --out``: a run folder is written whole or not at all, and never mixed with another run.

A run folder holds ``run.json`` (written last; ``"format": "l2p-run"``), ``latents.npz`` and the
images ``run.json`` lists. ``--out`` may be missing, empty, or the folder of an earlier l2p run,
which is replaced as a whole once the new run is complete (:class:`l2p.staging.StagedFolder`:
the new run is written beside it, then swapped in). A folder holding anything else is refused:
l2p never deletes, overwrites or mixes in files it did not write.

Torch-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..locking import LOCK_NAME
from ..staging import StagedFolder

RUN_FORMAT = "l2p-run"
RUN_JSON = "run.json"
LATENTS = "latents.npz"
_LEGACY_KEYS = {"bundle_hash", "method", "steps", "images"}  # run.json of l2p before "format"


def _run_record(out: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((out / RUN_JSON).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("images"), list):
        return None
    return record if record.get("format") == RUN_FORMAT or _LEGACY_KEYS <= set(record) else None


def check_run_out(out: Path) -> None:
    """Refuse an ``--out`` that ``l2p sample`` must not replace; changes nothing.

    Raises:
        InputError: ``out`` is a file, a folder that is not an l2p run folder, or an l2p run
            folder that also holds files the run did not write.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the images, latents.npz and run.json")
    names = {n for n in os.listdir(out) if n != LOCK_NAME and not (n.startswith(".") and n.endswith(".tmp"))}
    if not names:
        return
    record = _run_record(out)
    if record is None:
        raise InputError(f"--out {out} is a folder that is not an l2p run folder (no {RUN_JSON} of l2p); l2p writes "
                         "a run only into a new or empty folder or over an earlier run: choose another --out")
    extra = sorted(names - {RUN_JSON, LATENTS, *(str(i) for i in record["images"])})
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise InputError(f"--out {out} holds an earlier l2p run and files it did not write ({shown}); l2p replaces "
                         "an earlier run only as a whole and never deletes other files: move them away or choose "
                         "another --out")


@contextmanager
def run_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Lock ``out`` and yield an empty folder to write the run into; when the block ends without
    an error it replaces ``out`` (an earlier run there is deleted), else it is deleted."""
    path = Path(os.path.realpath(out))
    with StagedFolder(path, f"run folder {path}") as staged:
        check_run_out(path)  # again, under the lock
        stage = staged.begin()
        yield stage
        staged.commit()
