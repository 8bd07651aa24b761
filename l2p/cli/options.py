"""Option groups the subcommands share, and the settings objects they build.

- run: ``--steps``, ``--full-steps`` (and for sampling ``--seed``, ``--method``, ``--guidance``)
  -> :class:`~l2p.sampling.settings.RunSettings`, the one place they are checked;
- conditioning: ``--prompt TEXT...`` or ``--prompts FILE``, or ``--conditioning COND.npz`` -> arrays;
- engine: ``--backend``, ``--device``, ``--cuda-graph``, ``--threads`` -> an opened
  :class:`~l2p.sampling.pipeline.Sampler` (the bundle is opened and verified here, once);
- output: ``--out``, ``--json``.

Argument types only parse (an int is an int); ranges are the settings objects' business, so
every range error reads the same. Counts that no settings object holds use :func:`positive`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..precision import Precision
from ..sampling.settings import METHOD_CHOICES, RunSettings

if TYPE_CHECKING:
    from ..sampling.pipeline import Sampler

PRECISIONS = [p.value for p in Precision]


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _at_least(text, 1, "a positive integer")


def non_negative(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _at_least(text, 0, "an integer >= 0")


def _at_least(text: str, lo: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"{v} is not {what}")
    return v


def progress(total: int, desc: str) -> Any:
    """A tqdm bar on stderr when it is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=not sys.stderr.isatty())


# run ----------------------------------------------------------------------------------------
def add_run_options(p: argparse.ArgumentParser, sampling: bool = True, required: bool = False,
                    full_steps: str | None = "how many steps run the transformer (cached methods)",
                    full_steps_default: int | None = None) -> None:
    """``--steps`` and ``--full-steps`` (described by ``full_steps``; ``None``: no such flag); with
    ``sampling`` also ``--seed``, ``--method`` and ``--guidance``. ``required``: no defaults for the counts."""
    p.add_argument("--steps", type=int, required=required, default=None if required else 50,
                   help="sampling steps N (1..1000)")
    if full_steps is not None:
        p.add_argument("--full-steps", type=int, required=required, default=full_steps_default, help=full_steps)
    if sampling:
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--method", default="full", metavar="METHOD",
                       help=f"one of: {', '.join(METHOD_CHOICES)} (a calibrated predictor of the bundle)")
        p.add_argument("--guidance", type=float, default=3.5,
                       help="FLUX guidance embedding (guidance-distilled models)")


def run_settings(a: argparse.Namespace) -> RunSettings:
    """The run settings of the parsed run options (checked here, once)."""
    return RunSettings(steps=a.steps, seed=getattr(a, "seed", 0), method=getattr(a, "method", "full"),
                       full_steps=getattr(a, "full_steps", None), guidance=getattr(a, "guidance", 3.5))


# conditioning -------------------------------------------------------------------------------
def add_conditioning_options(p: argparse.ArgumentParser, prompt_file: bool = True) -> None:
    """``--prompts FILE`` (or with ``prompt_file=False``, ``--prompt TEXT...``) or ``--conditioning``."""
    if prompt_file:
        p.add_argument("--prompts", help="text file, one prompt per line (bundle with text encoders)")
    else:
        p.add_argument("--prompt", nargs="+", help="one or more prompts (needs a bundle with text encoders)")
    p.add_argument("--conditioning",
                   help="COND.npz with arrays named after the transformer inputs, one row per condition")


def check_conditioning_args(a: argparse.Namespace) -> None:
    """Exactly one source of conditioning was given."""
    file_style = hasattr(a, "prompts")
    prompts = a.prompts if file_style else a.prompt
    if bool(prompts) == bool(a.conditioning):
        flag = "--prompts FILE" if file_style else "--prompt TEXT ..."
        raise InputError(f"give either {flag} or --conditioning COND.npz")


def conditioning(sampler: Sampler, a: argparse.Namespace) -> dict[str, Any]:
    """The conditioning rows: the prompts through the bundle's text encoders, or the COND.npz."""
    from ..calibration.calibrate import read_prompts

    check_conditioning_args(a)
    if getattr(a, "prompts", None):
        return sampler.encode(read_prompts(a.prompts))
    if getattr(a, "prompt", None):
        return sampler.encode(list(a.prompt))
    return sampler.load_conditioning(a.conditioning)


# engine -------------------------------------------------------------------------------------
def add_engine_options(p: argparse.ArgumentParser, device: bool = True) -> None:
    """``--threads``; with ``device`` also ``--backend``, ``--device`` and ``--cuda-graph``."""
    if device:
        p.add_argument("--backend", default="onnxruntime", help="onnxruntime (CPU), onnxruntime-cuda, tensorrt")
        p.add_argument("--device", default="cpu",
                       help="cpu, or cuda / cuda:N: keep the whole loop on the GPU (needs cupy and a GPU backend)")
        p.add_argument("--cuda-graph", action="store_true", help="replay CUDA graphs per engine (--backend tensorrt)")
    p.add_argument("--threads", type=int, help="CPU threads per engine")


def open_sampler(a: argparse.Namespace, guidance: float = 3.5) -> Sampler:
    """Open and verify ``a.bundle`` once, with the parsed engine options."""
    from ..sampling.pipeline import Sampler

    return Sampler(a.bundle, backend=getattr(a, "backend", "onnxruntime"), threads=a.threads,
                   guidance_scale=guidance, device=getattr(a, "device", "cpu"),
                   use_cuda_graph=getattr(a, "cuda_graph", False))


# output -------------------------------------------------------------------------------------
def add_output_options(p: argparse.ArgumentParser, out: str | None = None, default: str | None = None,
                       json: bool = False) -> None:
    """``--out`` (described by ``out``; required unless it has a ``default``) and ``--json``."""
    if out is not None:
        p.add_argument("--out", required=default is None, default=default, help=out)
    if json:
        p.add_argument("--json", action="store_true", help="print the report as JSON")
