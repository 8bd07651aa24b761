"""``l2p build``: TensorRT plans for a bundle (GPU + TensorRT)."""

from __future__ import annotations

import argparse

from .options import PRECISIONS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("build", help="build TensorRT plans for a bundle (GPU + TensorRT)")
    t.add_argument("bundle")
    t.add_argument("--precision", default="fp32", choices=PRECISIONS)
    t.add_argument("--min", help="min dims, e.g. batch=1,txt_seq=64")
    t.add_argument("--opt", help="opt dims")
    t.add_argument("--max", help="max dims")
    t.add_argument("--timing-cache", help="TensorRT timing cache file (read and updated)")
    t.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..engine.trt_build import build_plans
    from ..engine.trt_profiles import parse_dims

    plans = build_plans(a.bundle, a.precision, min_dims=parse_dims(a.min) if a.min else None,
                        opt_dims=parse_dims(a.opt) if a.opt else None, max_dims=parse_dims(a.max) if a.max else None,
                        timing_cache=a.timing_cache)
    for g, p in plans.items():
        print(f"{g}: {p}")
    return 0
