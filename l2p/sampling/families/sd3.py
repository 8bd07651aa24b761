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
from ...errors import InputError
from ...latent import LatentSpec
from ..schedulers import set_timesteps_like_pipeline
from .base import FamilyRuntime


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
        """``StableDiffusion3Pipeline.encode_prompt`` (no clip skip) from the three text-encoder graphs.

        Returns ``encoder_hidden_states`` ``(B, Lc + Lt, D)`` float32 (the two CLIPs' penultimate
        hidden states side by side, zero-padded to the T5 width ``D``, then T5's last hidden state)
        and ``pooled_projections`` ``(B, Pc + Pg)`` float32 (the two CLIPs' projected embeddings).
        """
        missing = [e for e in ("text_encoder", "text_encoder_2", "text_encoder_3") if e not in tokenizers]
        if missing:
            raise InputError(
                f"this bundle lacks the text encoder(s) {', '.join(missing)} (it was exported from a "
                "transformer-only folder, or one without T5); give --conditioning COND.npz, or export the full "
                "StableDiffusion3Pipeline folder"
            )
        clip_l = run("text_encoder", {"input_ids": tokenizers["text_encoder"](prompts)})
        clip_g = run("text_encoder_2", {"input_ids": tokenizers["text_encoder_2"](prompts)})
        t5 = run("text_encoder_3", {"input_ids": tokenizers["text_encoder_3"](prompts)})["last_hidden_state"]
        clip = np.concatenate([clip_l["penultimate_hidden_state"], clip_g["penultimate_hidden_state"]],
                              axis=-1)  # (B, Lc, Dl + Dg)
        if clip.shape[-1] > t5.shape[-1]:
            raise InputError(f"this bundle's CLIP widths ({clip.shape[-1]}) exceed its T5 width ({t5.shape[-1]}); "
                             "it is not an SD3 text stack")
        clip = np.pad(clip, ((0, 0), (0, 0), (0, t5.shape[-1] - clip.shape[-1])))  # (B, Lc, D)
        hidden = np.concatenate([clip, t5], axis=1)  # (B, Lc + Lt, D)
        pooled = np.concatenate([clip_l["text_embeds"], clip_g["text_embeds"]], axis=-1)  # (B, Pl + Pg)
        return {"encoder_hidden_states": hidden.astype(np.float32), "pooled_projections": pooled.astype(np.float32)}
