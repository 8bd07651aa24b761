"""Classifier-free guidance through the CLI, calibration and bench, on a tiny random-weight SD3 bundle.

The parity of guided sampling with the diffusers pipelines is in ``tests/export/test_<family>.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from l2p.atomic import load_npz, save_npz
from l2p.cli import main
from l2p.metrics import psnr_db

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from l2p.calibration.calibrate import CalibrationConfig, Calibrator  # noqa: E402
from l2p.calibration.capture import capture  # noqa: E402
from l2p.sampling.pipeline import Sampler  # noqa: E402
from l2p.sampling.settings import RunSettings  # noqa: E402

from ..export.conftest import export_tiny  # noqa: E402
from ..export.test_sd3 import CONFIG  # noqa: E402

STEPS = 8


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export_tiny(diffusers.SD3Transformer2DModel(**CONFIG).eval(), tmp_path_factory, "sd3cfg", (8, 8))


@pytest.fixture(scope="module")
def cond() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"encoder_hidden_states": rng.standard_normal((2, 6, 16)).astype(np.float32),
            "pooled_projections": rng.standard_normal((2, 12)).astype(np.float32),
            "negative_encoder_hidden_states": rng.standard_normal((2, 6, 16)).astype(np.float32),
            "negative_pooled_projections": rng.standard_normal((2, 12)).astype(np.float32)}


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_missing_negatives_and_flux_refusal(bundle: Path, cond: dict[str, np.ndarray], flux_bundle: Path,
                                                flux_cond: dict[str, np.ndarray], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    save_npz(tmp_path / "pos.npz", **{k: v for k, v in cond.items() if not k.startswith("negative_")})
    save_npz(tmp_path / "half.npz", **{k: v for k, v in cond.items() if k != "negative_pooled_projections"})
    run = ["sample", str(bundle), "--steps", "2", "--out", str(tmp_path / "o")]
    err = _error(capsys, [*run, "--conditioning", str(tmp_path / "pos.npz")])
    assert "['negative_encoder_hidden_states', 'negative_pooled_projections']" in err and "--cfg-scale 1" in err
    err = _error(capsys, [*run, "--conditioning", str(tmp_path / "half.npz")])
    assert "missing arrays ['negative_pooled_projections']" in err
    assert main([*run, "--conditioning", str(tmp_path / "pos.npz"), "--cfg-scale", "1"]) == 0  # guidance off
    err = _error(capsys, [*run, "--conditioning", str(tmp_path / "pos.npz"), "--cfg-scale", "0.5"])
    assert "--cfg-scale 0.5 is out of range" in err
    save_npz(tmp_path / "flux.npz", **flux_cond)
    err = _error(capsys, ["sample", str(flux_bundle), "--conditioning", str(tmp_path / "flux.npz"), "--steps", "2",
                          "--cfg-scale", "3", "--out", str(tmp_path / "f")])
    assert "no classifier-free guidance" in err and "--guidance" in err


def test_sample_records_both_branches(bundle: Path, cond: dict[str, np.ndarray], tmp_path: Path) -> None:
    """run.json: the scale (SD3's default 7) and every computed step evaluating both branches in one call."""
    save_npz(tmp_path / "cond.npz", **cond)
    out = tmp_path / "run"
    assert main(["sample", str(bundle), "--conditioning", str(tmp_path / "cond.npz"), "--steps", str(STEPS),
                 "--method", "fora", "--full-steps", "4", "--out", str(out)]) == 0
    rec = json.loads((out / "run.json").read_text())
    assert (rec["cfg_scale"], rec["cfg_forecast"], rec["full_steps"]) == (7.0, "branches", 4)
    assert (rec["transformer_calls"], rec["transformer_evaluations"]) == (4, 8)


def test_guided_trajectories_are_the_combination(bundle: Path, cond: dict[str, np.ndarray]) -> None:
    """Calibration captures, on every step, uncond + g (cond - uncond) of the transformer at that latent."""
    sampler = Sampler(bundle, threads=2, cfg_scale=5.0, cfg_forecast="guided")
    traj = capture(sampler, cond, [0], 3)
    engine, rt = sampler.engine("transformer"), sampler.rt
    sampler_sched = diffusers.FlowMatchEulerDiscreteScheduler.from_config(sampler.bundle.scheduler_config())
    rt.set_timesteps(sampler_sched, 3)
    for i, t in enumerate(sampler_sched.timesteps.numpy()):
        lat = traj.latents[:, i]
        ts = np.full((2,), t, np.float32)
        pos = engine.run({"hidden_states": lat, "timestep": ts, "encoder_hidden_states": cond["encoder_hidden_states"],
                          "pooled_projections": cond["pooled_projections"]})["sample"]
        neg = engine.run({"hidden_states": lat, "timestep": ts,
                          "encoder_hidden_states": cond["negative_encoder_hidden_states"],
                          "pooled_projections": cond["negative_pooled_projections"]})["sample"]
        np.testing.assert_allclose(traj.features["output"][:, i], neg + 5.0 * (pos - neg), rtol=1e-4, atol=1e-4)
    branches = capture(Sampler(bundle, threads=2, cfg_scale=5.0, cfg_forecast="branches"), cond, [0], 3)
    assert branches.features["output"].shape == (2, 3, 2, 4, 8, 8)  # (T, N, [uncond, cond], C, H, W)
    np.testing.assert_allclose(branches.features["output"][:, -1, 1], pos, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(branches.features["output"][:, -1, 0], neg, rtol=1e-4, atol=1e-4)


def test_branch_forecast_of_a_linear_preset_equals_guided(bundle: Path, cond: dict[str, np.ndarray]) -> None:
    """A fixed linear formula commutes with the linear CFG combination: forecasting each branch and
    combining equals forecasting the combined output (SD3's CFG is linear; Qwen-Image's is not)."""
    finals = {}
    for mode in ("guided", "branches"):
        s = Sampler(bundle, threads=2, cfg_scale=4.0, cfg_forecast=mode)
        finals[mode] = s.run(cond, RunSettings(steps=STEPS, method="taylorseer2", full_steps=4, cfg_scale=4.0,
                                               cfg_forecast=mode), decode=False).final
    full = Sampler(bundle, threads=2, cfg_scale=4.0, cfg_forecast="guided").sample(cond, 0, STEPS, decode=False).final
    assert psnr_db(finals["branches"], finals["guided"]) >= 80
    assert psnr_db(finals["guided"], full) < 80  # the forecasts do differ from full compute


def test_calibrated_predictor_keeps_its_cfg(bundle: Path, cond: dict[str, np.ndarray], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A predictor calibrated under guidance records the scale and mode; another scale is refused
    with the command that makes a matching predictor; each forecast mode samples close to full compute."""
    for mode in ("guided", "branches"):
        sampler = Sampler(bundle, threads=2, cfg_scale=6.0, cfg_forecast=mode)
        cfg = CalibrationConfig(steps=STEPS, full_steps=4, name=f"g6-{mode}", seeds=1, schedule="interval",
                                Ks=(3,), exacts=(1,), refit=0, closed_loop=0)
        pred = Calibrator(sampler, cond, cfg, log=lambda m: None).run()
        assert (pred.cfg_scale, pred.cfg_forecast) == (6.0, mode)
        got = sampler.run(cond, RunSettings(steps=STEPS, method=f"l2p:g6-{mode}", cfg_scale=6.0, cfg_forecast=mode),
                          decode=False).final
        full = sampler.sample(cond, 0, STEPS, decode=False).final
        assert psnr_db(got, full) > 25
    save_npz(tmp_path / "cond.npz", **cond)
    err = _error(capsys, ["sample", str(bundle), "--conditioning", str(tmp_path / "cond.npz"), "--steps", str(STEPS),
                          "--method", "l2p:g6-guided", "--cfg-scale", "4", "--out", str(tmp_path / "o")])
    assert "--cfg-scale 6" in err and "l2p calibrate BUNDLE" in err and "--cfg-scale 4" in err
    err = _error(capsys, ["sample", str(bundle), "--conditioning", str(tmp_path / "cond.npz"), "--steps", str(STEPS),
                          "--method", "l2p:g6-guided", "--cfg-scale", "6", "--cfg-forecast", "branches",
                          "--out", str(tmp_path / "o")])
    assert "--cfg-forecast branches was asked" in err
    assert main(["sample", str(bundle), "--conditioning", str(tmp_path / "cond.npz"), "--steps", str(STEPS),
                 "--method", "l2p:g6-branches", "--cfg-scale", "6", "--cfg-forecast", "branches",
                 "--out", str(tmp_path / "ok")]) == 0
    rec = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert rec["predictor"]["cfg_scale"] == 6.0 and rec["predictor"]["cfg_forecast"] == "branches"


def test_bench_counts_both_branches(bundle: Path, cond: dict[str, np.ndarray], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    save_npz(tmp_path / "cond.npz", **cond)
    assert main(["bench", str(bundle), "--conditioning", str(tmp_path / "cond.npz"), "--steps", str(STEPS),
                 "--budgets", "4", "--methods", "fora", "--seeds", "1", "--repeats", "1", "--json",
                 "--cfg-forecast", "branches"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cfg_scale"] == 7.0 and report["cfg_forecast"] == "branches"
    assert report["transformer_flops_per_step"] == 2 * report["transformer_flops"]  # same-length negatives
    fora = next(r for r in report["rows"] if r["method"] == "fora")
    assert 1.9 < fora["flops_reduction"] <= 2.0  # 8 of 4 steps computed, forecasts nearly free
