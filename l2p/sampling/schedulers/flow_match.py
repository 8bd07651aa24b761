"""Flow-matching Euler scheduler (FLUX.1, SD3, Qwen-Image), numerically equal to diffusers'.

Mirrors ``diffusers.FlowMatchEulerDiscreteScheduler`` (0.42): the schedule is built with the same
numpy expressions (float32 where diffusers has float32), and ``step`` does diffusers' float32
update, so trajectories agree bit for bit with diffusers in float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ...errors import InputError
from ._common import (
    DictStyleConfig, FromConfigMixin, StepIndexMixin, build_config, check_choice, check_num_steps, scalar,
)

NAME = "FlowMatchEulerDiscreteScheduler"


@dataclasses.dataclass(frozen=True)
class FlowMatchEulerConfig(DictStyleConfig):
    """The implemented keys of diffusers' FlowMatchEulerDiscreteScheduler config."""

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float | None = 0.5
    max_shift: float | None = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    invert_sigmas: bool = False
    shift_terminal: float | None = None
    time_shift_type: Literal["exponential", "linear"] = "exponential"

    def __post_init__(self) -> None:
        check_choice(NAME, "time_shift_type", self.time_shift_type, ("exponential", "linear"))
        if self.shift_terminal is not None and not 0 <= self.shift_terminal < 1:
            raise InputError(f"{NAME}: shift_terminal = {self.shift_terminal!r}; allowed: 0 <= x < 1 or null")


_DEFAULT_ONLY = {
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "stochastic_sampling": False,
}


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """``mu`` for dynamic shifting: linear in the image token count (diffusers' ``calculate_shift``)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


class FlowMatchEulerDiscreteScheduler(FromConfigMixin, StepIndexMixin):
    """Euler steps of a rectified flow ``x_sigma = (1 - sigma) x0 + sigma noise``.

    Construct with diffusers config keys as keyword arguments or with :meth:`from_config`.

    Attributes:
        config: the frozen :class:`FlowMatchEulerConfig`.
        timesteps: ``(n,)`` float32, ``sigmas[:-1] * num_train_timesteps`` (after set_timesteps).
        sigmas: ``(n + 1,)`` float32, decreasing, last entry 0 (1 with ``invert_sigmas``).
        init_noise_sigma: 1.0; order: 1.
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, **config: Any) -> None:
        self.config = build_config(
            FlowMatchEulerConfig, NAME, config, default_only=_DEFAULT_ONLY, harmless=frozenset()
        )
        c = self.config
        n_train = c.num_train_timesteps
        timesteps = np.linspace(1, n_train, n_train, dtype=np.float32)[::-1].copy()
        sigmas = timesteps / n_train  # float32
        if not c.use_dynamic_shifting:
            sigmas = c.shift * sigmas / (1 + (c.shift - 1) * sigmas)
        self.timesteps: np.ndarray = sigmas * n_train
        self.sigmas: np.ndarray = sigmas
        self.sigma_min = float(sigmas[-1])
        self.sigma_max = float(sigmas[0])
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        *,
        mu: float | None = None,
        sigmas: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Build the sampling schedule (diffusers' set_timesteps with the same arguments).

        Args:
            num_inference_steps: number of steps n; may be omitted when ``sigmas`` is given.
            mu: resolution-dependent shift (required when ``use_dynamic_shifting``); see
                :func:`calculate_shift` and :func:`set_timesteps_like_pipeline`.
            sigmas: ``(n,)`` custom unshifted sigmas, e.g. FLUX's ``linspace(1, 1/n, n)``.
        """
        c = self.config
        if c.use_dynamic_shifting and mu is None:
            raise InputError(f"{NAME}.set_timesteps: mu is required when use_dynamic_shifting is true")
        if sigmas is not None:
            sigmas = np.array(sigmas).astype(np.float32)
            if sigmas.ndim != 1:
                raise InputError(f"{NAME}.set_timesteps: sigmas must be 1-D, got shape {sigmas.shape}")
            if num_inference_steps is None:
                num_inference_steps = len(sigmas)
            if len(sigmas) != num_inference_steps:
                raise InputError(
                    f"{NAME}.set_timesteps: got {len(sigmas)} sigmas for num_inference_steps = "
                    f"{num_inference_steps}; they must be equal"
                )
        n = check_num_steps(NAME, num_inference_steps, None)
        if sigmas is None:
            n_train = c.num_train_timesteps
            timesteps = np.linspace(self.sigma_max * n_train, self.sigma_min * n_train, n)
            sigmas = timesteps / c.num_train_timesteps  # float64, as in diffusers
        if c.use_dynamic_shifting:
            assert mu is not None
            sigmas = self._time_shift(mu, 1.0, sigmas)
        else:
            sigmas = c.shift * sigmas / (1 + (c.shift - 1) * sigmas)
        if c.shift_terminal:
            one_minus_z = 1 - sigmas
            scale_factor = one_minus_z[-1] / (1 - c.shift_terminal)
            sigmas = 1 - (one_minus_z / scale_factor)
        sigmas = sigmas.astype(np.float32)
        if c.invert_sigmas:
            sigmas = (1.0 - sigmas).astype(np.float32)
            end = np.float32(1.0)
        else:
            end = np.float32(0.0)
        self.timesteps = sigmas * np.float32(c.num_train_timesteps)  # (n,) float32
        self.sigmas = np.append(sigmas, end).astype(np.float32)  # (n + 1,) float32
        self.num_inference_steps = n
        self._step_index = None
        self._begin_index = None

    def _time_shift(self, mu: float, sigma: float, t: np.ndarray) -> np.ndarray:
        if self.config.time_shift_type == "exponential":
            return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)
        return mu / (mu + (1 / t - 1) ** sigma)

    def index_for_timestep(self, timestep: Any) -> int:
        """Index of ``timestep`` in ``timesteps`` (the second match if it occurs twice, as diffusers)."""
        hits = np.nonzero(self.timesteps == scalar(timestep))[0]
        if len(hits) == 0:
            raise InputError(f"{NAME}.step: timestep {timestep!r} is not one of scheduler.timesteps")
        return int(hits[1] if len(hits) > 1 else hits[0])

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """Identity (flow matching feeds the sample unscaled); same shape and dtype."""
        return sample

    def step(self, model_output: np.ndarray, timestep: Any, sample: np.ndarray) -> np.ndarray:
        """One Euler step ``x_next = x + (sigma_next - sigma) * v``.

        Unlike diffusers, returns ``prev_sample`` itself rather than a SchedulerOutput.

        Args:
            model_output: the velocity ``v``, any float dtype, same shape as ``sample``.
            timestep: one of ``self.timesteps`` (a float; an int raises, as in diffusers).
            sample: the current latents ``x``, e.g. ``(B, L, C)``.

        Returns:
            ``x_next``, shape of ``sample``, dtype of ``model_output``; bit-equal to diffusers on
            CPU for float32 and float16. Works on any array type with numpy semantics (cupy):
            arithmetic and ``astype`` only.
        """
        if isinstance(timestep, (int, np.integer)) and not isinstance(timestep, bool):
            raise InputError(
                f"{NAME}.step: got the integer timestep {timestep!r}; pass one of scheduler.timesteps "
                f"(a float), not a loop index"
            )
        if self.num_inference_steps is None:
            raise InputError(f"{NAME}.step: call set_timesteps first")
        i = self._init_step_index(timestep)
        if i + 1 >= len(self.sigmas):
            raise InputError(f"{NAME}.step: called {i + 1} times for {self.num_inference_steps} steps")
        dt = float(self.sigmas[i + 1] - self.sigmas[i])  # float32 difference, exactly as a float
        # As diffusers: dt * v in v's dtype (a float16 v rounds dt to float16 first, as torch does
        # on CPU; torch on CUDA may keep dt in float32 - not checked), the sum in float32, cast
        # back to v's dtype.
        prev = sample.astype(np.float32, copy=False) + dt * model_output
        self._step_index = i + 1
        return prev.astype(model_output.dtype, copy=False)


def set_timesteps_like_pipeline(
    scheduler: FlowMatchEulerDiscreteScheduler,
    pipeline: Literal["flux", "qwenimage", "sd3"],
    num_inference_steps: int,
    image_seq_len: int | None = None,
) -> None:
    """Call ``set_timesteps`` the way the diffusers pipeline does.

    - ``"flux"`` (FluxPipeline) and ``"qwenimage"`` (QwenImagePipeline): ``sigmas =
      linspace(1, 1/n, n)`` and ``mu = calculate_shift(image_seq_len, ...)`` from the config
      (defaults 256, 4096, 0.5, 1.15); ``image_seq_len`` is the packed latent token count.
    - ``"sd3"`` (StableDiffusion3Pipeline): plain ``set_timesteps(n)``; with dynamic shifting
      ``mu = calculate_shift(...)`` with default ``max_shift`` 1.16 and
      ``image_seq_len = (H // patch) * (W // patch)`` of the latent.
    """
    c = scheduler.config
    n = check_num_steps(NAME, num_inference_steps, None)
    needs_seq_len = pipeline in ("flux", "qwenimage") or (pipeline == "sd3" and c.use_dynamic_shifting)
    if needs_seq_len and image_seq_len is None:
        raise InputError(f"set_timesteps_like_pipeline({pipeline!r}): image_seq_len is required with this config")
    if pipeline in ("flux", "qwenimage"):
        mu = calculate_shift(
            image_seq_len,
            c.get("base_image_seq_len", 256),
            c.get("max_image_seq_len", 4096),
            c.get("base_shift", 0.5),
            c.get("max_shift", 1.15),
        )
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
    elif pipeline == "sd3":
        mu = None
        if c.use_dynamic_shifting:
            mu = calculate_shift(
                image_seq_len,
                c.get("base_image_seq_len", 256),
                c.get("max_image_seq_len", 4096),
                c.get("base_shift", 0.5),
                c.get("max_shift", 1.16),
            )
        scheduler.set_timesteps(n, mu=mu)
    else:
        raise InputError(
            f"set_timesteps_like_pipeline: got pipeline {pipeline!r}; allowed: 'flux', 'qwenimage', 'sd3'"
        )
