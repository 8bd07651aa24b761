"""``l2p validate``: a bundle against the PyTorch model, or a GPU backend against ONNX Runtime CPU."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from .options import add_bundle_argument, positive


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser("validate", help="compare a bundle with the PyTorch model (needs torch)")
    add_bundle_argument(v)
    v.add_argument("--model", metavar="MODEL", help="the diffusers folder the bundle came from")
    v.add_argument("--conditioning", metavar="COND.npz",
                   help="conditioning of the sampling run (default: the bundle's text encoders or random)")
    v.add_argument("--index", type=int, default=0, metavar="ROW", help="conditioning row for the sampling run")
    v.add_argument("--steps", type=positive, default=50, metavar="N",
                   help="steps of the sampling run compared step by step with PyTorch")
    v.add_argument("--seed", type=int, default=0, help="seed of the sampling run's starting noise")
    v.add_argument("--backend", default="pytorch",
                   help="pytorch (default: compare with the PyTorch model), or tensorrt / onnxruntime-cuda "
                        "(compare that backend with ONNX Runtime CPU)")
    v.add_argument("--dims", metavar="DIMS",
                   help="sample dims for --backend validation, e.g. batch=1,img_seq=64 (needed for "
                        "onnxruntime-*; tensorrt default: the min shapes of the built plans)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    if a.backend != "pytorch":
        from ..engine.trt_profiles import parse_dims
        from ..validation.backends import format_backend_report, validate_backend

        report = validate_backend(a.bundle, a.backend, dims=parse_dims(a.dims) if a.dims else None)
        print(json.dumps(report, indent=2) if a.json else format_backend_report(report))
        return 0 if report["ok"] else 1
    if a.dims:
        raise InputError("--dims gives the sample shapes of --backend tensorrt/onnxruntime-cuda/onnxruntime-tensorrt "
                         "validation; the PyTorch comparison takes its shapes from the bundle")
    if not a.model:
        raise InputError("validate needs --model MODEL (the diffusers folder the bundle was exported from)")
    from ..validation.pytorch import format_report, validate

    report = validate(a.bundle, a.model, a.conditioning, a.steps, a.seed, a.index)
    print(json.dumps(report, indent=2) if a.json else format_report(report))
    return 0 if report["ok"] else 1

