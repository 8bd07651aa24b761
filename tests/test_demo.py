"""``l2p demo`` on the built-in model: export, sample, check, grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from l2p.models import BUILTIN

pytestmark = pytest.mark.skipif(not (BUILTIN["tiny-flux"] / "model_index.json").is_file(),
                                reason="the built-in tiny model is not in this checkout")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import contextlib
    import io

    from l2p.cli import main

    out_dir = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["demo", "--out", str(out_dir), "--steps", "20", "--no-compare"]) == 0
    return out_dir, buf.getvalue()


def test_demo_full_compute(demo_run: tuple[Path, str]) -> None:
    out_dir, out = demo_run
    assert (out_dir / "grid.png").stat().st_size > 10_000
    assert "checker:" in out and str(out_dir / "grid.png") in out
    assert (out_dir / "bundle" / "manifest.json").is_file()


def test_calibration_scores_decoded_images(demo_run: tuple[Path, str]) -> None:
    """With a VAE decoder in the bundle, calibration picks by image PSNR; the score it stores is
    the PSNR of the decoded images of the saved predictor's run, recomputed here."""
    import numpy as np

    from l2p.calibration.calibrate import CalibrationConfig, Calibrator
    from l2p.predictor.artifact import load_predictor
    from l2p.sampling.pipeline import Sampler
    from l2p.tinymodel.data import train_captions

    bundle = demo_run[0] / "bundle"
    s = Sampler(bundle)
    cond = s.encode(train_captions()[:3])
    cfg = CalibrationConfig(steps=12, full_steps=4, name="img", seeds=1, schedule="interval", Ks=(3, 4),
                            latents=False, refit=0)
    Calibrator(s, cond, cfg, log=lambda m: None).run()
    pred = load_predictor(bundle / "predictors" / "img")
    assert pred.fit_stats["calibration_metric"] == "image" and len(pred.fit_stats["fit_variants"]) == 5
    full = s.decode_float(s.sample(cond, 0, 12, decode=False).final).astype(np.float64)
    got = s.decode_float(s.sample(cond, 0, 12, method="l2p:img", decode=False).final).astype(np.float64)
    want = np.mean([10 * np.log10(1 / np.mean((g - f) ** 2)) for g, f in zip(got, full)])
    assert abs(pred.fit_stats["calibration_psnr_db"] - want) < 0.05  # the baked float32 graph vs. the fit's


def test_validate_on_the_shipped_model(demo_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    """``l2p validate --model tiny-flux`` passes on the shipped model's bundle: every graph matches
    PyTorch, both tokenizers give the transformers ids (a check prompt longer than T5's 16 tokens
    must be refused, as l2p does not cut T5 prompts), and the sampling run matches FluxPipeline."""
    from l2p.cli import main

    capsys.readouterr()
    rc = main(["validate", str(demo_run[0] / "bundle"), "--model", "tiny-flux", "--steps", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and out.rstrip().endswith("PASSED"), out
    assert "tokenizer_2 ids" in out and "FAIL" not in out


@pytest.mark.slow
def test_demo_with_cached_methods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from l2p.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "compare.png").is_file()
    assert "l2p" in out and "taylorseer2" in out and "fora" in out


def test_sample_records_checker_verdicts(demo_run: tuple[Path, str], tmp_path: Path) -> None:
    """On a built-in model's bundle, run.json holds the caption checker's verdict on each saved image."""
    import json

    import numpy as np
    from PIL import Image

    from l2p.cli import main
    from l2p.tinymodel.checker import check

    prompts = ["a red circle at the top left", "a blue square at the center"]
    assert main(["sample", str(demo_run[0] / "bundle"), "--prompt", *prompts, "--steps", "20",
                 "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["image_size"] == [64, 64] and [v["prompt"] for v in rec["checker"]] == prompts
    for v, name, prompt in zip(rec["checker"], rec["images"], prompts):
        r = check(np.asarray(Image.open(tmp_path / name).convert("RGB")), prompt)
        assert (v["ok"], v["reason"], v["colour"], v["shape"]) == (r.ok, r.reason, r.colour, r.shape)


@pytest.mark.parametrize(("prompt", "words"), [
    ("a dog", ["unknown word(s) dog", "knows only: a, at, blue"]),
    ("a magenta hexagon at the top left", ["unknown word(s) magenta, hexagon"]),
    ("a red circle", ["is not a caption", "'a <colour> <shape> at the <position>'"]),
])
def test_builtin_model_names_the_words_it_knows(demo_run: tuple[Path, str], tmp_path: Path, prompt: str,
                                                words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from l2p.cli import main

    assert main(["sample", str(demo_run[0] / "bundle"), "--prompt", prompt, "--steps", "2",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "tokens" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run.json").exists()
