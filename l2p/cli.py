"""``l2p``: one subcommand per stage. A thin front end over the package.

Every :class:`~l2p.errors.L2PError` becomes a one-line ``error: ...`` and exit status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import InputError, L2PError


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not allowed; give a whole number >= 1")
    return v


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=not sys.stderr.isatty())


# export ------------------------------------------------------------------------------------
def cmd_export(a: argparse.Namespace) -> int:
    from .export.exporter import export_bundle

    if a.latent_size and (a.height or a.width):
        raise InputError("give either --latent-size H W or --height/--width, not both")
    if bool(a.height) != bool(a.width):
        raise InputError("give both --height and --width")
    export_bundle(a.model, a.out, latent_size=tuple(a.latent_size) if a.latent_size else None,
                  image_size=(a.height, a.width) if a.height else None, precision=a.precision,
                  max_sequence_length=a.max_sequence_length, check=not a.no_check, force=a.force)
    return 0


# validate ----------------------------------------------------------------------------------
def cmd_validate(a: argparse.Namespace) -> int:
    if a.backend != "pytorch":
        from .engine.trt_profiles import parse_dims
        from .validation.backends import format_backend_report, validate_backend

        report = validate_backend(a.bundle, a.backend, dims=parse_dims(a.dims) if a.dims else None)
        print(json.dumps(report, indent=2) if a.json else format_backend_report(report))
        return 0 if report["ok"] else 1
    if a.dims:
        raise InputError("--dims gives the sample shapes of --backend tensorrt/onnxruntime-cuda/onnxruntime-tensorrt "
                         "validation; the PyTorch comparison takes its shapes from the bundle")
    if not a.model:
        raise InputError("validate needs --model MODEL (the diffusers folder the bundle was exported from)")
    from .validation.pytorch import format_report, validate

    report = validate(a.bundle, a.model, a.conditioning, a.steps, a.seed, a.index)
    print(json.dumps(report, indent=2) if a.json else format_report(report))
    return 0 if report["ok"] else 1


# sample ------------------------------------------------------------------------------------
def cmd_sample(a: argparse.Namespace) -> int:
    import numpy as np

    from .atomic import load_npz, save_npz, write_json
    from .sampling.methods import check_method
    from .sampling.pipeline import Sampler, check_run_args, save_images
    from .sampling.run_dir import check_run_out, run_folder

    check_run_args(a.steps, a.seed, a.full_steps)
    check_method(a.method, a.steps, a.full_steps)
    if bool(a.prompt) == bool(a.conditioning):
        raise InputError("give either --prompt TEXT ... or --conditioning COND.npz")
    check_run_out(Path(os.path.realpath(a.out)))
    sampler = Sampler(a.bundle, backend=a.backend, threads=a.threads, guidance_scale=a.guidance,
                      device=a.device, use_cuda_graph=a.cuda_graph)
    cond = sampler.encode(list(a.prompt)) if a.prompt else sampler.load_conditioning(a.conditioning)
    rows = len(next(iter(cond.values())))
    if a.index is not None:
        if not 0 <= a.index < rows:
            raise InputError(f"--index {a.index} is out of range: the conditioning has {rows} rows (0..{rows - 1})")
        cond = {k: v[a.index:a.index + 1] for k, v in cond.items()}
    initial = None
    if a.initial_latents:
        try:
            initial = load_npz(a.initial_latents)["initial"]
        except KeyError:
            raise InputError(f"{a.initial_latents} has no array named 'initial'") from None
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read --initial-latents {a.initial_latents}: {e}") from None
    out = Path(a.out)
    bar = _progress(a.steps, f"sampling ({a.method})")
    res = sampler.sample(cond, a.seed, a.steps, a.method, a.full_steps, initial=initial,
                         progress=lambda i: bar.update(1))
    bar.close()
    with run_folder(out) as stage:  # replaces an earlier run at --out as a whole
        paths = save_images(res.images, stage) if res.images is not None and res.images.size else []
        save_npz(stage / "latents.npz", initial=res.initial, final=res.final)
        write_json(stage / "run.json", _run_record(a, sampler, res, paths))
    print(f"{len(paths)} image(s), {res.loop.computed_steps}/{a.steps} full steps, {res.seconds:.2f} s -> {out}/")
    _ = np
    return 0


def _run_record(a: argparse.Namespace, sampler: Any, res: Any, paths: list[Path]) -> dict[str, Any]:
    """What ``run.json`` records about one ``l2p sample`` run."""
    from .sampling.run_dir import RUN_FORMAT

    computed = res.loop.computed_steps
    return {
        "format": RUN_FORMAT, "bundle": str(Path(a.bundle).resolve()), "bundle_hash": sampler.bundle.hash,
        "method": a.method,
        "steps": a.steps, "full_steps": computed, "seed": a.seed, "rows": int(res.final.shape[0]),
        "index": a.index, "backend": a.backend, "device": a.device, "prompts": list(a.prompt or []),
        "conditioning": str(a.conditioning) if a.conditioning else None,
        "initial_latents": str(a.initial_latents) if a.initial_latents else None,
        "timings": {"denoise_s": res.seconds, "per_step_s": [s.seconds for s in res.loop.steps]},
        "computed_steps": [s.index for s in res.loop.steps if s.computed],
        "images": [p.name for p in paths], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# parser ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="l2p", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("export", help="export a diffusers model to an ONNX bundle (needs torch)",
                       description="Export a local diffusers folder (or the built-in 'tiny-flux') to a bundle.")
    e.add_argument("model", help="diffusers pipeline folder, transformer-only folder, or built-in name (tiny-flux)")
    e.add_argument("--out", required=True, help="bundle folder to write")
    e.add_argument("--latent-size", nargs=2, type=_positive, metavar=("H", "W"),
                   help="VAE latent height and width (before FLUX's 2x2 packing)")
    e.add_argument("--height", type=_positive, help="image height (pipeline folders)")
    e.add_argument("--width", type=_positive, help="image width (pipeline folders)")
    e.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="compute precision inside the graph (fp32 for ONNX Runtime CPU)")
    e.add_argument("--max-sequence-length", type=_positive, help="T5 token length (default 512 or the model's)")
    e.add_argument("--no-check", action="store_true", help="skip the PyTorch comparison after export")
    e.add_argument("--force", action="store_true",
                   help="replace a bundle even when that deletes its predictors that do not match the new one, "
                        "or files it does not list")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("validate", help="compare a bundle with the PyTorch model (needs torch)")
    v.add_argument("bundle")
    v.add_argument("--model", help="the diffusers folder the bundle came from")
    v.add_argument("--conditioning", help="COND.npz for the sampling run (default: the bundle's text encoders or random)")
    v.add_argument("--index", type=int, default=0, help="conditioning row for the sampling run")
    v.add_argument("--steps", type=_positive, default=50)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--backend", default="pytorch",
                   help="pytorch (default: compare with the PyTorch model), or tensorrt / onnxruntime-cuda "
                        "(compare that backend with ONNX Runtime CPU)")
    v.add_argument("--dims", help="sample dims for --backend validation, e.g. batch=1,img_seq=64 (needed for "
                                  "onnxruntime-*; tensorrt default: the min shapes of the built plans)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("sample", help="sample images from a bundle (torch-free)")
    s.add_argument("bundle")
    s.add_argument("--prompt", nargs="+", help="one or more prompts (needs a bundle with text encoders)")
    s.add_argument("--conditioning", help="COND.npz with arrays named after the transformer inputs, one row per condition")
    s.add_argument("--index", type=int, help="sample only this conditioning row")
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--method", default="full",
                   help="full, fora, taylorseer1, taylorseer2, lagrange2, l2p or l2p:NAME")
    s.add_argument("--full-steps", type=int, help="how many steps run the transformer (cached methods)")
    s.add_argument("--guidance", type=float, default=3.5, help="FLUX guidance embedding (guidance-distilled models)")
    s.add_argument("--initial-latents", help="latents.npz of an earlier run: rerun from its 'initial' noise")
    s.add_argument("--backend", default="onnxruntime", help="onnxruntime (CPU), onnxruntime-cuda, tensorrt")
    s.add_argument("--device", default="cpu",
                   help="cpu, or cuda / cuda:N: keep the whole loop on the GPU (needs cupy and a GPU backend)")
    s.add_argument("--cuda-graph", action="store_true", help="replay CUDA graphs per engine (--backend tensorrt)")
    s.add_argument("--threads", type=int, help="CPU threads per engine")
    s.add_argument("--out", required=True, help="output folder for PNGs, latents.npz and run.json")
    s.set_defaults(func=cmd_sample)
    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return p


#: other modules register subcommands here (calibrate, bench, build, demo)
_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    from . import cli_more  # noqa: F401  (registers more subcommands)

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except L2PError as e:
        if args.debug:
            raise
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except Exception as e:  # the environment, native libraries, damaged files: one line (see l2p.failures)
        return _report(e, args)
    except BaseException as e:  # pyo3's PanicException derives from BaseException
        if isinstance(e, (SystemExit, GeneratorExit)):
            raise
        return _report(e, args)


def _report(e: BaseException, args: argparse.Namespace) -> int:
    from .failures import describe

    msg = describe(e, args.command)
    if msg is None or args.debug:  # None: a bug in l2p, keep its traceback
        raise e
    print(f"error: {_one_line(msg)} (--debug shows the traceback)", file=sys.stderr)
    return 2


def _one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in text.strip().splitlines() if ln.strip())


if __name__ == "__main__":
    # ``python -m l2p.cli`` runs this file as ``__main__``, a second copy of the module; cli_more
    # registers its subcommands into the importable ``l2p.cli``, so run that copy's main.
    from l2p.cli import main as _main

    sys.exit(_main())
