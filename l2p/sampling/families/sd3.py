"""SD3 runtime: spatial latents ``(B, C, H, W)``, pooled CLIP + joint text conditioning, flow matching.

Feeds the graph as ``StableDiffusion3Pipeline`` feeds the transformer.
Under classifier-free guidance the negative rows are the ``negative_*`` conditioning arrays
(the pipeline's ``negative_prompt_embeds``...), combined by :meth:`FamilyRuntime.cfg_combine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...bundle import Bundle
from ...latent import LatentSpec
from ..schedulers import set_timesteps_like_pipeline
from .base import FamilyRuntime, needs_conditioning


@dataclass(frozen=True, kw_only=True)
class SD3Latent(LatentSpec):
    """SD3's latent record: the transformer's patch size (for the token count of dynamic shifting)."""

    patch_size: int


class SD3Runtime(FamilyRuntime):
    cond_names = ["encoder_hidden_states", "pooled_projections"]
    latent_type = SD3Latent
    latent: SD3Latent

    def __init__(self, bundle: Bundle, **_options: Any) -> None:
        super().__init__(bundle)
        self.patch = self.latent.patch_size

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, self.h, self.w)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        # plain set_timesteps(n); mu from the patch-token count only with dynamic shifting
        tokens = (self.h // self.patch) * (self.w // self.patch)
        set_timesteps_like_pipeline(scheduler, "sd3", steps, image_seq_len=tokens)

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(cond[k], dtype=np.float32) for k in self.cond_names}

    def step_inputs(self, latents: np.ndarray, t: float) -> dict[str, np.ndarray]:
        # StableDiffusion3Pipeline: timestep = t.expand(B) (not divided by 1000)
        return {"hidden_states": latents, "timestep": np.full((latents.shape[0],), t, dtype=np.float32)}

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        return latents

    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raise needs_conditioning("sd3", self.cond_names)
