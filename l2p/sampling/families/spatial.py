"""Family bases by latent layout: spatial ``(B, C, H, W)`` (DiT, PixArt) and 2x2-packed (FLUX, Qwen-Image)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...bundle import Bundle
from ..packing import pack_2x2, unpack_2x2
from .base import FamilyRuntime


class EpsilonSpatialRuntime(FamilyRuntime):
    """Spatial latents ``(B, C, H, W)``, the scheduler's integer timestep, epsilon (+ learned sigma).

    What ``DiTPipeline`` and ``PixArtAlphaPipeline`` do alike: plain ``set_timesteps(n)``, the
    timestep ``t[None].expand(B)``, and with learned sigma only the first ``C`` output channels.
    """

    predictions = ("epsilon", "epsilon+learned_sigma")

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        self.learned_sigma = self.latent.prediction == "epsilon+learned_sigma"

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, self.h, self.w)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        scheduler.set_timesteps(steps)  # no custom timesteps/sigmas

    def step_inputs(self, latents: np.ndarray, t: float) -> dict[str, np.ndarray]:
        return {"hidden_states": latents, "timestep": np.full((latents.shape[0],), t, dtype=np.float32)}

    def model_output(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        sample = out["sample"]  # (B, 2C, H, W) with learned sigma
        # DiT: torch.split(noise_pred, latent_channels, dim=1)[0]; PixArt: noise_pred.chunk(2, dim=1)[0]
        return sample[:, : self.channels] if self.learned_sigma else sample

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        return latents


class Packed2x2Runtime(FamilyRuntime):
    """Latents packed in 2x2 patches, ``(B, h/2 * w/2, 4C)``, as ``FluxPipeline`` and ``QwenImagePipeline``."""

    @property
    def tokens(self) -> int:
        """Packed token count ``(h // 2) * (w // 2)``."""
        return (self.h // 2) * (self.w // 2)

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.tokens, self.channels * 4)

    def image_noise(self, seed: int) -> np.ndarray:
        """Noise drawn in the spatial layout ``(1, C, h, w)`` then packed, as the pipelines do."""
        z = np.random.default_rng(seed).standard_normal((1, self.channels, self.h, self.w), dtype=np.float32)
        return pack_2x2(z)  # (1, h/2*w/2, C*4)

    def step_inputs(self, latents: np.ndarray, t: float) -> dict[str, np.ndarray]:
        # FluxPipeline: timestep = t.expand(B).to(latents.dtype) / 1000;
        # QwenImagePipeline: timestep = t.expand(B).to(latents.dtype); transformer(timestep=timestep / 1000)
        timestep = np.full((latents.shape[0],), t, dtype=np.float32) / np.float32(1000)
        return {"hidden_states": latents, "timestep": timestep}

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        return unpack_2x2(latents, self.h, self.w)  # (B, C, H, W)
