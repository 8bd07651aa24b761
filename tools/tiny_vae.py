"""The tiny models' VAE: a small ``AutoencoderKL`` (16 latent channels, factor 8) trained on the
shapes renders, with ``scaling_factor``/``shift_factor`` set from latent statistics as FLUX and SD3 do.
Shared by ``tools/train_tiny.py`` and ``tools/train_tiny_sd3.py``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tiny_common import BaseConfig, cosine_lr, log, render_training_set  # first: puts the repo on sys.path

from l2p.tinymodel import data
from l2p.tinymodel.checker import check


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def build_vae(cfg: BaseConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_block_out_channels)
    torch.manual_seed(cfg.seed + 3)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_block_out_channels),
        layers_per_block=1,
        latent_channels=cfg.vae_latent_channels,
        norm_num_groups=8,
        sample_size=data.IMAGE_SIZE,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def foreground_weight(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weight ``(B, 1, H, W)``: ``1 + weight`` on (dilated) foreground pixels, else 1.

    The object covers ~5% of the image; without this the VAE under-fits its colour and outline.
    """
    bg = torch.tensor(data.BACKGROUND, dtype=x.dtype).div(127.5).sub(1.0).view(1, 3, 1, 1)
    fg = (x - bg).abs().amax(dim=1, keepdim=True).gt(0.05).float()  # (B, 1, H, W)
    fg = F.max_pool2d(fg, kernel_size=3, stride=1, padding=1)
    return 1.0 + weight * fg


def train_vae(cfg: BaseConfig, vae, images: np.ndarray, t0: float) -> None:
    """Train ``vae`` in place: foreground-weighted L1 + MSE reconstruction plus a tiny KL term."""
    gen = torch.Generator().manual_seed(cfg.seed + 4)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr(50, cfg.vae_steps))
    vae.train()
    for step in range(cfg.vae_steps):
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        x = to_tensor(images[idx.numpy()])  # (B, 3, 64, 64)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        w = foreground_weight(x, cfg.vae_fg_weight)  # (B, 1, 64, 64)
        err = rec - x
        rec_loss = ((err.abs() + err.square()) * w).mean() / w.mean()
        kl = post.kl().mean() / x[0].numel()  # nats per pixel value
        loss = rec_loss + cfg.vae_kl_weight * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.vae_steps - 1:
            log(f"vae step {step:5d}/{cfg.vae_steps} rec {rec_loss.item():.4f} kl/dim {kl.item():.3f}", t0)
    vae.eval().requires_grad_(False)


def vae_key(cfg: BaseConfig) -> dict:
    """The configuration fields that determine the trained VAE."""
    keys = ("seed", "renders_per_combo", "vae_block_out_channels", "vae_latent_channels", "vae_steps",
            "vae_batch", "vae_lr", "vae_kl_weight", "vae_fg_weight")
    return {k: getattr(cfg, k) for k in keys}


def obtain_vae(cfg: BaseConfig, images: np.ndarray, cache: Path | None, t0: float, vae_from: Path | None = None):
    """Train the VAE, or load it from ``cache`` when it was trained there with the same configuration,
    or take the one in the pipeline folder ``vae_from`` (its scale and shift are set again later)."""
    from diffusers import AutoencoderKL

    if vae_from is not None:
        return load_vae(vae_from, cfg, t0)
    key = json.loads(json.dumps(vae_key(cfg)))
    if cache is not None and (cache / "vae_key.json").exists():
        if json.loads((cache / "vae_key.json").read_text()) == key:
            log(f"loading cached VAE from {cache}", t0)
            return AutoencoderKL.from_pretrained(str(cache)).eval().requires_grad_(False)
    vae = build_vae(cfg)
    log(f"vae {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params", t0)
    train_vae(cfg, vae, images, t0)
    if cache is not None:
        vae.save_pretrained(str(cache))
        (cache / "vae_key.json").write_text(json.dumps(key))
    return vae


@torch.no_grad()
def vae_report(vae, images: np.ndarray, combos: list, t0: float, n: int = 256) -> tuple[float, float]:
    """Mean abs reconstruction error (0..255) and checker acceptance on ``n`` renders spread over all combos."""
    from collections import Counter

    sel = np.linspace(0, len(images) - 1, min(n, len(images))).astype(int)
    x = to_tensor(images[sel])  # (n, 3, 64, 64)
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample  # (n, 3, 64, 64)
    err = (rec - x).abs().mean().item() * 127.5
    fg = foreground_weight(x, 1.0).gt(1.0).expand_as(x)
    fg_err = (rec - x).abs()[fg].mean().item() * 127.5
    rec_u8 = rec.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (n, 64, 64, 3)
    results = [check(img, data.caption(combos[i])) for img, i in zip(rec_u8, sel)]
    acc = float(np.mean([r.ok for r in results]))
    why = Counter(r.reason.split(" is ")[0].split(" (")[0] for r in results if not r.ok)
    log(f"vae recon MAE {err:.2f}/255 (foreground {fg_err:.2f}/255); checker accepts {100 * acc:.1f}% {dict(why)}", t0)
    return err, acc


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior means (unscaled) of uint8 images ``(N, 64, 64, 3)`` -> float32 ``(N, C, 8, 8)``."""
    out = [vae.encode(to_tensor(images[i : i + batch])).latent_dist.mode() for i in range(0, len(images), batch)]
    return torch.cat(out)


def scaled_latents(vae, images: np.ndarray, t0: float) -> torch.Tensor:
    """Encode ``images`` and set the VAE's ``scaling_factor``/``shift_factor`` from the latent statistics
    (as FLUX and SD3 do); returns the latents as the transformer sees them, float32 ``(N, C, 8, 8)``."""
    raw = encode_latents(vae, images)  # (N, C, 8, 8)
    shift = raw.mean().item()
    scale = 1.0 / (raw - shift).std().item()
    vae.register_to_config(scaling_factor=scale, shift_factor=shift)
    log(f"latents {tuple(raw.shape)} shift {shift:.4f} scale {scale:.4f}", t0)
    return (raw - shift) * scale




def load_vae(folder: Path, cfg: BaseConfig, t0: float):
    """The trained ``AutoencoderKL`` of another tiny pipeline folder."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True).eval().requires_grad_(False)
    got = (vae.config.latent_channels, len(vae.config.block_out_channels))
    want = (cfg.vae_latent_channels, len(cfg.vae_block_out_channels))
    if got != want:
        raise SystemExit(f"--vae-from {folder}: expected a VAE with {want[0]} latent channels and factor "
                         f"{2 ** (want[1] - 1)}, got {got[0]} channels and factor {2 ** (got[1] - 1)}")
    log(f"VAE from {folder / 'vae'}", t0)
    return vae


@dataclass
class TrainingSet:
    """What the transformer trains on: latents as it sees them (float32 ``(N, C, 8, 8)``), each one's
    int64 ``(N,)`` index into ``captions``, and the VAE that made them with its reconstruction report."""

    vae: object
    latents: torch.Tensor
    captions: list[str]
    caption_idx: torch.Tensor
    rec_err: float
    rec_acc: float
    images: int  # N


def training_set(args: argparse.Namespace, cfg: BaseConfig, t0: float) -> TrainingSet:
    """Render the training combos, obtain the VAE (``--vae-cache``/``--vae-from``), encode and scale."""
    images, combos, captions, caption_idx = render_training_set(cfg, t0)
    vae = obtain_vae(cfg, images, args.vae_cache, t0, args.vae_from)
    latents = scaled_latents(vae, images, t0)
    rec_err, rec_acc = vae_report(vae, images, combos, t0)
    return TrainingSet(vae, latents, captions, caption_idx, rec_err, rec_acc, len(images))
