"""PixArt runtime: spatial latents ``(B, C, H, W)``, T5 conditioning with its attention mask,
epsilon (+ learned sigma), optional resolution / aspect-ratio micro-conditions.

Feeds the graph as ``PixArtAlphaPipeline`` feeds the transformer with ``use_resolution_binning=False``.
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
from .base import needs_conditioning
from .spatial import EpsilonSpatialRuntime


@dataclass(frozen=True, kw_only=True)
class PixArtLatent(LatentSpec):
    """PixArt's latent record: whether the model takes resolution / aspect-ratio micro-conditions."""

    additional_conditions: bool


class PixArtRuntime(EpsilonSpatialRuntime):
    cond_names = ["encoder_hidden_states", "encoder_attention_mask"]
    latent_type = PixArtLatent
    latent: PixArtLatent

    def __init__(self, bundle: Bundle, **_options: Any) -> None:
        super().__init__(bundle)
        self.micro = self.latent.additional_conditions
        self.vae_scale = self.latent.vae_scale_factor or 8  # the pipeline's default without a VAE

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(cond[k], dtype=np.float32) for k in self.cond_names}
        if self.micro:
            # PixArtAlphaPipeline: resolution = [height, width] and aspect_ratio = [height / width] in pixels
            b = feed["encoder_hidden_states"].shape[0]
            height, width = self.h * self.vae_scale, self.w * self.vae_scale
            feed["resolution"] = np.tile(np.array([[height, width]], np.float32), (b, 1))  # (B, 2)
            feed["aspect_ratio"] = np.full((b, 1), float(height / width), np.float32)  # (B, 1)
        return feed

    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raise needs_conditioning("pixart", self.cond_names)
