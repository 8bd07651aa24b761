"""Shared pieces of the numpy schedulers: config checking and base dataclasses, beta schedules,
step-index bookkeeping.

Config checking follows diffusers' ``from_config`` and adds one rule. For a scheduler class, every
key of a diffusers ``scheduler_config.json`` is one of:

- *implemented*: a field of the class's frozen config dataclass;
- *default-only*: a key of the diffusers class that l2p does not implement; accepted only at its
  diffusers default value, since any other value changes the numerics;
- *harmless*: a key of the diffusers class that has no effect with the supported settings
  (e.g. ``sample_max_value`` without ``thresholding``), accepted with any value;
- a key of another diffusers scheduler class: ignored, as diffusers ignores it (this is what
  makes ``DPMSolverMultistepScheduler.from_config(ddim_config)`` work);
- anything else: rejected with :class:`~l2p.errors.InputError`, because l2p cannot know whether
  it changes the numerics.

Keys starting with ``_`` (``_class_name``, ``_diffusers_version``) are metadata and skipped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from ...errors import InputError
from ...predictor.schedule import check_count

C = TypeVar("C")
S = TypeVar("S", bound="FromConfigMixin")

# Keys of diffusers scheduler classes other than the three l2p implements (DDPM, PNDM, Euler,
# UniPC, LMS, Heun, DEIS...). diffusers' from_config drops a key the class does not take.
OTHER_DIFFUSERS_KEYS: frozenset[str] = frozenset(
    {
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
        "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr",
        "clip_sample", "clip_sample_range", "set_alpha_to_one", "thresholding",
        "dynamic_thresholding_ratio", "sample_max_value", "variance_type", "skip_prk_steps",
        "interpolation_type", "timestep_type", "sigma_min", "sigma_max", "use_karras_sigmas",
        "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas",
        "flow_shift", "final_sigmas_type", "solver_order", "solver_type", "algorithm_type",
        "lower_order_final", "euler_at_final", "lambda_min_clipped", "predict_x0", "solver_p",
        "disable_corrector", "use_dynamic_shifting", "time_shift_type", "shift",
        "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len", "invert_sigmas",
        "shift_terminal", "stochastic_sampling", "eta", "s_noise", "rho", "sigma_data",
    }
)


def build_config(
    config_cls: type[C],
    scheduler: str,
    given: Mapping[str, Any],
    *,
    default_only: Mapping[str, Any],
    harmless: frozenset[str],
) -> C:
    """Check a diffusers config dict against the rules above; return the frozen config.

    Args:
        config_cls: the scheduler's frozen config dataclass (its fields are the implemented keys).
        scheduler: the scheduler's class name, for messages.
        given: the diffusers ``scheduler_config.json`` dict (or keyword arguments).
        default_only: unimplemented keys of the diffusers class, with their only accepted value.
        harmless: keys of the diffusers class that do not change the numerics.
    """
    own = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in given.items():
        if key.startswith("_"):
            continue
        if key in own:
            kwargs[key] = value
        elif key in default_only:
            if not _same(value, default_only[key]):
                raise InputError(
                    f"{scheduler}: config key {key!r} = {value!r} is not supported by l2p "
                    f"(only the diffusers default {default_only[key]!r} is); "
                    f"use a config without it or with the default value"
                )
        elif key in harmless or key in OTHER_DIFFUSERS_KEYS:
            continue
        else:
            raise InputError(
                f"{scheduler}: unknown config key {key!r} = {value!r}; l2p cannot tell whether it "
                f"changes the numerics. Accepted keys: {sorted(own | set(default_only) | harmless)} "
                f"(and keys of other diffusers schedulers, which are ignored)"
            )
    return config_cls(**kwargs)


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or default is None or isinstance(default, str):
        return value is default or value == default
    return bool(value == default)


def check_choice(scheduler: str, key: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """Raise InputError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise InputError(
            f"{scheduler}: config key {key!r} = {value!r} is not supported; "
            f"l2p supports {', '.join(repr(a) for a in allowed)}"
        )


def check_num_steps(scheduler: str, num_inference_steps: Any, maximum: int | None) -> int:
    """Validate ``num_inference_steps`` (an int >= 1, and <= ``maximum`` when given)."""
    return check_count(num_inference_steps, f"{scheduler}.set_timesteps: num_inference_steps =", 1, maximum,
                       " (num_train_timesteps)" if maximum is not None else "")


def make_betas(
    scheduler: str,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: Any,
) -> np.ndarray:
    """Beta schedule, float32 as diffusers stores it, shape ``(num_train_timesteps,)``.

    Computed in float64 and rounded once (diffusers' ``torch.linspace(..., dtype=float32)`` rounds
    in its own machine-dependent way, so the two may differ in the last bit).
    """
    if trained_betas is not None:
        return np.asarray(trained_betas, dtype=np.float64).astype(np.float32)
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps).astype(np.float32)
    if beta_schedule == "scaled_linear":
        root = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps).astype(np.float32)
        return root * root  # squared in float32, as diffusers does
    if beta_schedule == "squaredcos_cap_v2":
        return _betas_for_alpha_bar(num_train_timesteps)
    raise InputError(
        f"{scheduler}: config key 'beta_schedule' = {beta_schedule!r} is not supported; "
        f"l2p supports 'linear', 'scaled_linear', 'squaredcos_cap_v2' (or 'trained_betas')"
    )


def _betas_for_alpha_bar(n: int, max_beta: float = 0.999) -> np.ndarray:
    """The cosine schedule of Nichol & Dhariwal (diffusers' ``betas_for_alpha_bar``), float32."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return np.asarray(betas, dtype=np.float32)


def alphas_cumprod_from_betas(betas: np.ndarray) -> np.ndarray:
    """``cumprod(1 - betas)``: float32 in, float64 accumulation, float32 out (as torch.cumprod)."""
    alphas = np.float32(1.0) - betas  # float32, as diffusers
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def scalar(timestep: Any) -> Any:
    """A Python number from a timestep given as a number or a 0-d / one-element array."""
    if hasattr(timestep, "item"):
        return timestep.item() if getattr(timestep, "ndim", 0) == 0 else timestep.reshape(-1)[0].item()
    return timestep


class DictStyleConfig:
    """``get`` on a frozen config dataclass, as diffusers pipelines use ``scheduler.config.get(...)``."""

    def get(self, key: str, default: Any = None) -> Any:
        """dict-style access: the field ``key``, or ``default`` when there is none."""
        return getattr(self, key, default)


@dataclasses.dataclass(frozen=True)
class BetaScheduleConfig(DictStyleConfig):
    """The beta-schedule keys that diffusers' DDIM and DPM-Solver configs share (their first fields)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    trained_betas: Sequence[float] | None = None

    def __post_init__(self) -> None:
        if self.trained_betas is not None:
            object.__setattr__(self, "trained_betas", tuple(float(b) for b in self.trained_betas))


class FromConfigMixin:
    """``from_config``: a scheduler built from a diffusers ``scheduler_config.json`` dict."""

    @classmethod
    def from_config(cls: type[S], config: Mapping[str, Any]) -> S:
        """Build from a diffusers ``scheduler_config.json`` dict (see ``_common`` for the key rules)."""
        return cls(**dict(config))  # type: ignore[call-arg]


class StepIndexMixin:
    """diffusers' ``step_index`` / ``begin_index`` bookkeeping for schedulers that index their sigmas.

    The class sets ``_step_index`` and ``_begin_index`` to None in ``__init__`` and ``set_timesteps``
    and defines ``index_for_timestep``.
    """

    _step_index: int | None
    _begin_index: int | None

    @property
    def step_index(self) -> int | None:
        """Index of the next step; found from the timestep on the first ``step`` call."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First index, when set with :meth:`set_begin_index` (img2img); else None."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def index_for_timestep(self, timestep: Any) -> int:
        """Index of ``timestep`` in the scheduler's ``timesteps``."""
        raise NotImplementedError

    def _init_step_index(self, timestep: Any) -> int:
        """``step_index``, set on the first ``step`` call from ``begin_index`` or from ``timestep``."""
        if self._step_index is None:
            begin = self._begin_index
            self._step_index = begin if begin is not None else self.index_for_timestep(timestep)
        return self._step_index
