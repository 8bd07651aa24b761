"""Issue 12: concurrency, one-line errors everywhere, and crashes on legitimate arguments.

Every refusal is exit status 2 with exactly one line on stderr (checked at the file-descriptor
level where a native library could print on its own), nothing outside the bundle/--out changed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from l2p.bundle import MANIFEST
from l2p.errors import ArtifactError, InputError
from l2p.locking import folder_lock_path

from .helpers import REPO, make_predictor, reseal
from .guard import LAST, confined, recorded, refused, succeeds, tree  # noqa: F401  (recorded: autouse)

TINY_T5 = REPO / "l2p" / "assets" / "tiny-flux" / "tokenizer_2" / "tokenizer.json"


def _sample(bundle: Path, cond: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", str(bundle), "--conditioning", str(cond), "--steps", "4", "--out", str(out), *extra]


def _calibrate(bundle: Path, cond: Path, *extra: str) -> list[str]:
    return ["calibrate", str(bundle), "--conditioning", str(cond), "--seeds", "1", "--K", "3", "--refit", "0",
            "--closed-loop", "0", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _l2p(*args: str | bytes, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "l2p.cli", *args], capture_output=True, timeout=timeout, cwd=REPO,
                          env=_env())


def _one_line(proc: subprocess.CompletedProcess[bytes], *expect: str) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), (proc.returncode, err)
    for e in expect:
        assert e in err, f"expected {e!r} in: {err}"
    LAST.update(message=err.strip().removeprefix("error: "), outcome="refused")
    return err.strip()


# concurrency ----------------------------------------------------------------------------------
@contextmanager
def held_elsewhere(*locks: tuple[Path, bool]) -> Iterator[int]:
    """Another process holding ``(lock file, shared)`` locks until the block ends; yields its pid."""
    code = ("import sys\nfrom contextlib import ExitStack\nfrom l2p.locking import hold_lock\nwith ExitStack() as st:\n"
            "    for spec in sys.argv[1:]:\n        path, mode = spec.rsplit(':', 1)\n"
            "        st.enter_context(hold_lock(path, path, shared=mode == 'sh'))\n"
            "    print('ready', flush=True)\n    sys.stdin.read()\n")
    specs = [f"{p}:{'sh' if shared else 'ex'}" for p, shared in locks]
    proc = subprocess.Popen([sys.executable, "-c", code, *specs], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(30)


def test_two_exports_to_one_out(flux_folder: Path, flux_bundle: Path, tmp_path: Path) -> None:
    """The second export stops at once naming the first; the first finishes a sound bundle."""
    from l2p.bundle import open_bundle
    from l2p.staging import STAGE_INFIX

    out = tmp_path / "b"
    args = ["export", str(flux_folder), "--out", str(out), "--latent-size", "8", "8"]
    first = subprocess.Popen([sys.executable, "-m", "l2p.cli", *args], cwd=REPO, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not list(tmp_path.glob(f".b{STAGE_INFIX}*")):  # it holds the lock once it staged
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
        refused(args, f"bundle {out} is in use by another l2p process", f"pid {first.pid}")
    finally:
        assert first.wait(600) == 0, first.stderr.read() if first.stderr else ""
    assert open_bundle(out).manifest["files"] == open_bundle(flux_bundle).manifest["files"]
    assert not list(tmp_path.glob(f".b{STAGE_INFIX}*"))


def test_calibrations_of_one_name_exclude_each_other(bundle: Path, cond_file: Path, flux_folder: Path,
                                                    tmp_path: Path) -> None:
    """A running calibration of 'x' (shared lock on the bundle, exclusive on the name) stops a second
    'x' and an export to the bundle; another name calibrates meanwhile."""
    (bundle / "predictors").mkdir()
    with held_elsewhere((folder_lock_path(bundle), True), (bundle / "predictors" / ".x.lock", False)) as pid:
        with confined(tmp_path, readable=(bundle, cond_file)):
            refused(_calibrate(bundle, cond_file, "--steps", "6", "--full-steps", "3", "--name", "x"),
                    "predictor 'x'", "in use by another l2p process", f"pid {pid}")
        succeeds(_calibrate(bundle, cond_file, "--steps", "6", "--full-steps", "3", "--name", "y",
                            "--schedule", "interval"))
        refused(["export", str(flux_folder), "--out", str(bundle), "--latent-size", "8", "8"],
                f"bundle {bundle} is in use by another l2p process", f"pid {pid}")


def test_sample_out_in_use(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with held_elsewhere((folder_lock_path(out), False)) as pid:
        with confined(tmp_path, out, readable=(cond_file,)):
            refused(_sample(flux_bundle, cond_file, out), f"run folder {out} is in use", f"pid {pid}")
        assert os.listdir(out) == [".l2p.lock"]  # the holder's lock file, untouched


# the environment: read-only or full disks, impossible paths ------------------------------------
@contextmanager
def os_error_under(root: Path, err: int, *calls: str) -> Iterator[None]:
    """``os.open`` and ``os.mkdir`` (or the given calls) fail with ``err`` under ``root``, as on a
    read-only (``os.fsync``: a full) disk."""
    with contextlib.ExitStack() as stack:
        for call in calls or ("open", "mkdir"):
            stack.enter_context(mock.patch(f"os.{call}", _failing(getattr(os, call), root, err)))
        yield


def _failing(real: Callable[..., object], root: Path, err: int) -> Callable[..., object]:
    def fake(target: object, *a: object, **k: object) -> object:
        path = os.readlink(f"/proc/self/fd/{target}") if isinstance(target, int) else os.fsdecode(target)
        if Path(path).is_relative_to(root):
            raise OSError(err, os.strerror(err), path)
        return real(target, *a, **k)
    return fake


def test_sample_on_a_full_disk_keeps_the_earlier_run(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    succeeds(_sample(flux_bundle, cond_file, out))
    before = tree(out)
    with os_error_under(tmp_path, errno.ENOSPC, "fsync"), confined(tmp_path, out, readable=(cond_file,)):
        refused(_sample(flux_bundle, cond_file, out, "--seed", "3"), "No space left", "disk is full")
    assert tree(out) == before


@pytest.mark.parametrize("command", ["sample", "calibrate", "export"])
def test_read_only_file_system(command: str, bundle: Path, cond_file: Path, flux_folder: Path,
                               tmp_path: Path) -> None:
    before = tree(bundle)
    argv = {"sample": _sample(bundle, cond_file, tmp_path / "run"),
            "calibrate": _calibrate(bundle, cond_file, "--steps", "6", "--full-steps", "3"),
            "export": ["export", str(flux_folder), "--out", str(bundle), "--latent-size", "8", "8"]}[command]
    with os_error_under(tmp_path, errno.EROFS), confined(tmp_path, readable=(bundle, cond_file, flux_folder)):
        refused(argv, "Read-only file system", "choose a writable folder")
    assert tree(bundle) == before


def test_calibrate_name_of_300_characters(bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    with confined(tmp_path, readable=(bundle, cond_file)):
        refused(_calibrate(bundle, cond_file, "--steps", "6", "--full-steps", "3", "--name", "n" * 300),
                "--name", "300 characters", "1..64")
        refused(_calibrate(bundle, cond_file, "--steps", "6", "--full-steps", "3", "--name", "../x"), "letters")
        refused(_sample(bundle, cond_file, tmp_path / "o", "--method", "l2p:" + "n" * 300), "1..64")


# damaged input files and native libraries ------------------------------------------------------
def _broken_deflate(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A compressed .npz whose first member's deflate stream is damaged (the zip directory is intact)."""
    np.savez_compressed(path, **arrays)
    info = zipfile.ZipFile(path).infolist()[0]
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 2:start + 40] = b"\xff" * 38
    path.write_bytes(bytes(data))
    return path


def test_broken_deflate_stream(flux_bundle: Path, flux_cond: dict[str, np.ndarray], cond_file: Path,
                               tmp_path: Path) -> None:
    bad_cond = _broken_deflate(tmp_path / "bad.npz", flux_cond)
    bad_lat = _broken_deflate(tmp_path / "lat.npz", {"initial": np.zeros((2, 16, 16), np.float32)})
    with confined(tmp_path, readable=(bad_cond, bad_lat, cond_file)):
        refused(_sample(flux_bundle, bad_cond, tmp_path / "o"), "bad.npz", "damaged")
        refused(_sample(flux_bundle, cond_file, tmp_path / "o", "--initial-latents", str(bad_lat)), "lat.npz",
                "damaged")
        refused(_calibrate(flux_bundle, bad_cond, "--steps", "6", "--full-steps", "3"), "bad.npz", "damaged")


def test_prompt_that_is_not_utf8(flux_bundle: Path, tmp_path: Path) -> None:
    proc = _l2p("sample", str(flux_bundle), "--prompt", b"caf\xe9", "--steps", "2", "--out", str(tmp_path / "o"))
    _one_line(proc, "prompt 0 is not valid UTF-8", "\\xe9")
    assert not (tmp_path / "o").exists()


def test_truncated_safetensors_in_the_model_folder(flux_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "model"
    shutil.copytree(flux_folder, src)
    (weights,) = (src / "transformer").glob("*.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with confined(tmp_path, tmp_path / "b", readable=(src,)):
        refused(["export", str(src), "--out", str(tmp_path / "b"), "--latent-size", "8", "8"],
                "cannot load FluxTransformer2DModel", "damaged")
    assert not (tmp_path / "b").exists()


def _panicking_tokenizer(path: Path) -> Path:
    """The tiny model's T5 tokenizer with a normalizer whose charsmap makes ``tokenizers`` panic."""
    tok = json.loads(TINY_T5.read_text())
    tok["normalizer"] = {"type": "Precompiled", "precompiled_charsmap": "AAAA"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tok))
    return path


@pytest.mark.skipif(not TINY_T5.is_file(), reason="the built-in tiny model is not in this checkout")
def test_tokenizer_that_panics(bundle: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from l2p.sampling.text import Tokenizer

    path = _panicking_tokenizer(bundle / "tokenizer_2" / "tokenizer.json")
    with pytest.raises(ArtifactError, match="panicked") as e:
        Tokenizer(path, 16, 0, False, "text_encoder_2")
    assert "\n" not in str(e.value) and capfd.readouterr().err == ""  # the Rust panic printed nothing itself
    m = json.loads((bundle / MANIFEST).read_text())
    m["tokenizers"] = {"text_encoder_2": {"path": "tokenizer_2/tokenizer.json", "max_length": 16, "pad_id": 0,
                                          "kind": "t5"}}
    (bundle / MANIFEST).write_text(json.dumps(m))
    reseal(bundle)
    _one_line(_l2p("sample", str(bundle), "--prompt", "a red circle", "--steps", "2", "--out", str(tmp_path / "o")),
              "tokenizer", "panicked", "re-export")


def test_manifest_nested_too_deeply(bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    (bundle / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with confined(tmp_path, readable=(bundle, cond_file)):
        refused(_sample(bundle, cond_file, tmp_path / "o"))


def test_onnx_runtime_failure_is_one_line(bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    """A predictor whose predictor.onnx takes another history length (re-signed): ONNX Runtime
    refuses the feed; l2p says so in one line."""
    from l2p.atomic import sha256_file, write_json
    from l2p.predictor.artifact import MANIFEST as PRED

    p, q = make_predictor(bundle, "p", 8, 3), make_predictor(bundle, "q", 8, 3, method="fora")  # K = 3 and 1
    shutil.copy(q / "predictor.onnx", p / "predictor.onnx")
    m = json.loads((p / PRED).read_text())
    m["files"]["predictor.onnx"] = {"sha256": sha256_file(p / "predictor.onnx"),
                                    "size": (p / "predictor.onnx").stat().st_size}
    write_json(p / PRED, m)
    with confined(tmp_path, readable=(bundle, cond_file)):
        refused(_sample(bundle, cond_file, tmp_path / "o", "--steps", "8", "--method", "l2p:p"), "predictor")


def test_describe_names_native_failures() -> None:
    """Real exceptions of the libraries l2p calls, each one line with what to do."""
    import onnxruntime as ort
    from safetensors import safe_open

    from l2p.failures import describe

    found = []
    for make in (lambda: ort.InferenceSession(b"not a model"),
                 lambda: safe_open(str(REPO / "pyproject.toml"), "np"),
                 lambda: json.loads("[" * 100_000 + "]" * 100_000),
                 lambda: open("/", "rb")):
        try:
            make()
        except BaseException as e:  # noqa: B036  (pyo3 errors)
            found.append(describe(e, "sample"))
    assert all(m and "\n" not in m for m in found), found
    assert "ONNX Runtime" in found[0] and "safetensors" in found[1] and "nested too deeply" in found[2]
    assert "Is a directory" in found[3] and describe(ValueError("a bug")) is None


# legitimate arguments that crashed, and arguments that were ignored -----------------------------
def test_calibrate_with_one_full_step(bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    """--full-steps 1 has one schedule (step 0): calibrated without a search instead of max() of nothing."""
    from l2p.predictor.artifact import load_predictor

    with confined(tmp_path, bundle, readable=(cond_file,)):
        out = succeeds(_calibrate(bundle, cond_file, "--steps", "6", "--full-steps", "1", "--name", "one"))
    assert "only step 0" in out
    assert load_predictor(bundle / "predictors" / "one").schedule == (0,)
    succeeds(_sample(bundle, cond_file, tmp_path / "o", "--steps", "6", "--method", "l2p:one"))


@pytest.mark.parametrize("steps,full", [("1", "1"), ("10", "10")])
def test_calibrate_with_nothing_to_forecast(steps: str, full: str, bundle: Path, cond_file: Path,
                                            tmp_path: Path) -> None:
    with confined(tmp_path, readable=(bundle, cond_file)):
        refused(_calibrate(bundle, cond_file, "--steps", steps, "--full-steps", full), "nothing to forecast",
                "--method full")


def test_bench_without_seeds(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    from l2p.bench import Bench
    from l2p.sampling.pipeline import Sampler

    with confined(tmp_path, readable=(cond_file,)):
        refused(["bench", str(flux_bundle), "--conditioning", str(cond_file), "--seeds", "0"], "--seeds")
    s = Sampler(flux_bundle)
    with pytest.raises(InputError, match="at least one seed"):
        Bench(s, s.load_conditioning(cond_file), 4, [])


@pytest.mark.parametrize("extra,expect", [
    (["--full-steps", "2"], "--method full"),
    (["--steps", "0"], "--steps 0"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_sample_refuses_what_it_would_ignore(extra: list[str], expect: str, flux_bundle: Path, cond_file: Path,
                                             tmp_path: Path) -> None:
    with confined(tmp_path, readable=(cond_file,)):
        refused(_sample(flux_bundle, cond_file, tmp_path / "o", *extra), expect)
    assert not (tmp_path / "o").exists()


def test_full_steps_equal_to_steps_is_full_compute(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    succeeds(_sample(flux_bundle, cond_file, tmp_path / "o", "--full-steps", "4"))
    assert json.loads((tmp_path / "o" / "run.json").read_text())["full_steps"] == 4
