"""Deterministic DDIM (eta = 0), numerically equal to diffusers' ``DDIMScheduler``.

The schedule state (betas, alphas_cumprod) is float32 as diffusers stores it; the per-step
coefficients are computed from it in float64 (Python floats) and applied to the arrays.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from ...errors import InputError
from ._common import (
    BetaScheduleConfig, FromConfigMixin, alphas_cumprod_from_betas, build_config, check_choice, check_num_steps,
    make_betas, scalar,
)

NAME = "DDIMScheduler"


@dataclasses.dataclass(frozen=True)
class DDIMConfig(BetaScheduleConfig):
    """The implemented keys of diffusers' DDIMScheduler config (beta-schedule keys: the base)."""

    clip_sample: bool = True
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    clip_sample_range: float = 1.0
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(NAME, "prediction_type", self.prediction_type, ("epsilon", "sample", "v_prediction"))
        check_choice(NAME, "timestep_spacing", self.timestep_spacing, ("leading", "trailing", "linspace"))


_DEFAULT_ONLY = {"thresholding": False, "rescale_betas_zero_snr": False}
_HARMLESS = frozenset({"dynamic_thresholding_ratio", "sample_max_value"})  # only with thresholding


class DDIMScheduler(FromConfigMixin):
    """DDIM with eta = 0 (deterministic), epsilon / v_prediction / sample parameterisations.

    Attributes:
        config: the frozen :class:`DDIMConfig`.
        betas, alphas_cumprod: ``(num_train_timesteps,)`` float32.
        timesteps: ``(n,)`` int64, decreasing (after set_timesteps).
        init_noise_sigma: 1.0; order: 1.
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, **config: Any) -> None:
        self.config = build_config(DDIMConfig, NAME, config, default_only=_DEFAULT_ONLY, harmless=_HARMLESS)
        c = self.config
        self.betas = make_betas(
            NAME, c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule, c.trained_betas
        )
        self.alphas_cumprod = alphas_cumprod_from_betas(self.betas)
        self.final_alpha_cumprod = 1.0 if c.set_alpha_to_one else float(self.alphas_cumprod[0])
        self.timesteps: np.ndarray = np.arange(0, c.num_train_timesteps)[::-1].astype(np.int64)
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None

    @property
    def step_index(self) -> int | None:
        """Number of steps taken since set_timesteps (DDIM itself only needs the timestep)."""
        return self._step_index

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Build ``timesteps`` ((n,) int64) with the configured ``timestep_spacing``."""
        c = self.config
        n = check_num_steps(NAME, num_inference_steps, c.num_train_timesteps)
        n_train = c.num_train_timesteps
        if c.timestep_spacing == "linspace":
            timesteps = np.linspace(0, n_train - 1, n).round()[::-1].copy().astype(np.int64)
        elif c.timestep_spacing == "leading":
            step_ratio = n_train // n
            timesteps = (np.arange(0, n) * step_ratio).round()[::-1].copy().astype(np.int64)
            timesteps += c.steps_offset
        else:  # trailing
            timesteps = np.round(np.arange(n_train, 0, -n_train / n)).astype(np.int64) - 1
        self.timesteps = timesteps
        self.num_inference_steps = n
        self._step_index = None

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """Identity; same shape and dtype."""
        return sample

    def step(self, model_output: np.ndarray, timestep: Any, sample: np.ndarray) -> np.ndarray:
        """One deterministic DDIM step from ``timestep`` to ``timestep - num_train // n``.

        Unlike diffusers, returns ``prev_sample`` itself rather than a DDIMSchedulerOutput.

        Args:
            model_output: the model prediction (epsilon, v or x0), same shape as ``sample``.
            timestep: an int from ``self.timesteps``.
            sample: current latents, e.g. ``(B, C, H, W)``.

        Returns:
            the previous sample, same shape and dtype as ``sample`` (float32 in, float32 out).
            Works on any array type with numpy semantics (cupy): arithmetic, ``clip`` and
            ``astype`` only.
        """
        if self.num_inference_steps is None:
            raise InputError(f"{NAME}.step: call set_timesteps first")
        t = int(scalar(timestep))
        if not 0 <= t < self.config.num_train_timesteps:
            raise InputError(f"{NAME}.step: timestep {t} is outside 0..{self.config.num_train_timesteps - 1}")
        prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
        a_t = float(self.alphas_cumprod[t])
        a_prev = float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else self.final_alpha_cumprod
        sqrt_a, sqrt_b = math.sqrt(a_t), math.sqrt(1.0 - a_t)
        kind = self.config.prediction_type
        if kind == "epsilon":
            x0 = (sample - sqrt_b * model_output) / sqrt_a
            eps = model_output
        elif kind == "v_prediction":
            x0 = sqrt_a * sample - sqrt_b * model_output
            eps = sqrt_a * model_output + sqrt_b * sample
        else:  # sample
            x0 = model_output
            eps = (sample - sqrt_a * x0) / sqrt_b
        if self.config.clip_sample:
            r = self.config.clip_sample_range
            x0 = x0.clip(-r, r)
        self._step_index = 1 if self._step_index is None else self._step_index + 1
        return math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
