"""FLUX runtime: 2x2 packed latents, RoPE computed on the host, CLIP pooled + T5 conditioning."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...bundle import Bundle
from ...errors import InputError
from ..packing import pack_2x2, unpack_2x2
from ..rope import flux_image_ids, flux_rope, flux_text_ids
from ..schedulers import calculate_shift
from .base import FamilyRuntime


class FluxRuntime(FamilyRuntime):
    cond_names = ["encoder_hidden_states", "pooled_projections"]

    def __init__(self, bundle: Bundle, guidance_scale: float = 3.5) -> None:
        super().__init__(bundle)
        self.h = int(self.info["latent_height"])
        self.w = int(self.info["latent_width"])
        self.channels = int(self.info["latent_channels"])
        self.guidance_scale = float(guidance_scale)

    @property
    def tokens(self) -> int:
        return (self.h // 2) * (self.w // 2)

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.tokens, self.channels * 4)

    def noise(self, seed: int, batch: int = 1) -> np.ndarray:
        """Noise drawn in the spatial layout ``(B, C, h, w)`` then packed, as ``FluxPipeline``."""
        z = np.random.default_rng(seed).standard_normal((batch, self.channels, self.h, self.w), dtype=np.float32)
        return pack_2x2(z)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        sigmas = np.linspace(1.0, 1 / steps, steps)
        c = scheduler.config
        get = c.get if isinstance(c, dict) else lambda k, d=None: getattr(c, k, d)
        mu = None
        if get("use_dynamic_shifting", False):
            mu = calculate_shift(self.tokens, get("base_image_seq_len", 256), get("max_image_seq_len", 4096),
                                 get("base_shift", 0.5), get("max_shift", 1.15))
        scheduler.set_timesteps(steps, sigmas=sigmas, mu=mu)

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        b, t = cond["encoder_hidden_states"].shape[:2]
        ids = np.concatenate([flux_text_ids(t), flux_image_ids(self.h // 2, self.w // 2)])  # (T+S, 3)
        cos, sin = flux_rope(ids, self.info["rope_axes_dim"], float(self.info["rope_theta"]))
        feed = {k: cond[k] for k in self.cond_names}
        feed["rope_cos"], feed["rope_sin"] = cos, sin
        if self.info.get("guidance_embeds"):
            feed["guidance"] = np.full((b,), self.guidance_scale, dtype=np.float32)
        return feed

    def step_inputs(self, latents: np.ndarray, t: float) -> dict[str, np.ndarray]:
        b = latents.shape[0]
        # FluxPipeline: timestep = t.expand(B).to(latents.dtype) / 1000
        timestep = np.full((b,), t, dtype=np.float32) / np.float32(1000)
        return {"hidden_states": latents, "timestep": timestep}

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        return unpack_2x2(latents, self.h, self.w)

    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if "text_encoder" not in tokenizers or "text_encoder_2" not in tokenizers:
            raise InputError(
                "this bundle has no text encoders (it was exported from a transformer-only folder); "
                "give --conditioning COND.npz, or export a full pipeline folder"
            )
        pooled = run("text_encoder", {"input_ids": tokenizers["text_encoder"](prompts)})["pooler_output"]
        hidden = run("text_encoder_2", {"input_ids": tokenizers["text_encoder_2"](prompts)})["last_hidden_state"]
        return {"encoder_hidden_states": hidden.astype(np.float32), "pooled_projections": pooled.astype(np.float32)}
