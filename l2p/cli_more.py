"""Subcommands beyond export/validate/sample (calibrate, bench, build, demo), registered into
:mod:`l2p.cli`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .cli import _EXTRA_COMMANDS, _positive
from .errors import InputError


def _conditioning(sampler: Any, a: argparse.Namespace) -> Any:
    from .calibration.calibrate import read_prompts

    if bool(a.prompts) == bool(a.conditioning):
        raise InputError("give either --prompts FILE or --conditioning COND.npz")
    if a.prompts:
        return sampler.encode(read_prompts(a.prompts))
    return sampler.load_conditioning(a.conditioning)


def cmd_calibrate(a: argparse.Namespace) -> int:
    from .calibration.calibrate import CalibrationConfig, Calibrator
    from .sampling.pipeline import Sampler

    cfg = CalibrationConfig(steps=a.steps, full_steps=a.full_steps, name=a.name, seeds=a.seeds, tap=a.tap,
                            Ks=tuple(a.K), latents=not a.no_latents, solver=a.solver,
                            schedule=a.schedule, warmup=a.warmup, refit=a.refit, refit_target=a.refit_target,
                            closed_loop=a.closed_loop,
                            exacts=(-1,) if a.free else tuple(a.exact), priors=tuple(a.prior),
                            ridges=tuple(a.ridges))
    if not cfg.name.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"--name {cfg.name!r}: use letters, digits, '-' and '_' only")
    cond = _conditioning(Sampler(a.bundle, threads=a.threads), a)
    Calibrator(a.bundle, cond, cfg, threads=a.threads).run()
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from .bench import BENCH_SEED0, format_table, plot, run_bench
    from .calibration.calibrate import CalibrationConfig, Calibrator
    from .sampling.pipeline import Sampler

    sampler = Sampler(a.bundle, threads=a.threads)
    cond = _conditioning(sampler, a)
    try:
        budgets = [int(b) for b in a.budgets.split(",")]
    except ValueError:
        raise InputError(f"--budgets {a.budgets!r}: give comma-separated step counts, e.g. 10,7") from None
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if a.calibrate:  # one predictor per budget, calibrated on seeds 0.. (bench seeds are disjoint)
        calib = cond if not a.calib_conditioning else sampler.load_conditioning(a.calib_conditioning)
        for m in budgets:
            cfg = CalibrationConfig(steps=a.steps, full_steps=m, name=f"bench-{m}", seeds=a.calib_seeds)
            Calibrator(a.bundle, calib, cfg, log=lambda s: None if a.json else print(s), threads=a.threads).run()
        methods = [*methods, "l2p:bench-{M}"]
    seeds = range(BENCH_SEED0, BENCH_SEED0 + a.seeds)
    report = run_bench(sampler, cond, a.steps, budgets, methods, seeds,
                       log=(lambda s: None) if a.json else print, repeats=a.repeats)
    if a.plot:
        plot(report, Path(a.plot))
    print(json.dumps(report, indent=2) if a.json else format_table(report))
    if a.plot and not a.json:
        print(f"plot: {a.plot}")
    return 0


def cmd_build(a: argparse.Namespace) -> int:
    from .engine.trt_build import build_plans, parse_dims

    plans = build_plans(a.bundle, a.precision, min_dims=parse_dims(a.min) if a.min else None,
                        opt_dims=parse_dims(a.opt) if a.opt else None, max_dims=parse_dims(a.max) if a.max else None,
                        timing_cache=a.timing_cache)
    for g, p in plans.items():
        print(f"{g}: {p}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(a.model, Path(a.out), steps=a.steps, full_steps=a.full_steps, compare=not a.no_compare)
    return 0


def _register(sub: Any) -> None:
    c = sub.add_parser("calibrate", help="learn an L2P predictor for a bundle (torch-free)",
                       description="Capture full-compute trajectories through the bundle's engine, fit the "
                       "per-step linear predictor, choose the computed steps, and write BUNDLE/predictors/NAME.")
    c.add_argument("bundle")
    c.add_argument("--prompts", help="text file, one prompt per line (bundle with text encoders)")
    c.add_argument("--conditioning", help="COND.npz (one row per condition)")
    c.add_argument("--steps", type=_positive, required=True, help="sampling steps N")
    c.add_argument("--full-steps", type=_positive, required=True, help="budget M of transformer steps")
    c.add_argument("--name", default="default", help="predictor name (use with --method l2p:NAME)")
    c.add_argument("--seeds", type=_positive, default=4, help="seeds per condition (calibration set size)")
    c.add_argument("--tap", default="output", choices=["output", "residual"],
                   help="feature to forecast: the model output, or the cumulative block residual + cheap head")
    c.add_argument("--K", type=_positive, nargs="+", default=[3, 4, 5],
                   help="history lengths to try (computed steps the predictor combines)")
    c.add_argument("--exact", type=int, nargs="+", default=[0, 1, 2],
                   help="polynomial degrees to try: the predictor forecasts every trajectory that is a "
                        "polynomial of this degree exactly and learns the rest (0: weights sum to 1)")
    c.add_argument("--no-latents", action="store_true", help="do not try fits with the latent terms")
    c.add_argument("--solver", default="lstsq", choices=["lstsq", "gd"], help="closed form or gradient (MSE) fit")
    c.add_argument("--schedule", default="search", choices=["search", "interval"],
                   help="search warm-up + spacing on the calibration set, or a fixed interval")
    c.add_argument("--warmup", type=_positive, default=1, help="warm-up steps for --schedule interval")
    c.add_argument("--refit", type=int, default=1, help="rounds of refitting on the cached sampler's own runs")
    c.add_argument("--refit-target", default="full", choices=["full", "true"],
                   help="refit towards the full-compute run's feature at each step, or the true feature at the "
                        "cached run's latent")
    c.add_argument("--closed-loop", type=int, default=1, metavar="ROUNDS",
                   help="Gauss-Newton rounds that tune the weights (inside the exactness constraints) on the "
                        "cached sampler's final images of the calibration set; each costs one cached run per "
                        "free weight (0: off)")
    c.add_argument("--free", action="store_true",
                   help="only try fits without any constraint on the feature weights (same as --exact -1)")
    c.add_argument("--ridges", type=float, nargs="+", default=[1e-6],
                   help="ridge strengths to try (relative to the Gram diagonal; the best on the calibration set wins)")
    c.add_argument("--prior", nargs="+", default=["lagrange2"],
                   choices=["zero", "fora", "taylorseer1", "taylorseer2", "lagrange2"],
                   help="what the ridge pulls the feature weights towards")
    c.add_argument("--threads", type=int)
    c.set_defaults(func=cmd_calibrate)

    b = sub.add_parser("bench", help="compare methods at equal budgets: FLOPs, latency, PSNR, SSIM, memory")
    b.add_argument("bundle")
    b.add_argument("--prompts")
    b.add_argument("--conditioning")
    b.add_argument("--steps", type=_positive, default=50)
    b.add_argument("--budgets", default="10", help="comma-separated full-step budgets, e.g. 10,7")
    b.add_argument("--methods", default="fora,taylorseer1,taylorseer2,lagrange2",
                   help="comma-separated: presets and l2p:NAME ({M} = the budget)")
    b.add_argument("--calibrate", action="store_true", help="calibrate an l2p predictor per budget first")
    b.add_argument("--calib-conditioning", help="calibration COND.npz (default: the bench conditioning)")
    b.add_argument("--calib-seeds", type=_positive, default=4)
    b.add_argument("--seeds", type=_positive, default=2, help="bench seeds (1000, 1001, ...)")
    b.add_argument("--repeats", type=_positive, default=3,
                   help="timed rounds, each running every method once (after one untimed run per seed)")
    b.add_argument("--plot", help="write a PNG of quality vs. speed-up here")
    b.add_argument("--json", action="store_true")
    b.add_argument("--threads", type=int)
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("build", help="build TensorRT plans for a bundle (GPU + TensorRT)")
    t.add_argument("bundle")
    t.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    t.add_argument("--min", help="min dims, e.g. batch=1,txt_seq=64")
    t.add_argument("--opt", help="opt dims")
    t.add_argument("--max", help="max dims")
    t.add_argument("--timing-cache", help="TensorRT timing cache file (read and updated)")
    t.set_defaults(func=cmd_build)

    d = sub.add_parser("demo", help="export the built-in model, sample captions, write a PNG grid")
    d.add_argument("--model", default="tiny-flux")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--steps", type=_positive, default=50)
    d.add_argument("--full-steps", type=_positive, default=10, help="budget for the cached methods")
    d.add_argument("--no-compare", action="store_true", help="full compute only (skip L2P vs. caches)")
    d.set_defaults(func=cmd_demo)


_EXTRA_COMMANDS.append(_register)
