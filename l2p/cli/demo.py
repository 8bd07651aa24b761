"""``l2p demo``: export the built-in model, sample captions, write a PNG grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_output_options, add_run_options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("demo", help="export the built-in model, sample captions, write a PNG grid")
    d.add_argument("--model", default="tiny-flux")
    add_output_options(d, out="output folder (bundle, grid.png, compare.png)", default="out/demo")
    add_run_options(d, sampling=False, full_steps="budget for the cached methods", full_steps_default=10)
    d.add_argument("--no-compare", action="store_true", help="full compute only (skip L2P vs. caches)")
    d.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..sampling.settings import RunSettings

    compare = not a.no_compare
    settings = RunSettings(steps=a.steps, full_steps=a.full_steps if compare else None)  # the budget: compare only
    run_demo(a.model, Path(a.out), steps=settings.steps, full_steps=a.full_steps, compare=compare)
    return 0
