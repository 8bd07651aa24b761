"""Option groups the subcommands share, and the settings objects they build.

- run: ``--steps``, ``--full-steps`` (and for sampling ``--seed``, ``--method``, ``--guidance``)
  -> :class:`~l2p.sampling.settings.RunSettings`, the one place they are checked;
- classifier-free guidance: ``--cfg-scale``, ``--negative-prompt``, ``--cfg-forecast``;
- conditioning: ``--prompt TEXT...`` or ``--prompts FILE``, or ``--conditioning COND.npz`` -> arrays;
- engine: ``--backend``, ``--device``, ``--cuda-graph``, ``--threads`` -> an opened
  :class:`~l2p.sampling.pipeline.Sampler` (the bundle is opened and verified here, once);
- output: ``--out``, ``--json``.

Every parser is a :class:`Parser`: its ``--help`` shows each option's default after its help line.

Argument types only parse (an int is an int); ranges are the settings objects' business, so
every range error reads the same. Counts that no settings object holds use :func:`positive`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.registry import BACKENDS
from ..errors import InputError
from ..families import FAMILIES
from ..precision import Precision
from ..predictor.artifact import CFG_FORECASTS
from ..sampling.settings import DEFAULT_CFG_FORECAST, METHOD_CHOICES, RunSettings

if TYPE_CHECKING:
    from ..sampling.pipeline import Sampler

PRECISIONS = [p.value for p in Precision]


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a default worth showing (not
    ``None``, not a switch's ``False``, not already in the text); lists print space-separated,
    as they are typed."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (d is None or d is argparse.SUPPRESS or isinstance(d, bool) or "default" in text
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        shown = " ".join(str(x) for x in d) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with :class:`HelpFormatter` (its subcommand parsers are ``Parser`` too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


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


# run ----------------------------------------------------------------------------------------
def add_bundle_argument(p: argparse.ArgumentParser) -> None:
    """The positional ``BUNDLE``."""
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder (made by l2p export)")


def add_run_options(p: argparse.ArgumentParser, sampling: bool = True, full_steps_required: bool = False,
                    full_steps: str | None = "how many steps run the transformer (cached methods)",
                    full_steps_default: int | None = None) -> None:
    """``--steps`` (default 50) and ``--full-steps`` (described by ``full_steps``; ``None``: no such
    flag); with ``sampling`` also ``--seed``, ``--method`` and ``--guidance``."""
    p.add_argument("--steps", type=int, default=50, metavar="N", help="sampling steps (1..1000)")
    if full_steps is not None:
        p.add_argument("--full-steps", type=int, required=full_steps_required, default=full_steps_default,
                       metavar="M", help=full_steps)
    if sampling:
        p.add_argument("--seed", type=int, default=0,
                       help="seed of the starting noise (0..2**63-1); image k of a run (0-based, in row order) "
                            "starts from the noise of seed + k, so it is the image sampled alone with --seed seed+k")
        p.add_argument("--method", default="full", metavar="METHOD",
                       help=f"one of: {', '.join(METHOD_CHOICES)} (a calibrated predictor of the bundle)")
        p.add_argument("--guidance", type=float, default=3.5,
                       help="FLUX guidance embedding (guidance-distilled models; others ignore it)")


def add_schedule_option(p: argparse.ArgumentParser, text: str) -> None:
    """``--schedule STEPS`` (comma-separated computed steps), described by ``text``."""
    p.add_argument("--schedule", metavar="STEPS", help=f"{text}; comma-separated, increasing, starting at 0, "
                   "e.g. 0,1,2,4,11,18,25,32,39,46")


def run_settings(a: argparse.Namespace) -> RunSettings:
    """The run settings of the parsed run and guidance options (checked here, once)."""
    from ..predictor.schedule import split_steps

    schedule = split_steps(a.schedule) if getattr(a, "schedule", None) else None
    return RunSettings(steps=a.steps, seed=getattr(a, "seed", 0), method=getattr(a, "method", "full"),
                       full_steps=getattr(a, "full_steps", None), schedule=schedule,
                       guidance=getattr(a, "guidance", 3.5),
                       cfg_scale=getattr(a, "cfg_scale", None),
                       cfg_forecast=getattr(a, "cfg_forecast", DEFAULT_CFG_FORECAST))


# classifier-free guidance ------------------------------------------------------------------
def add_cfg_options(p: argparse.ArgumentParser) -> None:
    """``--cfg-scale``, ``--negative-prompt`` and ``--cfg-forecast`` (one group)."""
    defaults = ", ".join(f"{f.name} {f.cfg_scale:g}" for f in FAMILIES if f.cfg_scale is not None)
    none = ", ".join(f.name for f in FAMILIES if f.cfg_scale is None)
    g = p.add_argument_group("classifier-free guidance")
    g.add_argument("--cfg-scale", type=float, metavar="G",
                   help=f"guidance scale; 1 turns it off (default: the family's diffusers default: {defaults}; "
                        f"{none} has none: its guidance is --guidance). With --conditioning, the negative rows are "
                        "the arrays negative_<input name> (DiT: the null class)")
    g.add_argument("--negative-prompt", default="", metavar="TEXT",
                   help="negative prompt of every --prompt(s) under guidance (default: empty, as diffusers)")
    g.add_argument("--cfg-forecast", default=DEFAULT_CFG_FORECAST, choices=CFG_FORECASTS,
                   help="what cached methods forecast under guidance: each branch (two histories, combined after) "
                        "or the guided output (one history); a calibrated predictor keeps the mode (and the scale) "
                        "it was calibrated at")


# conditioning -------------------------------------------------------------------------------
def add_conditioning_options(p: argparse.ArgumentParser, prompt_file: bool = True) -> None:
    """``--prompts FILE`` (or with ``prompt_file=False``, ``--prompt TEXT...``) or ``--conditioning``."""
    if prompt_file:
        p.add_argument("--prompts", metavar="FILE", help="text file, one prompt per line (bundle with text encoders)")
    else:
        p.add_argument("--prompt", nargs="+", action="extend", metavar="TEXT",
                       help="one or more prompts (needs a bundle with text encoders); repeat --prompt or give "
                            "several after one")
    p.add_argument("--conditioning", metavar="COND.npz",
                   help="arrays named after the transformer inputs, one row per condition (instead of prompts)")


def check_conditioning_args(a: argparse.Namespace) -> None:
    """Exactly one source of conditioning was given."""
    file_style = hasattr(a, "prompts")
    prompts = a.prompts if file_style else a.prompt
    if bool(prompts) == bool(a.conditioning):
        flag = "--prompts FILE" if file_style else "--prompt TEXT ..."
        raise InputError(f"give either {flag} or --conditioning COND.npz")


def conditioning(sampler: Sampler, a: argparse.Namespace) -> dict[str, Any]:
    """The conditioning rows: the prompts through the bundle's text encoders (and under guidance
    the negative prompt's, as ``negative_*`` arrays), or the COND.npz."""

    check_conditioning_args(a)
    from ..sampling.guidance import effective_cfg_scale

    # the scale alone (not run_settings: calibrate's --schedule may be 'search')
    guided = effective_cfg_scale(sampler.bundle.family, getattr(a, "cfg_scale", None)) > 1
    negative = getattr(a, "negative_prompt", "") if guided else None
    if getattr(a, "prompts", None):
        return sampler.encode(read_prompts(a.prompts), negative)
    if getattr(a, "prompt", None):
        return sampler.encode(list(a.prompt), negative)
    return sampler.load_conditioning(a.conditioning)


# engine -------------------------------------------------------------------------------------
def add_engine_options(p: argparse.ArgumentParser, device: bool = True) -> None:
    """``--threads``; with ``device`` also ``--backend``, ``--device`` and ``--cuda-graph``."""
    if device:
        p.add_argument("--backend", default="onnxruntime",
                       help=f"engine backend: {', '.join(BACKENDS)} (onnxruntime runs on the CPU)")
        p.add_argument("--device", default="cpu",
                       help="cpu, or cuda / cuda:N: keep the whole loop on the GPU (needs cupy and a GPU backend)")
        p.add_argument("--cuda-graph", action="store_true", help="replay CUDA graphs per engine (--backend tensorrt)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads per engine (default: all cores)")


def open_sampler(a: argparse.Namespace, guidance: float = 3.5) -> Sampler:
    """Open and verify ``a.bundle`` once, with the parsed engine and guidance options."""
    from ..sampling.pipeline import Sampler

    return Sampler(a.bundle, backend=getattr(a, "backend", "onnxruntime"), threads=a.threads,
                   guidance_scale=guidance, device=getattr(a, "device", "cpu"),
                   use_cuda_graph=getattr(a, "cuda_graph", False), cfg_scale=getattr(a, "cfg_scale", None),
                   cfg_forecast=getattr(a, "cfg_forecast", DEFAULT_CFG_FORECAST))


# output -------------------------------------------------------------------------------------
def add_output_options(p: argparse.ArgumentParser, out: str | None = None, default: str | None = None,
                       json: bool = False) -> None:
    """``--out`` (described by ``out``; required unless it has a ``default``) and ``--json``."""
    if out is not None:
        p.add_argument("--out", required=default is None, default=default, metavar="DIR", help=out)
    if json:
        p.add_argument("--json", action="store_true", help="print the report as JSON")


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per non-empty line."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read prompts file {path}: {e}") from None
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise InputError(f"prompts file {path} holds no prompts")
    return prompts
