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
