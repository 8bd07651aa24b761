"""What raises L2P's margin at high acceleration: calibration variants at one budget, benched on held-out captions.

    python tools/margin_study.py [--model tiny-flux] [--budget 5] [--out out/margin]

Calibrates, on the training captions of :mod:`l2p_study` (seeds 0..S-1), one predictor per variant:

==================  ==========================================================================
``default``         what ``l2p calibrate`` does (schedule search, K 3-5, latent terms tried, one refit
                    round, one closed-loop round)
``interval``        the same on the presets' even interval schedule (no search)
``long-history``    K 3-8 on the default's schedule (a longer history of computed outputs)
``no-latents``      no latent terms (outputs only) on the default's schedule
``closed-loop-0``   no closed-loop (final image) rounds; ``closed-loop-3``: three
``refit-0``         no refit on the cached sampler's own trajectories
``more-seeds``      twice the calibration seeds, on the default's schedule
==================  ==========================================================================

then benches them with the presets (each on the interval schedule and diffusers' TaylorSeer
pattern) on the held-out captions, bench seeds 1000.., and prints each variant's margin over the
best preset. Guided models run at their default classifier-free guidance scale.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from l2p.atomic import write_json
from l2p.bench import BENCH_SEED0, format_table, run_bench
from l2p.calibration.calibrate import CalibrationConfig, Calibrator
from l2p.predictor.schedule import format_schedule
from l2p.progress import terminal_bar
from l2p.sampling.pipeline import Sampler
from l2p_study import METRICS, captions

PRESETS = ["fora", "taylorseer1", "taylorseer2", "lagrange2"]


def variants(base: CalibrationConfig, schedule: str) -> dict[str, CalibrationConfig]:
    """The variants of the module docstring, ``schedule`` being the default's searched steps."""
    fixed = replace(base, schedule=schedule)
    return {
        "interval": replace(base, schedule="interval"),
        "long-history": replace(fixed, Ks=(3, 4, 5, 6, 7, 8)),
        "no-latents": replace(fixed, latents=False),
        "closed-loop-0": replace(fixed, closed_loop=0),
        "closed-loop-3": replace(fixed, closed_loop=3),
        "refit-0": replace(fixed, refit=0),
        "more-seeds": replace(fixed, seeds=2 * base.seeds),
    }


def margin_table(report: dict) -> str:
    """Each predictor's row and its margin over the best preset (interval or TaylorSeer pattern)."""
    rows = report["rows"]
    presets = [q for q in rows if q["method"] in PRESETS and q["schedule"] in ("interval", "taylorseer")]
    best = {k: max(q[k] for q in presets) for k, _ in METRICS}
    out = [f"{'variant':16s} " + " ".join(f"{n:>8s}" for _, n in METRICS) + "   margin (8-bit / latent)"]
    out.append(f"{'best preset':16s} " + " ".join(f"{best[k]:8.2f}" for k, _ in METRICS))
    for r in rows:
        if r["method"].startswith("l2p:ms-"):
            out.append(f"{r['method'][7:]:16s} " + " ".join(f"{r[k]:8.2f}" for k, _ in METRICS)
                       + f"   {r['psnr_db'] - best['psnr_db']:+.2f} / {r['latent_psnr_db'] - best['latent_psnr_db']:+.2f}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-flux")
    p.add_argument("--out", type=Path, default=Path("out/margin"))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budget", type=int, default=5)
    p.add_argument("--calib-captions", type=int, default=16)
    p.add_argument("--calib-seeds", type=int, default=2)
    p.add_argument("--bench-seeds", type=int, default=4)
    p.add_argument("--only", help="comma-separated variant names (default: all)")
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    from l2p.export.exporter import export_bundle

    bundle = export_bundle(a.model, a.out / "bundle")
    sampler = Sampler(bundle, threads=a.threads)
    calib, held = captions(a.calib_captions)
    ccond, hcond = sampler.encode_for_runs(calib), sampler.encode_for_runs(held)
    seconds: dict[str, float] = {}

    def calibrate(name: str, cfg: CalibrationConfig):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        pred = Calibrator(sampler, ccond, replace(cfg, name=f"ms-{name}"), log=lambda s: print("  " + s),
                          progress=terminal_bar).run()
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: {seconds[name]:.0f} s, schedule {format_schedule(pred.table.computed)}")
        return pred

    base = CalibrationConfig(steps=a.steps, full_steps=a.budget, seeds=a.calib_seeds)
    default = calibrate("default", base)
    chosen = variants(base, format_schedule(default.table.computed))
    names = ["default", *(a.only.split(",") if a.only else chosen)]
    for name in names[1:]:
        calibrate(name, chosen[name])
    report = run_bench(sampler, hcond, a.steps, [a.budget], [*(f"l2p:ms-{n}" for n in names), *PRESETS],
                       range(BENCH_SEED0, BENCH_SEED0 + a.bench_seeds), repeats=1,
                       preset_schedules=["interval", "taylorseer"])
    report["calibration_seconds"] = seconds
    write_json(a.out / "margin.json", report)
    print(format_table(report))
    print(f"\nL2P variants at {a.budget}/{a.steps} against the best preset (held-out captions, dB):\n"
          + margin_table(report))
    print(json.dumps({"report": str(a.out / "margin.json")}))


if __name__ == "__main__":
    main()
