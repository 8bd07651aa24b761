"""DiT runtime: class-conditional, spatial latents ``(B, C, H, W)``, epsilon (+ learned sigma).

Feeds the graph as ``DiTPipeline`` feeds the transformer with ``guidance_scale = 1`` (no
classifier-free guidance: a conditional-only run). The condition is ``class_labels`` ``(B,)``:
ImageNet class ids (``null_class`` is the unconditional id); float arrays from ``COND.npz`` are
accepted and rounded, since conditioning files hold float arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...bundle import Bundle
from ...errors import InputError
from .base import FamilyRuntime, needs_conditioning


class DiTRuntime(FamilyRuntime):
    cond_names = ["class_labels"]

    def __init__(self, bundle: Bundle, **_options: Any) -> None:
        super().__init__(bundle)
        self.h = int(self.info["latent_height"])
        self.w = int(self.info["latent_width"])
        self.channels = int(self.info["latent_channels"])
        self.learned_sigma = self.info["prediction"] == "epsilon+learned_sigma"
        self.num_classes = int(self.info["num_classes"])

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, self.h, self.w)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        scheduler.set_timesteps(steps)  # DiTPipeline: self.scheduler.set_timesteps(num_inference_steps)

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels = np.asarray(cond["class_labels"])
        ids = np.rint(labels).astype(np.int64).reshape(-1)  # (B,)
        if labels.ndim != 1 or not np.array_equal(ids, labels) or ids.min() < 0 or ids.max() > self.num_classes:
            raise InputError(f"class_labels must be a 1-D array of integer class ids in 0..{self.num_classes} "
                             f"({self.num_classes} = unconditional); got {labels!r}")
        return {"class_labels": ids}

    def step_inputs(self, latents: np.ndarray, t: float) -> dict[str, np.ndarray]:
        # DiTPipeline: timesteps = t[None].expand(B) (the scheduler's integer timestep)
        return {"hidden_states": latents, "timestep": np.full((latents.shape[0],), t, dtype=np.float32)}

    def model_output(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        sample = out["sample"]  # (B, 2C, H, W) with learned sigma
        # DiTPipeline: model_output, _ = torch.split(noise_pred, latent_channels, dim=1)
        return sample[:, : self.channels] if self.learned_sigma else sample

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        return latents

    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raise needs_conditioning("dit", self.cond_names)
