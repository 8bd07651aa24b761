"""``l2p bench``: methods compared at equal budgets (FLOPs, latency, PSNR, SSIM, memory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..predictor.presets import PRESETS
from ..predictor.schedule import check_count
from .options import (add_bundle_argument, add_cfg_options, add_conditioning_options, add_engine_options,
                      add_output_options, add_run_options, add_schedule_option, check_conditioning_args,
                      conditioning, open_sampler, positive, run_settings)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("bench", help="compare methods at equal budgets: FLOPs, latency, PSNR, SSIM, memory")
    add_bundle_argument(b)
    add_conditioning_options(b)
    add_run_options(b, sampling=False, full_steps=None)
    b.add_argument("--budgets", metavar="M,M...",
                   help="comma-separated full-step budgets (transformer steps out of --steps), e.g. 10,7 "
                        "(default: 10, or the count of --schedule)")
    add_schedule_option(b, "run every method on these computed steps instead of the even interval (presets run on "
                           "them; l2p:NAME predictors must have been calibrated for them; --calibrate fixes them)")
    b.add_argument("--preset-schedules", default="interval", metavar="NAME,...",
                   help="the schedules presets run on besides each predictor's own: interval (even spacing after "
                        "step 0) and/or taylorseer (diffusers' TaylorSeer pattern: warm-up 0,1,2, skip one, then "
                        "every interval-th step, e.g. 0,1,2,4,11,...,46 at 10/50); ignored with --schedule")
    add_cfg_options(b)
    b.add_argument("--methods", default="fora,taylorseer1,taylorseer2,lagrange2", metavar="METHOD,...",
                   help=f"comma-separated: presets ({', '.join(PRESETS)}) and l2p:NAME predictors of the bundle "
                        "({M} in a name = the budget, e.g. l2p:mine-{M})")
    b.add_argument("--calibrate", action="store_true",
                   help="calibrate an L2P predictor per budget first (l2p:bench-M) and bench it too")
    b.add_argument("--calib-conditioning", metavar="COND.npz",
                   help="calibration conditioning for --calibrate (default: the bench conditioning)")
    b.add_argument("--calib-seeds", type=positive, default=4, metavar="N",
                   help="calibration seeds per condition for --calibrate (0, 1, ...)")
    b.add_argument("--seeds", type=positive, default=2, metavar="N",
                   help="bench seeds per condition (1000, 1001, ...: disjoint from calibration seeds)")
    b.add_argument("--repeats", type=positive, default=3, metavar="N",
                   help="timed rounds, each running every method once, interleaved (after one untimed run per seed)")
    b.add_argument("--plot", metavar="PNG", help="write a plot of quality vs. FLOPs reduction here")
    add_output_options(b, json=True)
    add_engine_options(b, device=False)
    b.set_defaults(func=run)


def budgets(text: str | None, steps: int, schedule: tuple[int, ...] | None = None) -> list[int]:
    """``--budgets 10,7`` -> ``[10, 7]``, each a full-step count for ``steps`` steps (``None``: 10, or
    with a ``schedule`` its count, the only budget allowed with it)."""
    if schedule is not None:
        if text is not None and budgets(text, steps) != [len(schedule)]:
            raise InputError(f"--budgets {text} with --schedule {','.join(map(str, schedule))}: the schedule has "
                             f"{len(schedule)} computed steps, so the only budget is {len(schedule)}; drop --budgets")
        return [len(schedule)]
    text = "10" if text is None else text
    try:
        values = [int(b) for b in text.split(",")]
    except ValueError:
        raise InputError(f"--budgets {text!r}: give comma-separated step counts, e.g. 10,7") from None
    return [check_count(m, "--budgets: budget", 1, steps, " (at most --steps)") for m in values]


def run(a: argparse.Namespace) -> int:
    from ..bench import BENCH_SEED0, check_methods, format_table, plot, run_bench
    from ..calibration.calibrate import CalibrationConfig, Calibrator
    from ..predictor.schedule import format_schedule, parse_schedule
    from ..sampling.settings import RunSettings
    from ..progress import terminal_bar

    steps = RunSettings(steps=a.steps).steps
    schedule = parse_schedule(a.schedule, steps) if a.schedule else None
    budget_list = budgets(a.budgets, steps, schedule)
    check_conditioning_args(a)
    sampler = open_sampler(a)  # the one open of the bundle: every calibration and run below shares it
    cond = conditioning(sampler, a)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    made = {"l2p:bench-{M}"} if a.calibrate else set()  # --calibrate makes these first
    # every name and predictor is checked before calibrating or the full-compute pass
    check_methods(sampler, [m for m in methods if m not in made], steps, budget_list, schedule)
    log = (lambda s: None) if a.json else print
    if a.calibrate:  # one predictor per budget, calibrated on seeds 0.. (bench seeds are disjoint)
        calib = cond if not a.calib_conditioning else sampler.load_conditioning(a.calib_conditioning)
        for m in budget_list:
            cfg = CalibrationConfig(steps=steps, full_steps=m, name=f"bench-{m}", seeds=a.calib_seeds,
                                    schedule=format_schedule(schedule) if schedule else "search")
            Calibrator(sampler, calib, cfg, log=log, progress=terminal_bar).run()
        methods = [*methods, "l2p:bench-{M}"]
    seeds = range(BENCH_SEED0, BENCH_SEED0 + a.seeds)
    report = run_bench(sampler, cond, steps, budget_list, methods, seeds, log=log, repeats=a.repeats,
                       schedule=schedule, preset_schedules=a.preset_schedules.split(","))
    if a.plot:
        plot(report, Path(a.plot))
    print(json.dumps(report, indent=2) if a.json else format_table(report))
    if a.plot and not a.json:
        print(f"plot: {a.plot}")
    return 0
