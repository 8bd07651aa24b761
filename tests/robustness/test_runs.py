"""Runs that go wrong or run long: NaN engines, killed export/calibration, threads, determinism,
memory over many samples (``L2P_SOAK``), and no code execution from artifacts."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from l2p.atomic import load_npz
from l2p.bundle import MANIFEST, open_bundle
from l2p.engine.base import Engine
from l2p.engine.onnxruntime_backend import OrtEngine
from l2p.errors import ArtifactError, NumericalError
from l2p.sampling.pipeline import Sampler
from l2p.sampling.settings import RunSettings

from .helpers import REPO, Ctx, cli, cli_error, l2p_subprocess, make_predictor, raises


class NaNAt(Engine):
    """Wraps an engine; its ``nth`` run (0-based) returns NaN in every output."""

    def __init__(self, inner: Engine, nth: int) -> None:
        super().__init__(inner.name, inner.spec)
        self.backend, self.inner, self.nth, self.calls = inner.backend, inner, nth, 0

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.run(feed, check=False)
        self.calls += 1
        return {k: np.full_like(v, np.nan) for k, v in out.items()} if self.calls - 1 == self.nth else out


# numerical guard ------------------------------------------------------------------------------
def test_nan_from_the_transformer_engine_at_step_3(ctx: Ctx, answer: Callable[..., None]) -> None:
    s = Sampler(ctx.bundle)
    s._engines["transformer"] = NaNAt(s.engine("transformer"), nth=3)
    answer(raises(NumericalError, lambda: s.sample(ctx.cond, 0, 6), "step 3:", "transformer engine", "fp32"))


def test_nan_from_the_predictor_engine_on_a_forecast_step(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    make_predictor(b, "p", 10, 4)
    s = Sampler(b)
    fc = s.forecaster(RunSettings(steps=10, method="l2p:p"))
    fc.engine = NaNAt(fc.engine, nth=1)
    step = [i for i in range(10) if not fc.is_computed(i)][1]  # the second forecast step
    answer(raises(NumericalError, lambda: s.sample(ctx.cond, 0, 10, method="l2p:p"),
                  f"step {step}:", "l2p:p predictor engine", "fp32"))


def test_nan_during_sample_writes_no_png_and_no_latents(ctx: Ctx, answer: Callable[..., None]) -> None:
    run, calls = OrtEngine._run, []

    def poisoned(self: OrtEngine, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = run(self, feed)
        calls.append(self.name)
        bad = self.name == "transformer" and calls.count("transformer") == 3
        return {k: np.full_like(v, np.nan) for k, v in out.items()} if bad else out

    out = ctx.tmp / "out"
    with mock.patch.object(OrtEngine, "_run", poisoned):
        msg = cli_error(["sample", str(ctx.bundle), "--conditioning", str(ctx.cond_file()), "--steps", "5",
                         "--out", str(out)], "step 2:", "transformer engine", "fp32")
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    answer(msg)


# interrupted runs -----------------------------------------------------------------------------
def kill_when(args: list[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start ``python -m l2p.cli ARGS``, SIGKILL it as soon as ``ready()`` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "l2p.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"l2p {args[0]} ended (status {proc.returncode}) before the kill point: "
                                     f"{proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > end:
                raise AssertionError(f"l2p {args[0]} did not reach the kill point in {timeout} s")
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_export_killed_part_way_then_rerun(ctx: Ctx, answer: Callable[..., None]) -> None:
    from l2p.export.exporter import export_bundle
    from l2p.staging import STAGE_INFIX

    out = ctx.tmp / "bundle"

    def stages() -> list[Path]:
        return sorted(ctx.tmp.glob(f".{out.name}{STAGE_INFIX}*"))

    # quick: kill as soon as the export staged its folder; thorough: once the first graph is written
    kill_when(["export", str(ctx.folder), "--out", str(out), "--latent-size", "8", "8"],
              lambda: bool(stages()) and (ctx.quick or (stages()[0] / "transformer" / "model.onnx").exists()))
    assert stages() and not (out / MANIFEST).exists()  # the partial bundle lives beside --out, never in it
    refused = raises(ArtifactError, lambda: open_bundle(out), "did not finish", "l2p export")
    cli_error(["sample", str(out), "--conditioning", str(ctx.cond_file()), "--steps", "2", "--out",
               str(ctx.tmp / "o")], "did not finish")
    partial = sorted(p.relative_to(stages()[0]).as_posix() for p in stages()[0].rglob("*") if p.is_file())
    export_bundle(str(ctx.folder), out, latent_size=(8, 8), log=lambda s: None)
    assert not stages(), stages()  # the killed export's stage was cleaned up
    assert open_bundle(out).manifest["files"] == open_bundle(ctx.bundle).manifest["files"]  # clean, identical
    answer(f"killed export left a stage beside --out ({partial}): {refused} | the rerun removed it and made the "
           "same files as an uninterrupted export", outcome="ok")


def test_calibration_killed_after_the_trajectory_cache_then_rerun(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    args = ["calibrate", str(b), "--conditioning", str(ctx.cond_file()), "--steps", "10", "--full-steps", "4",
            "--seeds", "2", "--name", "k"]
    cache = b / "predictors" / ".cache"
    kill_when(args, lambda: cache.is_dir() and any(cache.glob("traj-*.npz")))  # the schedule search follows
    assert not (b / "predictors" / "k" / "predictor.json").exists()
    sample = ["sample", str(b), "--conditioning", str(ctx.cond_file()), "--steps", "10", "--method", "l2p:k",
              "--out", str(ctx.tmp / "o")]
    refused = cli_error(sample, "no predictor 'k'", "l2p calibrate")
    rc, out, err = cli(args)
    assert rc == 0 and "reusing 4 cached full-compute trajectories" in out, (rc, out, err)
    rc, out, err = cli(sample)
    assert rc == 0, err
    answer(f"killed calibration: {refused} | the rerun resumed from the trajectory cache and sampled", outcome="ok")


def test_corrupted_trajectory_cache_is_recomputed(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    base = ["calibrate", str(b), "--conditioning", str(ctx.cond_file()), "--steps", "6", "--full-steps", "3",
            "--seeds", "1", "--schedule", "interval", "--refit", "0"]
    assert cli([*base, "--name", "a"])[0] == 0
    (cache,) = (b / "predictors" / ".cache").glob("traj-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    rc, out, err = cli([*base, "--name", "b"])
    assert rc == 0 and "capturing" in out and "reusing" not in out, (rc, out, err)
    answer("an unreadable trajectory cache is dropped and recaptured", outcome="ok")


# steadiness and determinism ---------------------------------------------------------------------
def _run_seeds(s: Sampler, cond: dict[str, np.ndarray], seeds: list[int]) -> dict[int, np.ndarray]:
    return {seed: s.sample(cond, seed, 6, method="taylorseer2", full_steps=3).final for seed in seeds}


def test_two_samplers_on_one_bundle_in_two_threads(ctx: Ctx, answer: Callable[..., None]) -> None:
    seeds = [0, 1, 2]
    ref = _run_seeds(Sampler(ctx.bundle), ctx.cond, seeds)
    a, b = Sampler(ctx.bundle), Sampler(ctx.bundle)
    with ThreadPoolExecutor(2) as pool:
        ra, rb = pool.map(lambda job: _run_seeds(*job), [(a, ctx.cond, seeds), (b, ctx.cond, seeds[::-1])])
    for seed in seeds:
        assert np.array_equal(ra[seed], ref[seed]) and np.array_equal(rb[seed], ref[seed]), seed
    answer(f"{2 * len(seeds)} concurrent runs bit-identical to sequential ones", outcome="ok")


def test_same_run_in_two_processes_is_byte_identical(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    make_predictor(b, "p", 8, 3)
    runs = []
    for name in ("a", "b"):
        r = l2p_subprocess("sample", str(b), "--conditioning", str(ctx.cond_file()), "--steps", "8", "--seed", "11",
                           "--method", "l2p:p", "--out", str(ctx.tmp / name))
        assert r.returncode == 0, r.stderr
        runs.append(load_npz(ctx.tmp / name / "latents.npz"))
    for key in ("initial", "final"):
        assert runs[0][key].tobytes() == runs[1][key].tobytes(), key
    assert (ctx.tmp / "a" / "image_000.png").read_bytes() == (ctx.tmp / "b" / "image_000.png").read_bytes()
    answer("latents.npz arrays and PNGs are byte-identical across processes", outcome="ok")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_many_samples_in_one_process_flat_memory(ctx: Ctx, answer: Callable[..., None]) -> None:
    """``ctx.soak`` samples (``L2P_SOAK``) in one Sampler, full and taylorseer2 alternating; RSS (MiB) at
    checkpoints."""
    s, rss = Sampler(ctx.bundle), {}
    marks = {n for n in (10, 50, 100, 200) if n <= ctx.soak} | {ctx.soak}
    for n in range(1, ctx.soak + 1):
        s.sample(ctx.cond, n, 6, method="full" if n % 2 else "taylorseer2", full_steps=None if n % 2 else 3)
        if n in marks:
            rss[n] = rss_mib()
    first, last = min(rss), max(rss)
    assert rss[last] - rss[first] < 16, rss  # MiB: allocator noise, not a leak per sample
    answer("RSS " + ", ".join(f"{n}: {v:.0f} MiB" for n, v in sorted(rss.items())), outcome="ok")


# no code execution from artifacts ---------------------------------------------------------------
def unsafe_loads(root: Path) -> list[str]:
    """Uses of pickle, ``torch.load`` without ``weights_only=True``, ``np.load`` without
    ``allow_pickle=False`` and ``allow_pickle=True`` anywhere in the ``.py`` files under ``root``."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [node.id] if isinstance(node, ast.Name) else [node.attr] if isinstance(node, ast.Attribute) else []
            hits += [f"{where}: {n}" for n in names if "pickle" in n.lower() or n in ("dill", "joblib")]
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and \
                    not (isinstance(node.value, ast.Constant) and node.value.value is False):
                hits.append(f"{where}: allow_pickle not False")
            if isinstance(node, ast.Call):
                call = ast.unparse(node.func)
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if call == "torch.load" and kw.get("weights_only") != "True":
                    hits.append(f"{where}: torch.load without weights_only=True")
                if call in ("np.load", "numpy.load") and kw.get("allow_pickle") != "False":
                    hits.append(f"{where}: {call} without allow_pickle=False")
    return hits


def test_no_pickle_or_unsafe_loaders_in_the_package_source(ctx: Ctx, answer: Callable[..., None]) -> None:
    pkg = REPO / "l2p"
    hits = unsafe_loads(pkg)
    assert not hits, hits
    answer(f"{sum(1 for _ in pkg.rglob('*.py'))} files: no pickle, every np.load has allow_pickle=False", outcome="ok")
