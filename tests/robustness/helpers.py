"""Helpers of the robustness tests: the context a test runs in, running l2p, and tampering.

A robustness test does one bad thing (bad input, a tampered artifact, an interrupted run, a
poisoned engine), fails when l2p behaves wrongly (a traceback, exit status 0, a partial file
used, a black image written...) and records l2p's one-line answer with the ``answer`` fixture
(``tools/robustness.py`` prints it in its table).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np

from l2p.atomic import save_npz
from l2p.bundle import MANIFEST, write_manifest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Ctx:
    """What a test gets (the ``ctx`` fixture). ``bundle`` is shared by all tests: copy it before changing anything."""

    bundle: Path  # a finished tiny FLUX bundle (8x8 latents, guidance embeddings)
    folder: Path  # the diffusers folder it was exported from
    cond: dict[str, np.ndarray]  # encoder_hidden_states (2, 8, 32), pooled_projections (2, 24)
    tmp: Path  # an empty scratch folder of this test
    soak: int = 60  # samples in the memory soak
    quick: bool = True  # kill the export as soon as it starts (else once its first graph is written)

    def copy_bundle(self, name: str = "bundle") -> Path:
        dst = self.tmp / name
        shutil.copytree(self.bundle, dst, ignore=shutil.ignore_patterns("predictors"))
        return dst

    def cond_file(self, arrays: dict[str, np.ndarray] | None = None, name: str = "cond") -> Path:
        path = self.tmp / f"{name}.npz"
        save_npz(path, **(self.cond if arrays is None else arrays))
        return path


# running l2p ----------------------------------------------------------------------------------
def cli(argv: list[str]) -> tuple[int, str, str]:
    """``l2p.cli.main(argv)`` in this process: (exit status, stdout, stderr)."""
    from l2p.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse refused the arguments
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def one_line(msg: str, *expect: str) -> str:
    assert "\n" not in msg.strip() and "Traceback" not in msg, f"not a one-line message: {msg!r}"
    for e in expect:
        assert e in msg, f"expected {e!r} in: {msg}"
    return msg.strip()


def cli_error(argv: list[str], *expect: str) -> str:
    """Run the CLI, expect exit status 2 and one ``error: ...`` line holding every ``expect``."""
    rc, _, err = cli(argv)
    assert rc == 2 and err.startswith("error: "), f"exit status {rc}, stderr: {err!r}"
    return one_line(err, *expect).removeprefix("error: ")


def raises(exc: type[BaseException], fn: Callable[[], object], *expect: str) -> str:
    """Call ``fn``, expect ``exc`` with a one-line message holding every ``expect``."""
    try:
        fn()
    except exc as e:
        return one_line(str(e), *expect)
    raise AssertionError(f"expected {exc.__name__}, nothing was raised")


def l2p_subprocess(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    """``python -m l2p.cli ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "l2p.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kw)  # type: ignore[call-overload]


@contextlib.contextmanager
def no_onnxruntime_sessions() -> Iterator[None]:
    """Fail if anything creates an onnxruntime session inside the block."""
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("onnxruntime was asked to load a graph that should have been refused first")

    with mock.patch("onnxruntime.InferenceSession", refuse):
        yield


_OPENED: list[list[str]] = []  # the lists of the active opened_files() blocks


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        for paths in _OPENED:
            paths.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only inside opened_files()


@contextlib.contextmanager
def opened_files() -> Iterator[list[str]]:
    """The paths this process opens inside the block (the ``open`` audit event: ``open()``,
    ``os.open``...), to check that nothing outside a bundle was read."""
    paths: list[str] = []
    _OPENED.append(paths)
    try:
        yield paths
    finally:
        _OPENED.remove(paths)


# tampering ------------------------------------------------------------------------------------
def edit_json(path: Path, fn: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def reseal(root: Path) -> None:
    """Rewrite a bundle's manifest so its file table matches the files again, as a forger would."""
    m = json.loads((root / MANIFEST).read_text())
    write_manifest(root, {k: v for k, v in m.items() if k not in ("format", "format_version", "l2p_version", "files")})


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def make_predictor(bundle: Path, name: str, steps: int, full_steps: int, *, tap: str = "output",
                   bundle_hash: str | None = None, method: str = "taylorseer2") -> Path:
    """A predictor folder in ``bundle`` without calibrating: a preset's table (TaylorSeer-2) saved as one."""
    from l2p.bundle import open_bundle
    from l2p.predictor.artifact import save_predictor
    from l2p.predictor.presets import preset
    from l2p.predictor.schedule import interval_schedule
    from l2p.sampling.methods import feature_spec

    b = open_bundle(bundle)
    table = preset(method, interval_schedule(steps, full_steps, 1), steps)
    folder = b.predictors_dir / name
    save_predictor(folder, table=table, feature_spec=feature_spec(b, "output"), name=name, method="l2p",
                   tap=tap, bundle_hash=bundle_hash or b.hash, scheduler_hash=b.scheduler_hash)
    return folder
