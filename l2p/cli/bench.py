"""``l2p bench``: methods compared at equal budgets (FLOPs, latency, PSNR, SSIM, memory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..predictor.schedule import check_count
from .options import (add_conditioning_options, add_engine_options, add_output_options, add_run_options,
                      check_conditioning_args, conditioning, open_sampler, positive, run_settings)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("bench", help="compare methods at equal budgets: FLOPs, latency, PSNR, SSIM, memory")
    b.add_argument("bundle")
    add_conditioning_options(b)
    add_run_options(b, sampling=False, full_steps=None)
    b.add_argument("--budgets", default="10", help="comma-separated full-step budgets, e.g. 10,7")
    b.add_argument("--methods", default="fora,taylorseer1,taylorseer2,lagrange2",
                   help="comma-separated: presets and l2p:NAME ({M} = the budget)")
    b.add_argument("--calibrate", action="store_true", help="calibrate an l2p predictor per budget first")
    b.add_argument("--calib-conditioning", help="calibration COND.npz (default: the bench conditioning)")
    b.add_argument("--calib-seeds", type=positive, default=4)
    b.add_argument("--seeds", type=positive, default=2, help="bench seeds (1000, 1001, ...)")
    b.add_argument("--plot", help="write a PNG of quality vs. speed-up here")
    add_output_options(b, json=True)
    add_engine_options(b, device=False)
    b.set_defaults(func=run)


def budgets(text: str, steps: int) -> list[int]:
    """``--budgets 10,7`` -> ``[10, 7]``, each a full-step count for ``steps`` steps."""
    try:
        values = [int(b) for b in text.split(",")]
    except ValueError:
        raise InputError(f"--budgets {text!r}: give comma-separated step counts, e.g. 10,7") from None
    return [check_count(m, "--budgets: budget", 1, steps, " (at most --steps)") for m in values]


def run(a: argparse.Namespace) -> int:
    from ..bench import BENCH_SEED0, format_table, plot, run_bench
    from ..calibration.calibrate import CalibrationConfig, Calibrator

    steps = run_settings(a).steps
    budget_list = budgets(a.budgets, steps)
    check_conditioning_args(a)
    sampler = open_sampler(a)  # the one open of the bundle: every calibration and run below shares it
    cond = conditioning(sampler, a)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    log = (lambda s: None) if a.json else print
    if a.calibrate:  # one predictor per budget, calibrated on seeds 0.. (bench seeds are disjoint)
        calib = cond if not a.calib_conditioning else sampler.load_conditioning(a.calib_conditioning)
        for m in budget_list:
            cfg = CalibrationConfig(steps=steps, full_steps=m, name=f"bench-{m}", seeds=a.calib_seeds)
            Calibrator(sampler, calib, cfg, log=log).run()
        methods = [*methods, "l2p:bench-{M}"]
    seeds = range(BENCH_SEED0, BENCH_SEED0 + a.seeds)
    report = run_bench(sampler, cond, steps, budget_list, methods, seeds, log=log)
    if a.plot:
        plot(report, Path(a.plot))
    print(json.dumps(report, indent=2) if a.json else format_table(report))
    if a.plot and not a.json:
        print(f"plot: {a.plot}")
    return 0
