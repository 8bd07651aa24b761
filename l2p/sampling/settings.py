"""What one sampling run is asked to do, checked in one place.

:class:`RunSettings` is frozen and validates every field on construction, so a run (the CLI,
:class:`~l2p.sampling.pipeline.Sampler`, calibration, bench, the demo) is checked once, where
its settings are made, and the code below it can trust them. The counts follow the one rule of
:func:`~l2p.predictor.schedule.check_count`; messages name the CLI flags.

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..predictor.artifact import CFG_FORECASTS, check_name
from ..predictor.presets import PRESETS
from ..predictor.schedule import Schedule, check_count, validate_schedule

MAX_STEPS = 1000
MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 1000.0
MAX_CFG_SCALE = 100.0
#: what cached methods forecast under classifier-free guidance unless told (tools/cfg_study.py on
#: tiny-sd3: branches +2.2 dB over the guided output at 10/50, -0.9 dB at 7/50; README)
DEFAULT_CFG_FORECAST = "branches"
DEFAULT_PREDICTOR = "default"
#: every ``--method`` form, for help texts and messages
METHOD_CHOICES = ("full", *PRESETS, "l2p", "l2p:NAME")


@dataclass(frozen=True)
class Method:
    """A parsed ``--method`` value."""

    kind: str  # "full", "preset" or "l2p"
    name: str  # preset name or predictor name

    @classmethod
    def parse(cls, text: str) -> Method:
        if text == "full":
            return cls("full", "full")
        if text in PRESETS:
            return cls("preset", text)
        if isinstance(text, str) and (text == "l2p" or text.startswith("l2p:")):
            name = text.partition(":")[2] or DEFAULT_PREDICTOR
            return cls("l2p", check_name(name, "--method l2p:NAME"))  # a folder name, never a path
        raise InputError(f"unknown method '{text}'; choose {', '.join(METHOD_CHOICES[:-2])}, l2p or l2p:NAME")

    def __str__(self) -> str:
        return self.name if self.kind != "l2p" else f"l2p:{self.name}"


def check_guidance(value: float) -> float:
    """The FLUX guidance-embedding value: a finite number in -1000..1000."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -MAX_GUIDANCE <= value <= MAX_GUIDANCE:
        raise InputError(f"--guidance {value} is out of range; use a finite value in -1000..1000 "
                         "(FLUX.1-dev uses 3.5)")  # the comparison also refuses NaN
    return float(value)


def check_cfg_scale(value: float | None) -> float | None:
    """A classifier-free guidance scale: ``None`` (the family's default) or a finite number in 1..100."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1.0 <= value <= MAX_CFG_SCALE:
        raise InputError(f"--cfg-scale {value} is out of range; use a finite value in 1..{MAX_CFG_SCALE:g} "
                         "(1 turns classifier-free guidance off; diffusers guides only above 1)")
    return float(value)


def check_cfg_forecast(value: str) -> str:
    """``guided`` (forecast the combined output) or ``branches`` (forecast each branch, then combine)."""
    if value not in CFG_FORECASTS:
        raise InputError(f"--cfg-forecast {value!r}: choose {' or '.join(CFG_FORECASTS)}")
    return value


@dataclass(frozen=True)
class RunSettings:
    """The settings of one sampling run, validated on construction.

    Attributes:
        steps: ``N``, sampling steps, 1..1000.
        seed: the starting noise's seed, 0..2**63-1.
        method: ``full``, a preset (see :data:`~l2p.predictor.presets.PRESETS`), ``l2p`` or
            ``l2p:NAME`` (a calibrated predictor of the bundle).
        full_steps: ``M``, how many steps run the transformer (1..N). Presets need it (or a
            ``schedule``); for ``l2p`` it must match the predictor when given; ``full`` ignores it
            (``l2p sample`` refuses it there).
        schedule: the computed steps (increasing, step 0 included; ``--schedule``). A preset
            runs on them (``None``: ``full_steps`` spread evenly,
            :func:`~l2p.predictor.schedule.interval_schedule`); an ``l2p`` predictor must have
            been calibrated for exactly them. Given, it sets ``full_steps``.
        guidance: FLUX guidance-embedding value (models without one ignore it).
        cfg_scale: classifier-free guidance scale of the guided families (SD3, PixArt, DiT,
            Qwen-Image): ``None`` = the family's diffusers default (:attr:`l2p.families.Family.cfg_scale`),
            1 = guidance off, else 1..100. FLUX.1 has none (its guidance is ``guidance``).
        cfg_forecast: under guidance, what a cached method forecasts: ``branches`` (each branch:
            two histories, combined after; the default) or ``guided`` (the combined output: one
            history, half the memory).

    Raises:
        InputError: for any value out of range, an unknown method, a preset without
            ``full_steps``, or a ``schedule`` that is invalid, does not have ``full_steps`` steps or
            is given with ``full``.
    """

    steps: int = 50
    seed: int = 0
    method: str = "full"
    full_steps: int | None = None
    schedule: Schedule | None = None
    guidance: float = 3.5
    cfg_scale: float | None = None
    cfg_forecast: str = DEFAULT_CFG_FORECAST

    def __post_init__(self) -> None:
        steps = check_count(self.steps, "--steps", 1, MAX_STEPS)
        object.__setattr__(self, "steps", steps)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed {self.seed} is out of range; use 0..2**63-1")
        method = Method.parse(self.method)
        if self.full_steps is not None:
            object.__setattr__(self, "full_steps", check_count(self.full_steps, "--full-steps", 1, steps,
                                                               " (at most the step count)"))
        if self.schedule is not None:
            if method.kind == "full":
                raise InputError("--schedule with --method full: full compute runs the transformer on every "
                                 "step; drop --schedule, or choose a cached method")
            schedule = validate_schedule(self.schedule, steps, "--schedule", self.full_steps, ordered=True)
            object.__setattr__(self, "schedule", schedule)
            object.__setattr__(self, "full_steps", len(schedule))
        elif method.kind == "preset" and self.full_steps is None:
            raise InputError(f"--method {self.method} needs --full-steps M (how many steps run the transformer)")
        object.__setattr__(self, "guidance", check_guidance(self.guidance))
        object.__setattr__(self, "cfg_scale", check_cfg_scale(self.cfg_scale))
        check_cfg_forecast(self.cfg_forecast)

    @property
    def parsed_method(self) -> Method:
        return Method.parse(self.method)
