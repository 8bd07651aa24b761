"""``l2p bench`` end to end on a tiny bundle, and the PSNR it reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l2p.bench import format_table, run_bench
from l2p.metrics import psnr_db
from l2p.sampling.pipeline import Sampler
from l2p.timing import NOISE_NOTE


def test_psnr_db_against_the_definition() -> None:
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, (3, 8, 8, 3))
    got = ref + rng.normal(0, 1e-3, ref.shape)
    want = np.mean([10 * np.log10(1.0 / np.mean((g - r) ** 2)) for g, r in zip(got, ref)])
    assert abs(psnr_db(got, ref, peak=1.0) - want) < 1e-9
    assert psnr_db(ref, ref) == 99.0
    lat = rng.standard_normal((2, 16, 4))  # peak defaults to each reference's range
    want = np.mean([10 * np.log10(np.ptp(r) ** 2 / np.mean((0.99 * r - r) ** 2)) for r in lat])
    assert abs(psnr_db(0.99 * lat, lat) - want) < 1e-9


def test_bench_rows(flux_bundle: Path, flux_cond: dict[str, np.ndarray]) -> None:
    s = Sampler(flux_bundle)
    report = run_bench(s, flux_cond, 12, [4], ["full", "fora", "lagrange2", "fora"], [1000, 1001], log=lambda m: None)
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"full", "fora", "lagrange2"}
    assert rows["full"]["psnr_db"] == 99.0 and rows["full"]["latent_psnr_db"] == 99.0
    for name in ("fora", "lagrange2"):
        r = rows[name]
        assert r["full_steps"] == 4 and 2.5 < r["flops_reduction"] <= 3.0  # 12 / 4 less the predictor's cost
        assert 0 < r["latent_psnr_db"] < 99 and np.isnan(r["psnr_float_db"])  # no image decoder in this bundle
    # the latent PSNR is that of the final latents, recomputed here from two independent runs
    fin = [s.sample(flux_cond, sd, 12, method="fora", full_steps=4, decode=False).final for sd in (1000, 1001)]
    ref = [s.sample(flux_cond, sd, 12, decode=False).final for sd in (1000, 1001)]
    want = np.mean([10 * np.log10(np.ptp(r) ** 2 / np.mean((f.astype(np.float64) - r) ** 2))
                    for f, r in zip(np.concatenate(fin), np.concatenate(ref))])
    assert abs(rows["fora"]["latent_psnr_db"] - want) < 1e-6
    assert report["repeats"] == 3 and rows["full"]["speedup"] == 1.0  # each round's full run against itself
    for name in ("fora", "lagrange2"):
        assert rows[name]["speedup_low"] <= rows[name]["speedup"] <= rows[name]["speedup_high"]
    table = format_table(report)
    assert "latent dB" in table and "float dB" in table
    assert [line.split()[0] for line in table.splitlines()[2:5]] == ["full", "fora", "lagrange2"]


def test_presets_also_run_on_the_taylorseer_pattern(flux_bundle: Path, flux_cond: dict[str, np.ndarray]) -> None:
    """--preset-schedules interval,taylorseer: each preset gets a row per schedule; the taylorseer
    row is that preset sampled on diffusers' TaylorSeer pattern (warm-up 0,1,2, skip 3, ...)."""
    import pytest

    from l2p.errors import InputError
    from l2p.predictor.schedule import interval_schedule, taylorseer_pattern
    from l2p.sampling.settings import RunSettings

    s = Sampler(flux_bundle)
    report = run_bench(s, flux_cond, 12, [5], ["fora"], [1000], log=lambda m: None, repeats=1,
                       preset_schedules=["interval", "taylorseer"])
    rows = {r["schedule"]: r for r in report["rows"] if r["method"] == "fora"}
    assert set(rows) == {"interval", "taylorseer"}
    pattern = taylorseer_pattern(12, 5)
    assert pattern != interval_schedule(12, 5)
    ref = s.sample(flux_cond, 1000, 12, decode=False).final
    for name, sched in (("interval", interval_schedule(12, 5)), ("taylorseer", pattern)):
        got = s.run(flux_cond, RunSettings(steps=12, seed=1000, method="fora", full_steps=5, schedule=sched),
                    decode=False).final
        assert abs(rows[name]["latent_psnr_db"] - psnr_db(got, ref)) < 1e-6
    with pytest.raises(InputError, match="--preset-schedules even: choose one or more of interval, taylorseer"):
        run_bench(s, flux_cond, 12, [5], ["fora"], [1000], log=lambda m: None, preset_schedules=["even"])


def test_bench_checks_methods_before_computing(flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path,
                                              monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """An unknown method or a missing/mismatched predictor is refused before the first sampling run."""
    import shutil

    import pytest

    from l2p.atomic import save_npz
    from l2p.cli import main
    from l2p.errors import InputError, MismatchError
    from l2p.predictor.artifact import save_predictor
    from l2p.predictor.presets import preset
    from l2p.predictor.schedule import interval_schedule
    from l2p.spec import TensorSpec

    bundle = tmp_path / "bundle"
    shutil.copytree(flux_bundle, bundle, ignore=shutil.ignore_patterns("predictors"))
    s = Sampler(bundle)
    out = s.bundle.spec("transformer").output("sample")
    save_predictor(bundle / "predictors" / "three", table=preset("fora", interval_schedule(12, 3), 12),
                   feature_spec=TensorSpec("output", out.dtype, out.shape), name="three", method="l2p",
                   tap="output", bundle_hash=s.bundle.hash, scheduler_hash=s.bundle.scheduler_hash)
    runs = []
    monkeypatch.setattr(Sampler, "run", lambda *a, **k: runs.append(1))
    with pytest.raises(InputError, match="unknown method 'taylorseer9'"):
        run_bench(s, flux_cond, 12, [4], ["fora", "taylorseer9"], [1000], log=lambda m: None)
    with pytest.raises(InputError, match="no predictor 'nope-4' for budget 4; make it with: l2p calibrate"):
        run_bench(s, flux_cond, 12, [4], ["fora", "l2p:nope-{M}"], [1000], log=lambda m: None)
    with pytest.raises(MismatchError, match="but 4 full steps were asked for"):
        run_bench(s, flux_cond, 12, [4], ["l2p:three"], [1000], log=lambda m: None)
    save_npz(tmp_path / "cond.npz", **flux_cond)
    assert main(["bench", str(bundle), "--conditioning", str(tmp_path / "cond.npz"), "--steps", "12",
                 "--budgets", "4", "--methods", "fora,magic"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert not runs


def test_plot_labels_and_legend(tmp_path: Path) -> None:
    from l2p.bench import borrowed, plot, series_label

    rows = [{"method": "full", "schedule": "all", "full_steps": 12, "flops_reduction": 1.0, "psnr_db": 99.0}]
    for m, red, base in ((4, 3.0, 30.0), (3, 4.0, 25.0)):
        rows += [{"method": f"l2p:bench-{m}", "schedule": "own", "full_steps": m, "flops_reduction": red,
                  "psnr_db": base + 5},
                 {"method": "taylorseer2", "schedule": "interval", "full_steps": m, "flops_reduction": red,
                  "psnr_db": base},
                 {"method": "taylorseer2", "schedule": borrowed(f"bench-{m}"), "full_steps": m,
                  "flops_reduction": red, "psnr_db": base + 1},
                 {"method": "taylorseer2", "schedule": "taylorseer", "full_steps": m, "flops_reduction": red,
                  "psnr_db": base - 3}]
    labels = {series_label(r) for r in rows[1:]}
    assert labels == {"l2p:bench", "taylorseer2", "taylorseer2 on l2p:bench's schedule",
                      "taylorseer2 on the TaylorSeer pattern"}
    path = plot({"rows": rows, "steps": 12, "seeds": [1000]}, tmp_path / "q.png")
    from PIL import Image

    with Image.open(path) as im:
        assert im.width > im.height > 200


def test_speedups_above_the_flops_reduction_are_marked_as_noise() -> None:
    def row(method: str, speedup: float) -> dict[str, object]:
        return {"method": method, "schedule": "interval", "full_steps": 10, "flops_reduction": 4.98,
                "speedup": speedup, "speedup_low": speedup - 0.1, "speedup_high": speedup + 0.1, "psnr_db": 30.0,
                "ssim": 0.9, "seconds": 1.0, "peak_rss_mb": 100.0}

    table = format_table({"repeats": 3, "rows": [row("fora", 4.90)]})
    assert " 4.90x " in table and "*" not in table and "noise" not in table
    table = format_table({"repeats": 3, "rows": [row("fora", 4.90), row("taylorseer2", 5.31)]})
    lines = table.splitlines()
    assert " 5.31x* " in lines[3] and "*" not in lines[2] and lines[-1] == NOISE_NOTE
