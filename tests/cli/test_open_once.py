"""A command opens and hashes its bundle once, however many samplers and calibrations it runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import l2p.bundle
from l2p.atomic import save_npz
from l2p.cli import main


@pytest.fixture()
def counted(flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, dict[str, int]]:
    """A copy of the tiny bundle, its conditioning file, and counters of bundle opens and file hashes."""
    bundle = tmp_path / "bundle"
    shutil.copytree(flux_bundle, bundle, ignore=shutil.ignore_patterns("predictors"))
    save_npz(tmp_path / "cond.npz", **flux_cond)
    counts = {"opens": 0, "hashed": 0}
    verified, sha256_file = l2p.bundle._verified, l2p.bundle.sha256_file

    def count_open(*args, **kw):  # type: ignore[no-untyped-def]
        counts["opens"] += 1
        return verified(*args, **kw)

    def count_hash(path):  # type: ignore[no-untyped-def]
        counts["hashed"] += 1
        return sha256_file(path)

    monkeypatch.setattr(l2p.bundle, "_verified", count_open)
    monkeypatch.setattr(l2p.bundle, "sha256_file", count_hash)
    return bundle, tmp_path / "cond.npz", counts


def test_bench_calibrate_hashes_the_bundle_once(counted: tuple[Path, Path, dict[str, int]],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bundle, cond, counts = counted
    files = len(json.loads((bundle / "manifest.json").read_text())["files"])
    assert main(["bench", str(bundle), "--conditioning", str(cond), "--steps", "6", "--budgets", "3,2",
                 "--calibrate", "--calib-seeds", "1", "--seeds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"l2p:bench-3", "l2p:bench-2"} <= {r["method"] for r in report["rows"]}  # both budgets calibrated
    assert counts == {"opens": 1, "hashed": files}


def test_calibrate_hashes_the_bundle_once(counted: tuple[Path, Path, dict[str, int]]) -> None:
    bundle, cond, counts = counted
    files = len(json.loads((bundle / "manifest.json").read_text())["files"])
    assert main(["calibrate", str(bundle), "--conditioning", str(cond), "--steps", "6", "--full-steps", "3",
                 "--seeds", "1", "--schedule", "interval", "--K", "3", "--closed-loop", "0"]) == 0
    assert (bundle / "predictors" / "default" / "predictor.json").is_file()
    assert counts == {"opens": 1, "hashed": files}
