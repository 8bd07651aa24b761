"""``l2p calibrate``: learn an L2P predictor for a bundle (torch-free)."""

from __future__ import annotations

import argparse

from ..calibration.fit import PRIORS, SOLVERS
from ..sampling.loop import TAPS
from .options import (add_bundle_argument, add_cfg_options, add_conditioning_options, add_engine_options,
                      add_run_options, check_conditioning_args, conditioning, non_negative, open_sampler, positive)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("calibrate", help="learn an L2P predictor for a bundle (torch-free)",
                       description="Capture full-compute trajectories through the bundle's engine, fit the "
                       "per-step linear predictor, choose the computed steps, and write BUNDLE/predictors/NAME.")
    add_bundle_argument(c)
    add_conditioning_options(c)
    add_run_options(c, sampling=False,
                    full_steps="budget: how many of the --steps steps run the transformer (required unless "
                               "--schedule lists the steps)")
    c.add_argument("--rows", metavar="ROW,ROW...",
                   help="use only these conditioning rows (0-based, comma-separated, e.g. 0,2,5; default: all)")
    c.add_argument("--holdout", type=float, default=0.0, metavar="F",
                   help="keep this fraction of the rows (of the seeds, with one row) out of every fit; the schedule "
                        "search scores on them and their score is printed and stored (e.g. 0.25; 0: none)")
    add_cfg_options(c)
    c.add_argument("--name", default="default", help="predictor name (use with --method l2p:NAME)")
    c.add_argument("--seeds", type=int, default=4, metavar="N",
                   help="seeds per condition (calibration set size, 1..256)")
    c.add_argument("--tap", default="output", choices=list(TAPS),
                   help="feature to forecast: the model output, or the cumulative block residual + cheap head")
    c.add_argument("--K", type=positive, nargs="+", default=[3, 4, 5], metavar="K",
                   help="history lengths to try (computed steps the predictor combines)")
    c.add_argument("--exact", type=int, nargs="+", default=[0, 1, 2], metavar="D",
                   help="polynomial degrees to try: the predictor forecasts every trajectory that is a "
                        "polynomial of this degree exactly and learns the rest (0: weights sum to 1)")
    c.add_argument("--no-latents", action="store_true", help="do not try fits with the latent terms")
    c.add_argument("--solver", default="lstsq", choices=SOLVERS, help="closed form or gradient (MSE) fit")
    c.add_argument("--schedule", default="search", metavar="search|interval|STEPS",
                   help="search the computed steps (a family of warm-ups, tails and spacings scored with fitted "
                        "weights and with the fixed formulas, then local moves, each scored closed loop on runs its "
                        "fit did not use), the even interval, or the computed "
                        "steps themselves: comma-separated, increasing, starting at 0 (e.g. 0,1,2,4,11,18,25,32,"
                        "39,46)")
    c.add_argument("--warmup", type=non_negative, default=1, metavar="N", help="warm-up steps for --schedule interval")
    c.add_argument("--refit", type=int, default=1, metavar="ROUNDS",
                   help="rounds of refitting on the cached sampler's own runs")
    c.add_argument("--refit-target", default="full", choices=["full", "true"],
                   help="refit towards the full-compute run's feature at each step, or the true feature at the "
                        "cached run's latent")
    c.add_argument("--closed-loop", type=int, default=1, metavar="ROUNDS",
                   help="Gauss-Newton rounds that tune the weights (inside the exactness constraints) on the "
                        "cached sampler's final images of the calibration set; each costs one cached run per "
                        "free weight (0: off)")
    c.add_argument("--free", action="store_true",
                   help="only try fits without any constraint on the feature weights (same as --exact -1)")
    c.add_argument("--ridges", type=float, nargs="+", default=[1e-6], metavar="LAMBDA",
                   help="ridge strengths to try (relative to the Gram diagonal; the best on the calibration set wins)")
    c.add_argument("--prior", nargs="+", default=["lagrange2"], choices=PRIORS, metavar="PRIOR",
                   help=f"what the ridge pulls the feature weights towards: {', '.join(PRIORS)}")
    add_engine_options(c, device=False)
    c.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..calibration.calibrate import CalibrationConfig, Calibrator
    from ..calibration.split import parse_rows
    from ..errors import InputError
    from ..predictor.schedule import split_steps
    from ..progress import terminal_bar

    full_steps = a.full_steps
    if full_steps is None:
        if a.schedule in ("search", "interval"):
            raise InputError(f"--schedule {a.schedule} needs --full-steps M (how many of the --steps steps run "
                             "the transformer), or give the computed steps: --schedule 0,1,2,...")
        full_steps = len(split_steps(a.schedule))
    cfg = CalibrationConfig(steps=a.steps, full_steps=full_steps, name=a.name, seeds=a.seeds, tap=a.tap,
                            Ks=tuple(a.K), latents=not a.no_latents, solver=a.solver,
                            schedule=a.schedule, warmup=a.warmup, refit=a.refit, refit_target=a.refit_target,
                            closed_loop=a.closed_loop,
                            exacts=(-1,) if a.free else tuple(a.exact), priors=tuple(a.prior),
                            ridges=tuple(a.ridges), holdout=a.holdout,
                            rows=parse_rows(a.rows) if a.rows is not None else None)
    check_conditioning_args(a)
    sampler = open_sampler(a)
    Calibrator(sampler, conditioning(sampler, a), cfg, progress=terminal_bar).run()
    return 0
