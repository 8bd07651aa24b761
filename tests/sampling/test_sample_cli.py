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
    # --schedule: the preset runs the transformer on exactly those steps
    assert main(["sample", str(flux_bundle), "--conditioning", str(cond_file), "--steps", "10", "--method",
                 "taylorseer2", "--schedule", "0,1,2,4,7", "--out", str(tmp_path / "d")]) == 0
    rec = json.loads((tmp_path / "d" / "run.json").read_text())
    assert rec["computed_steps"] == [0, 1, 2, 4, 7] and rec["full_steps"] == 5


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
    assert "increasing order" in _err(capsys, [*base, "--steps", "10", "--method", "fora", "--schedule", "0,4,2"])
    assert "outside [0, 9]" in _err(capsys, [*base, "--steps", "10", "--method", "fora", "--schedule", "0,4,10"])
    assert "step 0" in _err(capsys, [*base, "--steps", "10", "--method", "fora", "--schedule", "1,4"])
    assert "--full-steps is 3" in _err(capsys, [*base, "--steps", "10", "--method", "taylorseer2",
                                                "--full-steps", "3", "--schedule", "0,4"])
    assert "--method full" in _err(capsys, [*base, "--steps", "10", "--schedule", "0,4"])
    assert "no text encoders" in _err(capsys, ["sample", str(flux_bundle), "--prompt", "hi", "--out", str(tmp_path / "o")])
    assert "no predictor" in _err(capsys, [*base, "--steps", "10", "--method", "l2p:nope"])
    assert "not a bundle" in _err(capsys, ["sample", str(tmp_path), "--conditioning", str(cond_file),
                                           "--out", str(tmp_path / "x")])


def test_run_json_reproduces_and_explains(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    """run.json records the versions, threads, sizes, and for l2p:NAME the predictor's identity and schedule."""
    import hashlib
    import shutil

    import onnxruntime

    from l2p.bundle import open_bundle
    from l2p.predictor.artifact import save_predictor
    from l2p.predictor.presets import preset
    from l2p.predictor.schedule import interval_schedule
    from l2p.spec import TensorSpec

    bundle = tmp_path / "bundle"
    shutil.copytree(flux_bundle, bundle, ignore=shutil.ignore_patterns("predictors"))
    b = open_bundle(bundle)
    out = b.spec("transformer").output("sample")
    schedule = interval_schedule(8, 3)
    save_predictor(bundle / "predictors" / "mine", table=preset("lagrange2", schedule, 8),
                   feature_spec=TensorSpec("output", out.dtype, out.shape), name="mine", method="l2p", tap="output",
                   bundle_hash=b.hash, scheduler_hash=b.scheduler_hash, fit_stats={"calibration_psnr_db": 33.0})
    assert main(["sample", str(bundle), "--conditioning", str(cond_file), "--steps", "8", "--method", "l2p:mine",
                 "--threads", "1", "--out", str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert rec["versions"]["onnxruntime"] == onnxruntime.__version__ and rec["versions"]["numpy"] == np.__version__
    from PIL import Image

    with Image.open(tmp_path / "o" / rec["images"][0]) as im:
        assert rec["image_size"] == [im.height, im.width]
    assert rec["threads"] == 1 and rec["latent_shape"] == list(np.load(tmp_path / "o" / "latents.npz")["final"].shape[1:])
    pred = rec["predictor"]
    folder = bundle / "predictors" / "mine"
    assert pred["name"] == "mine" and pred["schedule"] == list(schedule) == rec["computed_steps"]
    assert pred["sha256"] == hashlib.sha256((folder / "predictor.json").read_bytes()).hexdigest()
    assert pred["coefficients_sha256"] == hashlib.sha256((folder / "coefficients.npz").read_bytes()).hexdigest()
    assert pred["calibration_psnr_db"] == 33.0 and rec["checker"] is None  # not a built-in model's bundle
    assert main(["sample", str(bundle), "--conditioning", str(cond_file), "--steps", "8", "--out",
                 str(tmp_path / "f")]) == 0
    assert json.loads((tmp_path / "f" / "run.json").read_text())["predictor"] is None  # full compute


def test_hub_id_hint(cond_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    err = _err(capsys, ["sample", "black-forest-labs/FLUX.1-dev", "--conditioning", str(cond_file), "--out", "o"])
    assert "looks like a model-hub id" in err and "l2p export FLUX.1-dev --out BUNDLE" in err
    assert "--local-dir FLUX.1-dev" in err and "l2p export MODEL --out black-forest-labs/FLUX.1-dev" in err
    err = _err(capsys, ["export", "black-forest-labs/FLUX.1-dev", "--out", "b"])
    assert "looks like a model-hub id" in err and "l2p export FLUX.1-dev --out BUNDLE" in err
    (tmp_path / "black-forest-labs").mkdir()  # an existing folder is a path, not a hub id
    assert "model-hub" not in _err(capsys, ["sample", "black-forest-labs/FLUX.1-dev", "--conditioning",
                                            str(cond_file), "--out", "o"])


def test_repeated_prompt_flags_add_up() -> None:
    """``--prompt A --prompt B C`` is three prompts (a repeated flag used to keep only its last use)."""
    from l2p.cli import build_parser

    a = build_parser().parse_args(["sample", "B", "--prompt", "a red circle", "--prompt", "a", "b", "--out", "o"])
    assert a.prompt == ["a red circle", "a", "b"]
