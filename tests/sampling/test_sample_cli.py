"""``l2p sample``: outputs, reruns from given noise, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from l2p.atomic import load_npz, save_npz
from l2p.cli import main


@pytest.fixture()
def cond_file(tmp_path: Path, flux_cond: dict[str, np.ndarray]) -> Path:
    save_npz(tmp_path / "cond.npz", **flux_cond)
    return tmp_path / "cond.npz"


def test_outputs_and_rerun(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["sample", str(flux_bundle), "--conditioning", str(cond_file), "--steps", "5", "--seed", "7",
                 "--out", str(a)]) == 0
    lat = load_npz(a / "latents.npz")
    assert lat["initial"].shape == lat["final"].shape == (2, 16, 16)
    rec = json.loads((a / "run.json").read_text())
    assert rec["seed"] == 7 and rec["steps"] == 5 and rec["method"] == "full" and len(rec["bundle_hash"]) == 64
    assert len(rec["timings"]["per_step_s"]) == 5
    # rerun from the saved noise with another seed: the noise file wins, results are identical
    assert main(["sample", str(flux_bundle), "--conditioning", str(cond_file), "--steps", "5", "--seed", "1",
                 "--initial-latents", str(a / "latents.npz"), "--out", str(b)]) == 0
    assert np.array_equal(load_npz(b / "latents.npz")["final"], lat["final"])
    # --index picks one row
    assert main(["sample", str(flux_bundle), "--conditioning", str(cond_file), "--steps", "5", "--seed", "7",
                 "--index", "1", "--out", str(tmp_path / "c")]) == 0
    one = load_npz(tmp_path / "c" / "latents.npz")["final"]
    assert one.shape == (1, 16, 16)


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


def test_bad_conditioning(flux_bundle: Path, tmp_path: Path, flux_cond: dict[str, np.ndarray],
                          capsys: pytest.CaptureFixture[str]) -> None:
    base = ["sample", str(flux_bundle), "--steps", "3", "--out", str(tmp_path / "o"), "--conditioning"]
    cases = {
        "missing": ({"encoder_hidden_states": flux_cond["encoder_hidden_states"]}, "missing arrays"),
        "extra": ({**flux_cond, "foo": flux_cond["pooled_projections"]}, "unexpected arrays"),
        "shape": ({**flux_cond, "pooled_projections": np.zeros((2, 7), np.float32)}, "shape"),
        "nan": ({**flux_cond, "pooled_projections": np.full((2, 24), np.nan, np.float32)}, "NaN"),
        "dtype": ({**flux_cond, "pooled_projections": np.zeros((2, 24), np.int32)}, "dtype"),
        "rows": ({**flux_cond, "pooled_projections": np.zeros((3, 24), np.float32)}, "rows"),
    }
    for name, (arrays, msg) in cases.items():
        save_npz(tmp_path / f"{name}.npz", **arrays)
        assert msg in _err(capsys, [*base, str(tmp_path / f"{name}.npz")]), name
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "not a readable" in _err(capsys, [*base, str(tmp_path / "junk.npz")])


def test_bad_arguments(flux_bundle: Path, cond_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["sample", str(flux_bundle), "--conditioning", str(cond_file), "--out", str(tmp_path / "o")]
    assert "--steps" in _err(capsys, [*base, "--steps", "0"])
    assert "--steps" in _err(capsys, [*base, "--steps", "100000"])
    assert "--seed" in _err(capsys, [*base, "--seed", "-1"])
    assert "--full-steps" in _err(capsys, [*base, "--steps", "10", "--method", "fora", "--full-steps", "11"])
    assert "needs --full-steps" in _err(capsys, [*base, "--steps", "10", "--method", "fora"])
    assert "unknown method" in _err(capsys, [*base, "--method", "magic"])
    assert "--index" in _err(capsys, [*base, "--index", "5"])
    assert "no text encoders" in _err(capsys, ["sample", str(flux_bundle), "--prompt", "hi", "--out", str(tmp_path / "o")])
    assert "no predictor" in _err(capsys, [*base, "--steps", "10", "--method", "l2p:nope"])
    assert "not a bundle" in _err(capsys, ["sample", str(tmp_path), "--conditioning", str(cond_file),
                                           "--out", str(tmp_path / "x")])
