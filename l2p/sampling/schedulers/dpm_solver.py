"""DPM-Solver++ multistep (orders 1 and 2), numerically equal to diffusers' scheduler.

Mirrors ``diffusers.DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver++"`` (the
PixArt and DiT setting: 2M, midpoint, ``lower_order_final``). Schedule state is float32 as in
diffusers; per-step coefficients are computed from it in float64 (Python floats).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from ...errors import InputError
from ._common import (
    BetaScheduleConfig, FromConfigMixin, StepIndexMixin, alphas_cumprod_from_betas, build_config, check_choice,
    check_num_steps, make_betas, scalar,
)

NAME = "DPMSolverMultistepScheduler"


@dataclasses.dataclass(frozen=True)
class DPMSolverConfig(BetaScheduleConfig):
    """The implemented keys of diffusers' DPMSolverMultistepScheduler config (beta-schedule keys: the base)."""

    solver_order: int = 2
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    algorithm_type: Literal["dpmsolver++"] = "dpmsolver++"
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"
    lambda_min_clipped: float = -math.inf
    timestep_spacing: Literal["linspace", "leading", "trailing"] = "linspace"
    steps_offset: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(NAME, "solver_order", self.solver_order, (1, 2))
        check_choice(NAME, "prediction_type", self.prediction_type, ("epsilon", "sample", "v_prediction"))
        check_choice(NAME, "algorithm_type", self.algorithm_type, ("dpmsolver++",))
        check_choice(NAME, "solver_type", self.solver_type, ("midpoint", "heun"))
        check_choice(NAME, "final_sigmas_type", self.final_sigmas_type, ("zero", "sigma_min"))
        check_choice(NAME, "timestep_spacing", self.timestep_spacing, ("linspace", "leading", "trailing"))


_DEFAULT_ONLY = {
    "thresholding": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "variance_type": None,
    "rescale_betas_zero_snr": False,
    "use_dynamic_shifting": False,
}
# Only read with thresholding / use_flow_sigmas / dynamic shifting, which are default-only above.
_HARMLESS = frozenset({"dynamic_thresholding_ratio", "sample_max_value", "flow_shift", "time_shift_type"})


def _alpha_sigma(sigma: float) -> tuple[float, float, float]:
    """``(alpha_t, sigma_t, lambda_t)`` of a VP sigma ``sqrt((1 - a) / a)``; lambda is +inf at 0."""
    alpha_t = 1.0 / math.sqrt(sigma * sigma + 1.0)
    sigma_t = sigma * alpha_t
    lam = math.log(alpha_t) - math.log(sigma_t) if sigma_t > 0 else math.inf
    return alpha_t, sigma_t, lam


class DPMSolverMultistepScheduler(FromConfigMixin, StepIndexMixin):
    """DPM-Solver++ (data prediction), multistep order 1 or 2, midpoint or heun.

    Attributes:
        config: the frozen :class:`DPMSolverConfig`.
        alphas_cumprod: ``(num_train_timesteps,)`` float32.
        timesteps: ``(n,)`` int64, decreasing (after set_timesteps).
        sigmas: ``(n + 1,)`` float32 VP sigmas ``sqrt((1 - a) / a)``, last 0 (or sigma_min).
        init_noise_sigma: 1.0; order: 1 (one model call per step).
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, **config: Any) -> None:
        self.config = build_config(
            DPMSolverConfig, NAME, config, default_only=_DEFAULT_ONLY, harmless=_HARMLESS
        )
        c = self.config
        betas = make_betas(
            NAME, c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule, c.trained_betas
        )
        self.alphas_cumprod = alphas_cumprod_from_betas(betas)
        ac = self.alphas_cumprod.astype(np.float64)
        self._train_sigmas = np.sqrt((1 - ac) / ac).astype(np.float32)  # (num_train,) float32
        self._train_lambdas = 0.5 * (np.log(ac) - np.log(1 - ac))  # float64, for lambda_min_clipped
        n_train = c.num_train_timesteps
        self.timesteps: np.ndarray = np.linspace(0, n_train - 1, n_train)[::-1].astype(np.float32)
        self.sigmas: np.ndarray = self._train_sigmas
        self.num_inference_steps: int | None = None
        self._reset()

    def _reset(self) -> None:
        self.model_outputs: list[Any] = [None] * self.config.solver_order
        self.lower_order_nums = 0
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Build ``timesteps`` ((n,) int64) and ``sigmas`` ((n + 1,) float32); resets the multistep state."""
        c = self.config
        n = check_num_steps(NAME, num_inference_steps, c.num_train_timesteps)
        # Skip the high-noise end where lambda < lambda_min_clipped (diffusers' searchsorted).
        clipped = int(np.searchsorted(self._train_lambdas[::-1], c.lambda_min_clipped, side="left"))
        last = c.num_train_timesteps - clipped
        if c.timestep_spacing == "linspace":
            timesteps = np.linspace(0, last - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif c.timestep_spacing == "leading":
            step_ratio = last // (n + 1)
            timesteps = (np.arange(0, n + 1) * step_ratio).round()[::-1][:-1].copy().astype(np.int64)
            timesteps += c.steps_offset
        else:  # trailing
            timesteps = np.arange(last, 0, -c.num_train_timesteps / n).round().copy().astype(np.int64) - 1
        sigmas = np.interp(timesteps, np.arange(0, len(self._train_sigmas)), self._train_sigmas)
        if c.final_sigmas_type == "sigma_min":
            a0 = float(self.alphas_cumprod[0])
            sigma_last = math.sqrt((1 - a0) / a0)
        else:
            sigma_last = 0.0
        self.sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        self.timesteps = timesteps
        self.num_inference_steps = len(timesteps)
        self._reset()

    def index_for_timestep(self, timestep: Any) -> int:
        """Index of ``timestep`` in ``timesteps``; second match if repeated, last index if absent."""
        hits = np.nonzero(self.timesteps == scalar(timestep))[0]
        if len(hits) == 0:
            return len(self.timesteps) - 1
        return int(hits[1] if len(hits) > 1 else hits[0])

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """Identity; same shape and dtype."""
        return sample

    def step(self, model_output: np.ndarray, timestep: Any, sample: np.ndarray) -> np.ndarray:
        """One DPM-Solver++ step; keeps the last ``solver_order`` data predictions.

        Unlike diffusers, returns ``prev_sample`` itself rather than a SchedulerOutput.

        Args:
            model_output: epsilon / v / x0 prediction, same shape as ``sample`` (for learned-sigma
                models pass only the first half of the channels, as DiT/PixArt pipelines do).
            timestep: one of ``self.timesteps``.
            sample: current latents, e.g. ``(B, C, H, W)``.

        Returns:
            the previous sample, same shape as ``sample``; computed in float32 (as diffusers) and
            cast to the data prediction's dtype. Works on any array type with numpy semantics
            (cupy): arithmetic and ``astype`` only.
        """
        if self.num_inference_steps is None:
            raise InputError(f"{NAME}.step: call set_timesteps first")
        i, n, c = self._init_step_index(timestep), len(self.timesteps), self.config
        if i >= n:
            raise InputError(f"{NAME}.step: called {i + 1} times for {n} steps")
        # Euler on the last step (diffusers' lower_order_final; its "second last" rule only
        # concerns order 3, which l2p does not implement).
        final = i == n - 1 and (
            c.euler_at_final or (c.lower_order_final and n < 15) or c.final_sigmas_type == "zero"
        )

        x0 = self._data_prediction(model_output, sample, float(self.sigmas[i]))
        self.model_outputs = self.model_outputs[1:] + [x0]
        sample32 = sample.astype(np.float32, copy=False)
        if c.solver_order == 1 or self.lower_order_nums < 1 or final:
            prev = self._first_order(x0, sample32)
        else:
            prev = self._second_order(sample32)
        if self.lower_order_nums < c.solver_order:
            self.lower_order_nums += 1
        self._step_index = i + 1
        return prev.astype(x0.dtype, copy=False)

    def _data_prediction(self, model_output: np.ndarray, sample: np.ndarray, sigma: float) -> np.ndarray:
        """x0 from the model output at noise level ``sigma`` (diffusers' convert_model_output)."""
        kind = self.config.prediction_type
        if kind == "sample":
            return model_output
        alpha_t, sigma_t, _ = _alpha_sigma(sigma)
        if kind == "epsilon":
            return (sample - sigma_t * model_output) / alpha_t
        return alpha_t * sample - sigma_t * model_output  # v_prediction

    def _first_order(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        i = self._step_index
        assert i is not None
        alpha_t, sigma_t, lam_t = _alpha_sigma(float(self.sigmas[i + 1]))
        _, sigma_s, lam_s = _alpha_sigma(float(self.sigmas[i]))
        h = lam_t - lam_s
        return (sigma_t / sigma_s) * sample - (alpha_t * (math.exp(-h) - 1.0)) * x0

    def _second_order(self, sample: np.ndarray) -> np.ndarray:
        i = self._step_index
        assert i is not None
        alpha_t, sigma_t, lam_t = _alpha_sigma(float(self.sigmas[i + 1]))
        _, sigma_s0, lam_s0 = _alpha_sigma(float(self.sigmas[i]))
        _, _, lam_s1 = _alpha_sigma(float(self.sigmas[i - 1]))
        m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
        h, h_0 = lam_t - lam_s0, lam_s0 - lam_s1
        r0 = h_0 / h
        d1 = (1.0 / r0) * (m0 - m1)
        c_sample = sigma_t / sigma_s0
        c_d0 = alpha_t * (math.exp(-h) - 1.0)
        if self.config.solver_type == "midpoint":
            return c_sample * sample - c_d0 * m0 - (0.5 * c_d0) * d1
        return c_sample * sample - c_d0 * m0 + (alpha_t * ((math.exp(-h) - 1.0) / h + 1.0)) * d1
