"""Torch-free numpy schedulers with the diffusers contract, numerically equal to diffusers.

    scheduler = make_scheduler(json.load(open("scheduler/scheduler_config.json")))
    scheduler.set_timesteps(num_inference_steps)           # FLUX: sigmas=..., mu=...
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x)

Differences from diffusers: ``step`` returns the previous sample array itself (not a
``SchedulerOutput``); ``set_timesteps`` takes no ``device``; its extra arguments are keyword-only;
``config`` is a frozen dataclass (with ``.get``); invalid input raises :class:`l2p.errors.InputError`.
``step`` touches the arrays only through arithmetic, ``astype``, ``clip`` and ``dtype``, so cupy
arrays work too. DDIM and DPM-Solver are deterministic only (no eta / SDE variants).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

from ...errors import InputError, UnsupportedModelError
from ...limits import check_bound
from .ddim import DDIMConfig, DDIMScheduler
from .dpm_solver import DPMSolverConfig, DPMSolverMultistepScheduler
from .flow_match import (
    FlowMatchEulerConfig,
    FlowMatchEulerDiscreteScheduler,
    calculate_shift,
    set_timesteps_like_pipeline,
)

Scheduler = Union[FlowMatchEulerDiscreteScheduler, DDIMScheduler, DPMSolverMultistepScheduler]

SCHEDULERS: dict[str, type] = {
    "FlowMatchEulerDiscreteScheduler": FlowMatchEulerDiscreteScheduler,
    "DDIMScheduler": DDIMScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
}


def make_scheduler(config: Mapping[str, Any]) -> Scheduler:
    """Build the scheduler named by ``config["_class_name"]`` from a diffusers scheduler config dict.

    Raises:
        UnsupportedModelError: the class is missing or not one l2p implements.
        InputError: a config key or value that l2p does not support (see ``from_config``), or a
            ``num_train_timesteps`` outside :data:`l2p.limits.BOUNDS` (checked before allocating).
    """
    name = config.get("_class_name")
    if name not in SCHEDULERS:
        raise UnsupportedModelError(
            f"scheduler class {name!r} is not supported; l2p implements {', '.join(SCHEDULERS)}. "
            f"Set '_class_name' in the scheduler config to one of them"
        )
    fix = "use the model's own scheduler config (diffusers models use 1000 training timesteps)"
    n = check_bound("num_train_timesteps", config.get("num_train_timesteps", 1000),
                    "scheduler config: num_train_timesteps", fix, error=InputError)
    betas = config.get("trained_betas")
    if betas is not None and (not isinstance(betas, (list, tuple)) or len(betas) != n):
        raise InputError(f"scheduler config: trained_betas must be a list of num_train_timesteps ({n}) numbers; {fix}")
    return SCHEDULERS[name].from_config(config)  # type: ignore[no-any-return]


__all__ = [
    "DDIMConfig",
    "DDIMScheduler",
    "DPMSolverConfig",
    "DPMSolverMultistepScheduler",
    "FlowMatchEulerConfig",
    "FlowMatchEulerDiscreteScheduler",
    "SCHEDULERS",
    "Scheduler",
    "calculate_shift",
    "make_scheduler",
    "set_timesteps_like_pipeline",
]
