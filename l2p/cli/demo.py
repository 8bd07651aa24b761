"""``l2p demo``: export the built-in model, sample captions, compare L2P with the fixed formulas."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_output_options, add_run_options, positive


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("demo", help="export the built-in model, sample captions, compare L2P with the caches")
    d.add_argument("--model", default="tiny-flux",
                   help="built-in model name or local diffusers pipeline folder")
    add_output_options(d, out="output folder (bundle, grid.png, compare.png)", default="out/demo")
    add_run_options(d, sampling=False, full_steps="a single budget (instead of --budgets)")
    d.add_argument("--budgets", default="10,5", metavar="M,M",
                   help="comma-separated budgets of the cached methods (transformer steps out of --steps)")
    d.add_argument("--repeats", type=positive, default=3, metavar="N",
                   help="timed rounds of every method, interleaved, as in l2p bench")
    d.add_argument("--no-compare", action="store_true", help="full compute only (skip L2P vs. caches)")
    d.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..sampling.settings import RunSettings
    from .bench import budgets

    compare = not a.no_compare
    steps = RunSettings(steps=a.steps, full_steps=a.full_steps if compare else None).steps  # checks both
    chosen = [] if not compare else [a.full_steps] if a.full_steps is not None else budgets(a.budgets, steps)
    run_demo(a.model, Path(a.out), steps=steps, budgets=chosen, compare=compare, repeats=a.repeats)
    return 0
