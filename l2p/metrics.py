"""Measures of an array against a reference: relative errors, PSNR and SSIM. Torch-free.

One home for them: export checks, backend and PyTorch validation, calibration and the benchmark
all import these.
"""

from __future__ import annotations

import numpy as np


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    """Relative error ``||got - ref|| / ||ref||`` (Frobenius norms over the whole arrays, float64)."""
    g, r = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(g - r) / max(float(np.linalg.norm(r)), 1e-30))


def max_errors(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """``(max |got - ref|, max |got - ref| / max |ref|)`` in float64 (same shapes; 0 for empty arrays).

    The relative value is ``inf`` when ``ref`` is all zeros and ``got`` is not.
    """
    g, r = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    max_abs = float(np.abs(g - r).max()) if r.size else 0.0
    scale = float(np.abs(r).max()) if r.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")))


def psnr_each(got: np.ndarray, ref: np.ndarray, peak: float | None = None) -> np.ndarray:
    """float64 ``(B,)``: the PSNR (dB, capped at 99) of each ``got[i]`` against ``ref[i]`` (same
    shape, any float or integer dtype); ``peak``: the signal's peak, default each reference's range."""
    from skimage.metrics import peak_signal_noise_ratio

    vals = []
    for g, r in zip(got, ref):
        g, r = g.astype(np.float64), r.astype(np.float64)
        pk = float(r.max() - r.min()) if peak is None else peak
        vals.append(99.0 if np.array_equal(g, r) else min(99.0, peak_signal_noise_ratio(r, g, data_range=pk)))
    return np.asarray(vals, dtype=np.float64)


def psnr_db(got: np.ndarray, ref: np.ndarray, peak: float | None = None) -> float:
    """Mean over the leading axis of :func:`psnr_each`."""
    return float(np.mean(psnr_each(got, ref, peak)))


def image_metrics(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Mean PSNR (dB, capped at 99) and SSIM of uint8 images ``(B, H, W, 3)``, or of float
    latents ``(B, C, h, w)`` (then the reference's value range is the peak)."""
    from skimage.metrics import structural_similarity

    ss = []
    for g, r in zip(got, ref):
        if r.dtype != np.uint8:  # a latent: (C, h, w) -> (h, w, C) float64
            g, r = g.transpose(1, 2, 0).astype(np.float64), r.transpose(1, 2, 0).astype(np.float64)
        rng = 255.0 if r.dtype == np.uint8 else float(r.max() - r.min())
        win = min(7, min(r.shape[:2]) // 2 * 2 - 1)
        ss.append(structural_similarity(r, g, channel_axis=-1, data_range=rng, win_size=max(win, 3)))
    return psnr_db(got, ref, 255.0 if ref.dtype == np.uint8 else None), float(np.mean(ss))
