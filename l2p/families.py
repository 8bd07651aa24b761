"""The model families l2p supports, one row each: every per-family lookup is derived from here.

A family is one unit: its row below, its export adapter (``l2p/export/<name>.py``, torch side)
and its torch-free runtime (``l2p/sampling/families/<name>.py``, which also defines the
family's :class:`~l2p.latent.LatentSpec` subclass). Adding a family means adding those three.

Torch-free: adapters are imported only when :meth:`Family.adapter_class` is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import UnsupportedModelError

if TYPE_CHECKING:
    from .export.base import FamilyAdapter
    from .sampling.families.base import FamilyRuntime


def _load(ref: str) -> Any:
    """``"package.module:Name"`` -> the object (imports the module)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the bundle's ``family`` (manifest) and the module name of its adapter and runtime.
        model_class: the diffusers transformer class (``transformer/config.json`` ``_class_name``).
        adapter: ``"module:Class"`` of its :class:`~l2p.export.base.FamilyAdapter` (needs torch).
        runtime: ``"module:Class"`` of its torch-free :class:`~l2p.sampling.families.base.FamilyRuntime`.
        default_scheduler: the diffusers scheduler config written into a bundle exported from a
            transformer-only folder (one without ``scheduler/scheduler_config.json``).
        cfg_scale: the classifier-free guidance scale the family's diffusers pipeline uses by
            default (``guidance_scale``; Qwen-Image's ``true_cfg_scale``), the one place l2p keeps
            it; ``None``: the family has no classifier-free guidance (FLUX.1 embeds its guidance).
    """

    name: str
    model_class: str
    adapter: str
    runtime: str
    default_scheduler: Mapping[str, Any]
    cfg_scale: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_scheduler", MappingProxyType(dict(self.default_scheduler)))

    def adapter_class(self) -> type[FamilyAdapter]:
        """The export adapter class (imports torch)."""
        cls: type[FamilyAdapter] = _load(self.adapter)
        return cls

    def runtime_class(self) -> type[FamilyRuntime]:
        """The torch-free runtime class."""
        cls: type[FamilyRuntime] = _load(self.runtime)
        return cls


#: Every supported (and tested) family.
FAMILIES: tuple[Family, ...] = (
    # black-forest-labs/FLUX.1-dev's scheduler
    Family("flux", "FluxTransformer2DModel",
           "l2p.export.flux:FluxAdapter", "l2p.sampling.families.flux:FluxRuntime", {
        "_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
        "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
        "max_image_seq_len": 4096}, cfg_scale=None),
    # stabilityai/stable-diffusion-3-medium-diffusers (SD3.5 uses the same)
    Family("sd3", "SD3Transformer2DModel",
           "l2p.export.sd3:SD3Adapter", "l2p.sampling.families.sd3:SD3Runtime", {
        "_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0},
        cfg_scale=7.0),
    # facebook/DiT-XL-2-256 (diffusers' convert_dit_to_diffusers.py)
    Family("dit", "DiTTransformer2DModel",
           "l2p.export.dit:DiTAdapter", "l2p.sampling.families.dit:DiTRuntime", {
        "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
        "beta_schedule": "linear", "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
        "prediction_type": "epsilon"}, cfg_scale=4.0),
    # PixArt-alpha/PixArt-XL-2-1024-MS (DPMSolverMultistepScheduler defaults)
    Family("pixart", "PixArtTransformer2DModel",
           "l2p.export.pixart:PixArtAdapter", "l2p.sampling.families.pixart:PixArtRuntime", {
        "_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001,
        "beta_end": 0.02, "beta_schedule": "linear", "solver_order": 2, "prediction_type": "epsilon",
        "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
        "timestep_spacing": "linspace", "steps_offset": 0}, cfg_scale=4.5),
    # Qwen/Qwen-Image
    Family("qwenimage", "QwenImageTransformer2DModel",
           "l2p.export.qwenimage:QwenImageAdapter", "l2p.sampling.families.qwenimage:QwenImageRuntime", {
        "_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0,
        "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 0.9, "base_image_seq_len": 256,
        "max_image_seq_len": 8192, "shift_terminal": 0.02, "time_shift_type": "exponential"},
        cfg_scale=4.0),
)


def family(name: str) -> Family:
    """The family of a bundle's ``family`` name.

    Raises:
        UnsupportedModelError: no such family.
    """
    for f in FAMILIES:
        if f.name == name:
            return f
    raise UnsupportedModelError(f"bundle family '{name}' is not supported; l2p has {[f.name for f in FAMILIES]}")


def family_of_model(model_class: str) -> Family:
    """The family of a diffusers transformer class name.

    Raises:
        UnsupportedModelError: l2p does not export that class.
    """
    for f in FAMILIES:
        if f.model_class == model_class:
            return f
    raise UnsupportedModelError(
        f"model class '{model_class}' is not supported; l2p exports {sorted(f.model_class for f in FAMILIES)}"
    )
