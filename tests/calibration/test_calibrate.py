"""Calibration end to end on a tiny bundle: the artifact, its use, and its refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from l2p.atomic import save_npz
from l2p.calibration.calibrate import RUNNER_UP_GAP_DB, CalibrationConfig, Calibrator
from l2p.calibration.capture import Trajectories
from l2p.predictor.schedule import interval_schedule, taylorseer_pattern
from l2p.errors import InputError, MismatchError
from l2p.predictor.artifact import load_predictor
from l2p.sampling.pipeline import Sampler


@pytest.fixture(scope="module")
def predictor(flux_bundle: Path, flux_cond: dict[str, np.ndarray]) -> Path:
    cfg = CalibrationConfig(steps=12, full_steps=4, name="t12", seeds=2)
    Calibrator(Sampler(flux_bundle), flux_cond, cfg, log=lambda s: None).run()
    return flux_bundle / "predictors" / "t12"


def test_artifact(predictor: Path, flux_bundle: Path) -> None:
    pred = load_predictor(predictor)
    assert pred.num_steps == 12 and len(pred.schedule) == 4 and pred.schedule[0] == 0
    # the scheduler hash is that of the bundle's scheduler config as JSON data (key order and spacing aside)
    config = json.loads((flux_bundle / "scheduler" / "scheduler_config.json").read_text())
    reordered = json.dumps(dict(reversed(list(config.items()))), indent=3).encode()
    assert pred.scheduler_hash == hashlib.sha256(json.dumps(json.loads(reordered), sort_keys=True,
                                                            separators=(",", ":")).encode()).hexdigest()
    chosen = pred.fit_stats["chosen"]
    assert pred.tap == "output" and pred.K == chosen["K"] in (3, 4, 5) and pred.uses_latents == chosen["latents"]
    # every fit variant was scored (K 3: exact 0, 1; K 4 and 5: exact 0, 1, 2; each with and without latents),
    # the search's fit on each of its next best schedules (the leaders), and the four fixed formulas the
    # refinement may start from
    fitted = [v for v in pred.fit_stats["fit_variants"] if "preset" not in v and "schedule" not in v]
    leaders = [tuple(x) for x in pred.fit_stats["schedule_search_result"]["leaders"]]
    again = [tuple(v["schedule"]) for v in pred.fit_stats["fit_variants"] if "preset" not in v and "schedule" in v]
    starts = [(v["preset"], tuple(v["schedule"])) for v in pred.fit_stats["fit_variants"] if "preset" in v]
    assert len(fitted) == 16 and pred.fit_stats["calibration_metric"] == "latent"
    assert again == leaders and 1 <= len(leaders) <= 3
    searched = starts[0][1]  # then the presets' two schedules and the leaders, where they differ from it
    schedules = list(dict.fromkeys([searched, interval_schedule(12, 4), taylorseer_pattern(12, 4), *leaders]))
    assert starts == [(n, s) for s in schedules for n in ("fora", "taylorseer1", "taylorseer2", "lagrange2")]
    assert pred.schedule in schedules
    assert {"fidelity.png", "fidelity.txt", "predictor.onnx", "coefficients.npz"} <= {p.name for p in predictor.iterdir()}
    assert pred.fit_stats["fit_seconds"] < 5
    assert len(pred.fit_stats["schedule_search"]) >= 2
    # refit and closed-loop rounds are kept only when they improve the calibration score
    rounds = pred.fit_stats["closed_loop"]
    assert rounds and all(r["parameters"] > 0 for r in rounds)
    assert pred.fit_stats["calibration_psnr_db"] >= max(v["psnr_db"] for v in pred.fit_stats["fit_variants"])
    # the best fixed-formula start on another schedule was refined too (unless it trailed by more than
    # RUNNER_UP_GAP_DB); the better of the two is kept
    runner_up = pred.fit_stats.get("runner_up")
    scored = [(tuple(v.get("schedule", searched)), v["psnr_db"]) for v in pred.fit_stats["fit_variants"]]
    top = max(scored, key=lambda x: x[1])
    others = [v["psnr_db"] for v in pred.fit_stats["fit_variants"] if "preset" in v and tuple(v["schedule"]) != top[0]]
    if runner_up is None:
        assert max(others, default=float("-inf")) < top[1] - RUNNER_UP_GAP_DB
        return
    assert max(others) >= top[1] - RUNNER_UP_GAP_DB and tuple(runner_up["schedule"]) in schedules
    assert runner_up["start"] in ("fora", "taylorseer1", "taylorseer2", "lagrange2")
    if runner_up["kept"]:
        assert pred.schedule == tuple(runner_up["schedule"])
        assert pred.fit_stats["calibration_psnr_db"] == runner_up["psnr_db"]
    else:
        assert pred.fit_stats["calibration_psnr_db"] >= runner_up["psnr_db"]


def test_fixed_formula_starts_score_as_those_presets_sample(predictor: Path, flux_bundle: Path,
                                                           flux_cond: dict[str, np.ndarray]) -> None:
    """Each fixed-formula start's calibration score is the latent PSNR of that preset sampled on its
    schedule (l2p sample --method PRESET --schedule ...) against full compute, calibration seeds 0 and 1
    (run as --seed 0 and --seed R for R rows)."""
    from l2p.metrics import psnr_db
    from l2p.sampling.settings import RunSettings

    s = Sampler(flux_bundle)
    pred = load_predictor(predictor)
    rows = len(next(iter(flux_cond.values())))
    seeds = (0, rows)
    full = np.concatenate([s.sample(flux_cond, k, 12, decode=False).final for k in seeds])
    for v in pred.fit_stats["fit_variants"]:
        if "preset" in v:
            got = np.concatenate([s.run(flux_cond, RunSettings(steps=12, seed=k, method=v["preset"], full_steps=4,
                                                               schedule=tuple(v["schedule"])), decode=False).final
                                  for k in seeds])
            assert abs(v["psnr_db"] - psnr_db(got, full)) < 1e-3, v


def test_l2p_sampling_uses_the_baked_graph(predictor: Path, flux_bundle: Path, flux_cond: dict[str, np.ndarray]) -> None:
    s = Sampler(flux_bundle)
    pred = load_predictor(predictor)
    feats: dict[int, np.ndarray] = {}
    lats: dict[int, np.ndarray] = {}

    def grab(v):  # type: ignore[no-untyped-def]
        feats[v.index] = v.features["output"].copy()
        lats[v.index] = v.latents.copy()

    res = s.sample(flux_cond, 5, 12, method="l2p:t12", capture=grab, decode=False)
    assert res.loop.computed_steps == 4
    for i in range(12):  # every forecast equals the linear form evaluated in float64 numpy
        if pred.table.is_computed(i):
            continue
        hist = pred.table.history(i)
        ref = pred.table.predict(i, [feats[s] for s in hist], [lats[s] for s in hist], lats[i])
        np.testing.assert_allclose(feats[i], ref, rtol=1e-4, atol=1e-5)


def test_rerun_is_a_noop(predictor: Path, flux_bundle: Path, flux_cond: dict[str, np.ndarray]) -> None:
    msgs: list[str] = []
    before = (predictor / "predictor.json").read_bytes()
    Calibrator(Sampler(flux_bundle), flux_cond, CalibrationConfig(steps=12, full_steps=4, name="t12", seeds=2),
               log=msgs.append).run()
    assert any("up to date" in m for m in msgs)
    assert (predictor / "predictor.json").read_bytes() == before


def test_refuses_mismatch(predictor: Path, flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path) -> None:
    s = Sampler(flux_bundle)
    with pytest.raises(MismatchError, match="12 steps"):
        s.sample(flux_cond, 0, 20, method="l2p:t12")
    with pytest.raises(MismatchError, match="full steps"):
        s.sample(flux_cond, 0, 12, method="l2p:t12", full_steps=6)
    # the same predictor copied into another bundle is refused: it names the bundle it was made for
    other = tmp_path / "other"
    shutil.copytree(flux_bundle, other)
    m = json.loads((other / "manifest.json").read_text())
    m["export_config"]["source"] = "elsewhere"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MismatchError, match="bundle"):
        Sampler(other).sample(flux_cond, 0, 12, method="l2p:t12")


def test_trajectory_cache_is_checked(predictor: Path, flux_bundle: Path, flux_cond: dict[str, np.ndarray]) -> None:
    """The cached full-compute runs are reused only when they are the runs this calibration would
    capture: a cache planted in the bundle (other starting noise, other shapes) is captured again."""
    msgs: list[str] = []
    cal = Calibrator(Sampler(flux_bundle), flux_cond, CalibrationConfig(steps=12, full_steps=4, name="t12", seeds=2),
                     log=msgs.append)
    traj = cal.full_trajectories()
    assert msgs[-1].startswith("reusing 4 cached")
    (cache,) = (flux_bundle / "predictors" / ".cache").glob("traj-*.npz")
    for planted in (Trajectories(traj.latents * 2, traj.features, traj.finals),  # not the seeds' noise
                    Trajectories(traj.latents[:, :6], traj.features, traj.finals)):  # 6 steps, not 12
        save_npz(cache, **planted.arrays())
        n = len(msgs)
        again = cal.full_trajectories()
        assert msgs[n].startswith("capturing 2 conditions x 2 seeds")
        np.testing.assert_array_equal(again.latents, traj.latents)


def test_bad_calibration_settings() -> None:
    with pytest.raises(InputError):
        CalibrationConfig(steps=10, full_steps=11)
    with pytest.raises(InputError):
        CalibrationConfig(steps=10, full_steps=3, schedule="random")
    assert CalibrationConfig(steps=10, full_steps=3, tap="residual").latents is False
    with pytest.raises(InputError, match="--K"):
        CalibrationConfig(steps=10, full_steps=3, Ks=(0,))
    with pytest.raises(InputError, match="--exact"):
        CalibrationConfig(steps=10, full_steps=3, exacts=(-3,))
    free = CalibrationConfig(steps=10, full_steps=3, exacts=(-1,), latents=False)
    assert [v.exact for v in free.variants()] == [-1, -1, -1] and free.search_variants()[0].K == 4


def test_progress_bars_count_the_long_parts(flux_bundle: Path, flux_cond: dict[str, np.ndarray],
                                            tmp_path: Path) -> None:
    """Each long part gets a bar whose total is its real amount of work, and the bar reaches it."""
    from l2p.calibration.search import candidate_schedules, noise_levels

    bundle = tmp_path / "b"
    shutil.copytree(flux_bundle, bundle, ignore=shutil.ignore_patterns("predictors"))
    bars: list[dict] = []

    class Recorder:
        def __init__(self, total: int, desc: str, unit: str) -> None:
            self.rec = {"desc": desc, "total": total, "done": 0, "closed": False}
            bars.append(self.rec)

        def update(self, n: int = 1) -> None:
            self.rec["done"] += n

        def close(self) -> None:
            self.rec["closed"] = True

    steps, full, seeds = 10, 4, 2
    cfg = CalibrationConfig(steps=steps, full_steps=full, name="bars", seeds=seeds, Ks=(3, 4), exacts=(0,),
                            refit=1, closed_loop=1)  # weights sum to 1: K - 1 free weights per forecast step
    Calibrator(Sampler(bundle), flux_cond, cfg, log=lambda s: None, progress=Recorder).run()
    by = {b["desc"]: b for b in bars}
    # refit and the schedule refinement may stop early (no improvement): done <= total
    early = ("refit", "schedule search: refinement")
    assert all(b["closed"] and b["done"] == b["total"] for b in bars if not b["desc"].startswith(early)), bars
    assert all(b["closed"] and b["done"] <= b["total"] for b in bars), bars
    assert by["capture (full compute)"]["total"] == seeds * steps
    sampler = Sampler(bundle)
    assert by["schedule search: family"]["total"] == len(candidate_schedules(steps, full, noise_levels(sampler, steps)))
    assert by["schedule search: refinement"]["total"] == 3 * (full - 1)
    assert by["fit variants"]["total"] == len(cfg.variants())
    assert by["refit 1: own runs"]["total"] == seeds * steps == by["refit 1: own runs"]["done"]
    pred = load_predictor(bundle / "predictors" / "bars")
    from l2p.predictor.schedule import history_before

    # one free weight per computed step in a forecast step's history, less the sum-to-1 constraint
    free = sum(len(history_before(pred.schedule, i, pred.K)) - 1 for i in range(steps) if i not in pred.schedule)
    assert by["closed-loop round 1/1"]["total"] == pred.fit_stats["closed_loop"][0]["parameters"] + 1 == free + 1


def test_rows_holdout_and_search_record(flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path) -> None:
    """--rows picks and orders the rows; --holdout keeps one out of every fit, scores the schedule
    search on it and stores its score, which equals sampling that row with the predictor."""
    from l2p.metrics import psnr_db
    from l2p.predictor.schedule import interval_schedule

    bundle = tmp_path / "b"
    shutil.copytree(flux_bundle, bundle, ignore=shutil.ignore_patterns("predictors"))
    s = Sampler(bundle)
    cfg = CalibrationConfig(steps=12, full_steps=4, name="held", seeds=2, rows=(1, 0), holdout=0.5, Ks=(3,),
                            exacts=(1,), latents=False, refit=1, closed_loop=0)
    msgs: list[str] = []
    pred = Calibrator(s, flux_cond, cfg, log=msgs.append).run()
    held = pred.fit_stats["holdout"]
    # the selected rows are (1, 0); the second half of them (original row 0) is held out
    assert (held["rows"], held["seeds"], held["fraction"]) == ([1], [0, 1], 0.5)
    res = pred.fit_stats["schedule_search_result"]
    assert res["folds"] == [{"fit": {"rows": [0], "seeds": [0, 1]}, "score": {"rows": [1], "seeds": [0, 1]}}]
    assert len(pred.schedule) == 4 and res["psnr_db"] >= res["interval"]["psnr_db"]
    assert res["interval"]["schedule"] == list(interval_schedule(12, 4))
    assert any("held-out score" in m for m in msgs)
    # independent check: sample original row 0 from the noise it had in the batch of rows (1, 0):
    # calibration seed number k runs as --seed 2k (k x rows), so all four runs start from their own noise
    row0 = {k: v[0:1] for k, v in flux_cond.items()}
    starts = np.concatenate([s.rt.noise(seed, 2) for seed in (0, 2)])  # (4, ...): seeds 0, 1, 2, 3
    assert len({a.tobytes() for a in starts}) == 4
    got, want = [], []
    for seed in (0, 2):
        noise = s.rt.noise(seed, 2)[1:2]
        got.append(s.sample(row0, seed, 12, method="l2p:held", initial=noise, decode=False).final)
        want.append(s.sample(row0, seed, 12, initial=noise, decode=False).final)
    assert abs(psnr_db(np.concatenate(got), np.concatenate(want)) - held["psnr_db"]) < 1e-6
    assert pred.created_by["rows"] == [1, 0] and pred.created_by["holdout"] == 0.5


def test_fixed_schedule(flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(flux_bundle, bundle, ignore=shutil.ignore_patterns("predictors"))
    cfg = CalibrationConfig(steps=12, full_steps=4, name="fixed", seeds=1, schedule="0,1,2,7", Ks=(3,), exacts=(1,),
                            latents=False, refit=0, closed_loop=0)
    pred = Calibrator(Sampler(bundle), flux_cond, cfg, log=lambda m: None).run()
    assert pred.schedule == (0, 1, 2, 7) and pred.fit_stats["schedule_search"] == []
    s = Sampler(bundle)
    assert s.sample(flux_cond, 3, 12, method="l2p:fixed", decode=False).loop.computed_steps == 4
    from l2p.sampling.settings import RunSettings

    ok = RunSettings(steps=12, method="l2p:fixed", schedule=(0, 1, 2, 7))
    assert s.run(flux_cond, ok, decode=False).loop.computed_steps == 4
    with pytest.raises(MismatchError, match=r"on steps \[0, 1, 2, 7\], but --schedule 0,1,3,7 was asked for"):
        s.run(flux_cond, RunSettings(steps=12, method="l2p:fixed", schedule=(0, 1, 3, 7)), decode=False)


@pytest.mark.parametrize("extra, words", [
    (["--full-steps", "4", "--schedule", "0,5,3,9"], "increasing order"),
    (["--full-steps", "3", "--schedule", "0,3,5,9"], "--full-steps is 3"),
    (["--schedule", "0,3,12"], "outside [0, 11]"),
    (["--schedule", "2,3,5"], "does not contain step 0"),
    (["--schedule", "search"], "needs --full-steps"),
    (["--full-steps", "4", "--schedule", "sometimes"], "comma-separated integers"),
    (["--full-steps", "4", "--holdout", "1.5"], "--holdout 1.5 is out of range"),
    (["--full-steps", "4", "--rows", "0,7"], "rows [7] are out of range"),
    (["--full-steps", "4", "--rows", "0,x"], "comma-separated row numbers"),
])
def test_calibrate_cli_refusals(flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], extra: list[str], words: str) -> None:
    from l2p.cli import main

    save_npz(tmp_path / "cond.npz", **flux_cond)
    assert main(["calibrate", str(flux_bundle), "--conditioning", str(tmp_path / "cond.npz"), "--steps", "12",
                 "--name", "never", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not (flux_bundle / "predictors" / "never").exists()
