"""Rotary position embeddings computed on the host in numpy (float64, like diffusers).

FLUX computes its RoPE frequencies in float64 inside the transformer, which exports badly
(float64 ops and shapes baked as constants). The bundle takes precomputed ``rope_cos`` /
``rope_sin`` as graph inputs instead; this module computes them exactly as
``diffusers.models.transformers.transformer_flux.FluxPosEmbed`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rope_1d(dim: int, pos: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin for one axis, real parts interleaved: ``pos`` (S,) -> two (S, dim) float32 arrays."""
    if dim % 2:
        raise ValueError(f"rope axis dim must be even, got {dim}")
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))  # (dim/2,)
    angles = np.outer(pos.astype(np.float32).astype(np.float64), freqs)  # (S, dim/2)
    cos = np.repeat(np.cos(angles), 2, axis=1).astype(np.float32)  # (S, dim)
    sin = np.repeat(np.sin(angles), 2, axis=1).astype(np.float32)  # (S, dim)
    return cos, sin


def flux_rope(ids: np.ndarray, axes_dim: Sequence[int], theta: float) -> tuple[np.ndarray, np.ndarray]:
    """FLUX RoPE for position ids ``(S, n_axes)`` -> ``(cos, sin)``, each ``(S, sum(axes_dim))`` float32."""
    parts = [rope_1d(int(d), ids[:, i], theta) for i, d in enumerate(axes_dim)]
    return np.concatenate([c for c, _ in parts], -1), np.concatenate([s for _, s in parts], -1)


def flux_image_ids(height: int, width: int) -> np.ndarray:
    """Position ids of a packed ``(height, width)`` token grid: ``(height*width, 3)`` float32."""
    ids = np.zeros((height, width, 3), dtype=np.float32)
    ids[..., 1] += np.arange(height, dtype=np.float32)[:, None]
    ids[..., 2] += np.arange(width, dtype=np.float32)[None, :]
    return ids.reshape(height * width, 3)  # (h*w, 3)


def flux_text_ids(length: int) -> np.ndarray:
    """Text tokens all sit at position 0: ``(length, 3)`` float32 zeros."""
    return np.zeros((length, 3), dtype=np.float32)
