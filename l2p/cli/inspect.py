"""``l2p inspect``: what is in a bundle: graphs, text encoders, scheduler, predictors, TensorRT plans."""

from __future__ import annotations

import argparse
import json

from .options import add_bundle_argument, add_output_options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    i = sub.add_parser("inspect", help="show what is in a bundle: graphs, encoders, scheduler, predictors, plans",
                       description="Describe a bundle: every graph's I/O (names, dtypes, shapes), precision and "
                       "size; the text encoders' tokenizers; the scheduler; every predictor (checked as sampling "
                       "checks it) and every TensorRT plan. Torch-free.")
    add_bundle_argument(i)
    i.add_argument("--verify", action="store_true",
                   help="also check every file's sha256 against the manifest (slow for large bundles)")
    add_output_options(i, json=True)
    i.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..inspect import format_inspection, inspect_bundle

    report = inspect_bundle(a.bundle, verify=a.verify)
    print(json.dumps(report, indent=2) if a.json else format_inspection(report))
    return 0
