"""``l2p demo`` on the built-in model: export, sample, check, grid, and the comparison (few steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
        assert main(["demo", "--out", str(out_dir), "--steps", "10", "--budgets", "4"]) == 0
    return out_dir, buf.getvalue()


def test_demo_full_compute(demo_run: tuple[Path, str]) -> None:
    out_dir, out = demo_run
    assert (out_dir / "grid.png").stat().st_size > 10_000
    assert "checker:" in out and str(out_dir / "grid.png") in out
    assert (out_dir / "bundle" / "manifest.json").is_file()


def test_demo_compare_numbers_are_those_of_the_images(demo_run: tuple[Path, str]) -> None:
    """compare.png's PSNR per method is the PSNR of that method's images against full compute
    (seed 0, the held-out captions), recomputed here from two independent runs by the definition."""
    import json

    import numpy as np

    from l2p.sampling.pipeline import Sampler

    out_dir, out = demo_run
    assert (out_dir / "compare.png").stat().st_size > 50_000 and str(out_dir / "compare.png") in out
    report = json.loads((out_dir / "compare.json").read_text())
    rows = {(r["method"], r["schedule"]): r for r in report["rows"]}
    assert {("l2p:demo-4", "own"), ("taylorseer2", "interval"), ("fora", "interval")} <= set(rows)
    assert set(report["checker"]) == {"4"} and set(report["checker"]["4"]) == {"l2p:demo-4", "taylorseer2", "fora"}
    s = Sampler(out_dir / "bundle")
    cond = s.encode(report["captions"])
    full = s.sample(cond, 0, 10).images.astype(np.float64)
    for method, schedule in (("fora", "interval"), ("l2p:demo-4", "own")):
        got = s.sample(cond, 0, 10, method=method, full_steps=4).images.astype(np.float64)
        want = np.mean([99.0 if np.array_equal(g, f) else min(99.0, 10 * np.log10(255.0**2 / np.mean((g - f) ** 2)))
                        for g, f in zip(got, full)])  # per image, capped at 99 dB as documented
        row = rows[(method, schedule)]
        assert abs(row["psnr_db"] - want) < 0.01, (method, row["psnr_db"], want)
        assert row["full_steps"] == 4 and 2.0 < row["flops_reduction"] <= 2.5  # 10/4, less the predictor's cost


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
    fitted = [v for v in pred.fit_stats["fit_variants"] if "preset" not in v]  # then 4 fixed-formula starts
    assert pred.fit_stats["calibration_metric"] == "image" and len(fitted) == 5
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
def test_demo_as_shipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's command: 50 steps, budgets 10 and 5. L2P is closer to full compute than the
    fixed formulas at both budgets."""
    import json

    from l2p.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "compare.png").is_file()
    assert "l2p" in out and "taylorseer2" in out and "fora" in out
    rows = {(r["method"], r["full_steps"], r["schedule"]): r["psnr_db"]
            for r in json.loads((tmp_path / "compare.json").read_text())["rows"]}
    for m in (10, 5):
        assert rows[(f"l2p:demo-{m}", m, "own")] > max(rows[("taylorseer2", m, "interval")],
                                                        rows[("fora", m, "interval")])


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


def test_negative_prompt_is_encoded_as_diffusers(demo_run: tuple[Path, str]) -> None:
    """Under guidance the negative prompt (diffusers' default: empty) goes through the same text
    encoders, one row per prompt: the arrays equal FluxPipeline.encode_prompt's for that text."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from l2p.sampling.pipeline import Sampler

    s = Sampler(demo_run[0] / "bundle")
    cond = s.encode(["a red circle at the top left", "a blue square at the bottom right"], negative_prompt="")
    assert cond["negative_encoder_hidden_states"].shape == cond["encoder_hidden_states"].shape
    pipe = diffusers.FluxPipeline.from_pretrained(str(BUILTIN["tiny-flux"]), local_files_only=True)
    with torch.no_grad():
        hidden, pooled, _ = pipe.encode_prompt(prompt=["", ""], prompt_2=None,
                                               max_sequence_length=cond["encoder_hidden_states"].shape[1])
    for got, ref in ((cond["negative_encoder_hidden_states"], hidden), (cond["negative_pooled_projections"], pooled)):
        ref = ref.numpy()
        assert np.linalg.norm(got - ref) <= 1e-5 * np.linalg.norm(ref)
