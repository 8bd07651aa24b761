"""FLUX's 2x2 latent packing, in numpy (as ``FluxPipeline._pack_latents`` / ``_unpack_latents``)."""

from __future__ import annotations

import numpy as np


def pack_2x2(latents: np.ndarray) -> np.ndarray:
    """``(B, C, H, W)`` -> ``(B, H/2*W/2, C*4)``; H and W must be even."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2)  # (B, C, h, 2, w, 2)
    x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, h, w, C, 2, 2)
    return np.ascontiguousarray(x.reshape(b, (h // 2) * (w // 2), c * 4))  # (B, h*w, C*4)


def unpack_2x2(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(B, H/2*W/2, C*4)`` -> ``(B, C, H, W)`` for a latent of ``height`` x ``width``."""
    b, _, c4 = packed.shape
    x = packed.reshape(b, height // 2, width // 2, c4 // 4, 2, 2)  # (B, h, w, C, 2, 2)
    x = x.transpose(0, 3, 1, 4, 2, 5)  # (B, C, h, 2, w, 2)
    return np.ascontiguousarray(x.reshape(b, c4 // 4, height, width))  # (B, C, H, W)
