"""Qwen-Image runtime: 2x2 packed latents, host-side RoPE, Qwen2.5-VL text conditioning + mask.

Feeds the graph as ``QwenImagePipeline`` feeds the transformer; its true classifier-free guidance
runs the negative branch with the negative prompt's own embeddings and mask (and so its own RoPE
text length) and rescales the combination to the conditional output's norm (:meth:`cfg_combine`).
Qwen-Image's rotary embedding is complex-valued
(``QwenEmbedRope``); ONNX has no complex tensors, so :func:`qwen_rope` computes its real and
imaginary parts here, in numpy, and the graph rotates with them (see :mod:`l2p.export.qwenimage`).
The VAE latent is ``(B, C, H, W)``; Qwen's video VAE adds a frame axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...bundle import Bundle
from ...latent import LatentSpec
from ..schedulers import set_timesteps_like_pipeline
from .base import needs_conditioning
from .spatial import Packed2x2Runtime


def _axis_angles(pos: np.ndarray, dim: int, theta: float) -> np.ndarray:
    """``QwenEmbedRope.rope_params`` angles in float32 as torch computes them: (N,) -> (N, dim/2)."""
    inv = np.float32(1.0) / np.power(np.float32(theta), np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    return np.outer(pos.astype(np.float32), inv.astype(np.float32)).astype(np.float32)  # (N, dim/2)


def qwen_rope(height: int, width: int, txt_len: int, axes_dim: Sequence[int], theta: float = 10000.0,
              scale_rope: bool = True, frame: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Qwen-Image RoPE as ``(cos, sin)``, each ``(txt_len + frame*height*width, sum(axes_dim))`` float32.

    Rows: the text tokens first, then the image tokens of a ``frame x height x width`` token grid
    (the joint-attention order). Each angle is repeated twice (``cos[:, 2i] == cos[:, 2i+1]``), so
    rotating interleaved pairs ``(x[2i], x[2i+1])`` equals diffusers' complex multiplication.
    Mirrors ``QwenEmbedRope.forward`` (``_compute_video_freqs`` with ``idx = 0``): with
    ``scale_rope`` the height/width positions are centred, ``arange(n) - (n - n // 2)``, and text
    positions start after ``max(height // 2, width // 2)`` on all three axes.
    """
    def centred(n: int) -> np.ndarray:
        return np.arange(n) - (n - n // 2) if scale_rope else np.arange(n)

    f = np.broadcast_to(np.arange(frame)[:, None, None], (frame, height, width)).reshape(-1)  # (S,)
    h = np.broadcast_to(centred(height)[None, :, None], (frame, height, width)).reshape(-1)  # (S,)
    w = np.broadcast_to(centred(width)[None, None, :], (frame, height, width)).reshape(-1)  # (S,)
    start = max(height // 2, width // 2) if scale_rope else max(height, width)
    t = np.arange(start, start + txt_len)  # (T,)
    img = [_axis_angles(p, int(d), theta) for p, d in zip((f, h, w), axes_dim)]
    txt = [_axis_angles(t, int(d), theta) for d in axes_dim]
    angles = np.concatenate([np.concatenate(txt, 1), np.concatenate(img, 1)], 0).astype(np.float64)  # (T+S, D/2)
    cos = np.repeat(np.cos(angles), 2, axis=1).astype(np.float32)  # (T+S, D)
    sin = np.repeat(np.sin(angles), 2, axis=1).astype(np.float32)  # (T+S, D)
    return cos, sin


@dataclass(frozen=True, kw_only=True)
class QwenImageLatent(LatentSpec):
    """Qwen-Image's latent record: the RoPE axes and base, and whether RoPE centres the image positions."""

    rope_axes_dim: tuple[int, ...]
    rope_theta: float
    scale_rope: bool


class QwenImageRuntime(Packed2x2Runtime):
    cond_names = ["encoder_hidden_states", "encoder_hidden_states_mask"]
    latent_type = QwenImageLatent
    latent: QwenImageLatent

    def __init__(self, bundle: Bundle, **_options: Any) -> None:
        super().__init__(bundle)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        # sigmas = linspace(1, 1/n, n), mu = calculate_shift(packed token count, ...) from the config
        set_timesteps_like_pipeline(scheduler, "qwenimage", steps, image_seq_len=self.tokens)

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(cond[k], dtype=np.float32) for k in self.cond_names}
        txt_len = feed["encoder_hidden_states"].shape[1]
        lat = self.latent
        feed["rope_cos"], feed["rope_sin"] = qwen_rope(self.h // 2, self.w // 2, txt_len, lat.rope_axes_dim,
                                                       lat.rope_theta, lat.scale_rope)
        return feed

    def cfg_combine(self, uncond: Any, cond: Any, scale: float) -> Any:
        """``QwenImagePipeline``'s true CFG: the linear combination, rescaled per token to the
        conditional prediction's norm over the channels: ``comb * (|cond| / |comb|)``, ``(B, S, C)``."""
        comb = uncond + scale * (cond - uncond)
        cond_norm = ((cond * cond).sum(axis=-1, keepdims=True)) ** 0.5  # (B, S, 1)
        comb_norm = ((comb * comb).sum(axis=-1, keepdims=True)) ** 0.5  # (B, S, 1)
        return comb * (cond_norm / comb_norm)

    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raise needs_conditioning("qwenimage", self.cond_names)
