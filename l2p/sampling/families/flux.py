"""FLUX runtime: 2x2 packed latents, RoPE computed on the host, CLIP pooled + T5 conditioning."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...bundle import Bundle
from ...errors import InputError
from ...latent import LatentSpec
from ..rope import flux_image_ids, flux_rope, flux_text_ids
from ..schedulers import calculate_shift
from .spatial import Packed2x2Runtime


@dataclass(frozen=True, kw_only=True)
class FluxLatent(LatentSpec):
    """FLUX's latent record: the RoPE axes and base, and whether the model embeds the guidance scale."""

    rope_axes_dim: tuple[int, ...]
    rope_theta: float
    guidance_embeds: bool


class FluxRuntime(Packed2x2Runtime):
    cond_names = ["encoder_hidden_states", "pooled_projections"]
    latent_type = FluxLatent
    latent: FluxLatent

    def __init__(self, bundle: Bundle, guidance_scale: float = 3.5) -> None:
        super().__init__(bundle)
        self.guidance_scale = float(guidance_scale)

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
        cos, sin = flux_rope(ids, self.latent.rope_axes_dim, self.latent.rope_theta)
        feed = {k: cond[k] for k in self.cond_names}
        feed["rope_cos"], feed["rope_sin"] = cos, sin
        if self.latent.guidance_embeds:
            feed["guidance"] = np.full((b,), self.guidance_scale, dtype=np.float32)
        return feed

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
