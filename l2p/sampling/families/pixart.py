"""PixArt runtime: spatial latents ``(B, C, H, W)``, T5 conditioning with its attention mask,
epsilon (+ learned sigma), optional resolution / aspect-ratio micro-conditions.

Feeds the graph as ``PixArtAlphaPipeline`` feeds the transformer with ``guidance_scale = 1``
(no classifier-free guidance: a conditional-only run) and ``use_resolution_binning=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...bundle import Bundle
from .base import FamilyRuntime, needs_conditioning


class PixArtRuntime(FamilyRuntime):
    cond_names = ["encoder_hidden_states", "encoder_attention_mask"]

    def __init__(self, bundle: Bundle, **_options: Any) -> None:
        super().__init__(bundle)
        self.h = int(self.info["latent_height"])
        self.w = int(self.info["latent_width"])
        self.channels = int(self.info["latent_channels"])
        self.learned_sigma = self.info["prediction"] == "epsilon+learned_sigma"
        self.micro = bool(self.info.get("additional_conditions"))
        self.vae_scale = int(self.info.get("vae_scale_factor", 8))  # the pipeline's default without a VAE

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, self.h, self.w)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        scheduler.set_timesteps(steps)  # retrieve_timesteps(scheduler, n) with no custom timesteps/sigmas

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(cond[k], dtype=np.float32) for k in self.cond_names}
        if self.micro:
            # PixArtAlphaPipeline: resolution = [height, width] and aspect_ratio = [height / width] in pixels
            b = feed["encoder_hidden_states"].shape[0]
            height, width = self.h * self.vae_scale, self.w * self.vae_scale
            feed["resolution"] = np.tile(np.array([[height, width]], np.float32), (b, 1))  # (B, 2)
            feed["aspect_ratio"] = np.full((b, 1), float(height / width), np.float32)  # (B, 1)
        return feed

    def step_inputs(self, latents: np.ndarray, t: float) -> dict[str, np.ndarray]:
        # PixArtAlphaPipeline: current_timestep = t[None].expand(B) (the scheduler's integer timestep)
        return {"hidden_states": latents, "timestep": np.full((latents.shape[0],), t, dtype=np.float32)}

    def model_output(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        sample = out["sample"]  # (B, 2C, H, W) with learned sigma
        # PixArtAlphaPipeline: noise_pred = noise_pred.chunk(2, dim=1)[0]
        return sample[:, : self.channels] if self.learned_sigma else sample

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        return latents

    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raise needs_conditioning("pixart", self.cond_names)
