"""``l2p build``: TensorRT plans for a bundle (GPU + TensorRT)."""

from __future__ import annotations

import argparse

from .options import PRECISIONS, add_bundle_argument


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("build", help="build TensorRT plans for a bundle (GPU + TensorRT)")
    add_bundle_argument(t)
    t.add_argument("--precision", choices=PRECISIONS,
                   help="plan precision (default: the graphs' own; TensorRT 11 builds only that, TensorRT 10 "
                        "can build an fp32 graph in fp16 or bf16)")
    t.add_argument("--min", metavar="DIMS", help="smallest dims of the optimization profile, e.g. "
                                                 "batch=1,txt_seq=64 (default: --opt)")
    t.add_argument("--opt", metavar="DIMS", help="dims TensorRT tunes for (default: --max, else --min)")
    t.add_argument("--max", metavar="DIMS", help="largest dims of the profile (default: --opt)")
    t.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache file (read and updated)")
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
