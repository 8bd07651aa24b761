"""The L2P study on one model: calibrate on training captions, bench on held-out ones.

    python tools/l2p_study.py [--model tiny-flux] [--out out/study] [--budgets 10,7] [--steps 50]

For each budget M it calibrates three predictors on the calibration captions (seeds 0..S-1):
``study-out-M`` (output tap, searched schedule), ``study-int-M`` (output tap, the presets' even
interval schedule: L2P against the formulas with the same computed steps) and ``study-res-M``
(cumulative block residual tap with the cheap head, searched schedule), then benches full compute,
FORA, TaylorSeer-1/2, Lagrange-2 (each on the even interval schedule, diffusers' TaylorSeer
pattern and L2P's searched schedule; ``--preset-schedules``) and the predictors on held-out
captions with bench seeds 1000.. (disjoint from the calibration seeds). Guided models (tiny-sd3)
run at their default classifier-free guidance scale with the negative prompt "" (``--cfg-scale``).
Prints the table, L2P's margins over the best preset and whether its quality rises with the
budget, and writes ``OUT/bench.json`` and ``OUT/quality_vs_speedup.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from l2p.atomic import write_json
from l2p.bench import BENCH_SEED0, borrowed, format_table, plot, run_bench
from l2p.calibration.calibrate import CalibrationConfig, Calibrator
from l2p.progress import terminal_bar
from l2p.sampling.pipeline import Sampler


def captions(n_calib: int) -> tuple[list[str], list[str]]:
    """Calibration captions (spread over the training captions) and the held-out captions."""
    from l2p.tinymodel.data import heldout_captions, train_captions

    train = train_captions()
    step = max(1, len(train) // n_calib)
    return train[::step][:n_calib], heldout_captions()


METRICS = (("psnr_db", "8-bit"), ("psnr_float_db", "float"), ("latent_psnr_db", "latent"))


def margins(report: dict, methods: list[str]) -> str:
    """L2P minus the best fixed-formula preset (best per measure) per budget: against every preset on
    the better of its interval schedule and the TaylorSeer pattern (the L2P issue's target), and on
    the predictor's own schedule; then whether each predictor's quality rises with the budget."""
    rows = report["rows"]
    out = [f"{'predictor':18s} {'vs. best preset on':30s} " + " ".join(f"{n:>7s}" for _, n in METRICS)]
    for r in rows:
        if not r["method"].startswith("l2p:"):
            continue
        name, m = r["method"][4:], r["full_steps"]
        presets = [q for q in rows if q["full_steps"] == m and q["method"] in methods]
        groups = [("interval or TaylorSeer pattern", [q for q in presets if q["schedule"] in ("interval", "taylorseer")]),
                  ("the same schedule", [q for q in presets if q["schedule"] == borrowed(name)])]
        for label, group in groups:
            if group:
                d = [r[k] - max(q[k] for q in group) for k, _ in METRICS]
                out.append(f"{name:18s} {label:30s} " + " ".join("    n/a" if x != x else f"{x:+7.2f}" for x in d))
    by_prefix: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["method"].startswith("l2p:"):
            by_prefix.setdefault(r["method"][4:].rsplit("-", 1)[0], []).append((r["full_steps"], r["psnr_db"]))
    for prefix, pts in by_prefix.items():
        pts.sort()
        mono = all(b[1] > a[1] for a, b in zip(pts, pts[1:]))
        out.append(f"{prefix}: 8-bit PSNR over budgets " + ", ".join(f"{m}: {v:.2f}" for m, v in pts)
                   + (" (monotone)" if mono else " (NOT monotone)"))
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-flux")
    p.add_argument("--out", type=Path, default=Path("out/study"))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budgets", default="10,7")
    p.add_argument("--calib-captions", type=int, default=16)
    p.add_argument("--calib-seeds", type=int, default=4, help="calibration seeds per caption (l2p calibrate's default)")
    p.add_argument("--bench-seeds", type=int, default=4)
    p.add_argument("--taps", default="output,residual")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-interval", action="store_true", help="skip the L2P predictor on the interval schedule")
    p.add_argument("--preset-schedules", default="interval,taylorseer",
                   help="schedules the presets run on besides the predictors' (l2p bench --preset-schedules)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default: the family's)")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds (quality needs one)")
    a = p.parse_args()
    from l2p.export.exporter import export_bundle

    bundle = export_bundle(a.model, a.out / "bundle")
    sampler = Sampler(bundle, threads=a.threads, cfg_scale=a.cfg_scale)
    calib, held = captions(a.calib_captions)
    ccond, hcond = sampler.encode_for_runs(calib), sampler.encode_for_runs(held)
    budgets = [int(b) for b in a.budgets.split(",")]
    taps = a.taps.split(",")
    # (name prefix, tap, schedule): the searched schedule for every tap, the interval one for the output
    runs = [(f"study-{t[:3]}", t, "search") for t in taps]
    if "output" in taps and not a.no_interval:
        runs.insert(1, ("study-int", "output", "interval"))
    methods = ["fora", "taylorseer1", "taylorseer2", "lagrange2"]
    for m in budgets:
        for prefix, tap, schedule in runs:
            name = f"{prefix}-{m}"
            t0 = time.perf_counter()
            cfg = CalibrationConfig(steps=a.steps, full_steps=m, name=name, seeds=a.calib_seeds, tap=tap,
                                    schedule=schedule)
            pred = Calibrator(sampler, ccond, cfg, log=lambda s: print("  " + s), progress=terminal_bar).run()
            print(f"calibrated {name} in {time.perf_counter() - t0:.0f} s; fit {pred.fit_stats['fit_seconds']:.3f} s")
    methods = [*(f"l2p:{prefix}-{{M}}" for prefix, _, _ in runs), *methods]
    report = run_bench(sampler, hcond, a.steps, budgets, methods, range(BENCH_SEED0, BENCH_SEED0 + a.bench_seeds),
                       repeats=a.repeats, preset_schedules=a.preset_schedules.split(","))
    report["calibration_captions"] = calib
    report["bench_captions"] = held
    write_json(a.out / "bench.json", report)
    plot(report, a.out / "quality_vs_speedup.png")
    print(format_table(report))
    print("\nL2P minus the best preset (dB):\n" + margins(report, methods))
    print(json.dumps({"plot": str(a.out / "quality_vs_speedup.png")}))


if __name__ == "__main__":
    main()
