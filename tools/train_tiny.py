#!/usr/bin/env python
"""Train the tiny FLUX-architecture text-to-image model shipped in ``l2p/assets/tiny-flux/``.

Everything is built from a seed, offline, on CPU:

1. tokenizers over the caption vocabulary (CLIP byte-level BPE, T5 unigram) and two tiny
   *frozen, randomly initialised* text encoders (``CLIPTextModel``, ``T5EncoderModel``);
2. a tiny ``AutoencoderKL`` (vae_scale_factor 8, 16 latent channels) trained briefly on renders of
   the training combos, with ``scaling_factor``/``shift_factor`` set from latent statistics as FLUX does;
3. a tiny ``FluxTransformer2DModel`` trained with rectified flow matching exactly as FLUX/diffusers
   define it (``x_t = (1 - sigma) x0 + sigma noise``, target ``noise - x0``, timestep ``sigma``), on cached
   latents and on prompt embeddings computed once through ``FluxPipeline.encode_prompt``; weights are EMA;
4. ``FluxPipeline(...).save_pretrained`` into a temporary folder, renamed atomically onto ``--out``.

Usage::

    python tools/train_tiny.py                      # full run (~30 min on 2 CPU cores)
    python tools/train_tiny.py --quick --out /tmp/tiny-flux-smoke   # smoke run (~1 min)

The result is reproducible from ``--seed`` for a fixed ``--vae-steps``/``--steps`` (``--minutes`` only
caps wall time as a safety net and makes the run time-dependent when it triggers).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Passive OpenMP waiting: on a shared 2-core machine spinning worker threads slow training down ~4x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2p.tinymodel import data  # noqa: E402
from l2p.tinymodel.checker import check  # noqa: E402

DEFAULT_OUT = REPO / "l2p" / "assets" / "tiny-flux"

# Sampling conventions the model is trained for (also written to the model folder).
MAX_SEQUENCE_LENGTH = 16  # T5 tokens; captions have <= 9 tokens including </s>
NUM_INFERENCE_STEPS = 50
SCHEDULER_SHIFT = 3.0


@dataclass
class Config:
    """Hyper-parameters of one training run (saved as ``l2p_tiny.json`` in the model folder)."""

    seed: int = 1
    # data
    renders_per_combo: int = 128
    # VAE
    vae_block_out_channels: tuple[int, ...] = (16, 32, 64, 64)
    vae_latent_channels: int = 16
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    vae_fg_weight: float = 20.0
    # text encoders
    text_hidden: int = 64
    # transformer
    num_layers: int = 3
    num_single_layers: int = 4
    attention_head_dim: int = 32
    num_attention_heads: int = 6
    axes_dims_rope: tuple[int, int, int] = (4, 14, 14)
    steps: int = 2762
    batch: int = 64
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    minutes: float | None = None  # wall-clock cap for the transformer stage


def log(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# tokenizers and frozen text encoders
# --------------------------------------------------------------------------------------------


def build_clip_tokenizer():
    """CLIP byte-level BPE trained on the captions; every caption word is a single token."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tk = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tk.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tk.train_from_iterator(data.all_captions(), trainer=trainer)
    model = json.loads(tk.to_str())["model"]
    tok = CLIPTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], model_max_length=77)
    for word in data.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    return tok


def build_t5_tokenizer():
    """T5 unigram tokenizer: one ``▁word`` piece per caption word plus single letters as fallback."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -5.0)]
    pieces += [("\u2581" + w, -1.0) for w in data.vocabulary()]
    pieces += [(ch, -8.0) for ch in "abcdefghijklmnopqrstuvwxyz"]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=MAX_SEQUENCE_LENGTH)
    for word in data.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    return tok


def build_text_encoders(cfg: Config, clip_tok, t5_tok):
    """Tiny frozen random ``CLIPTextModel`` and ``T5EncoderModel`` (fp32, eval mode)."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(cfg.seed + 1)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok),
            hidden_size=cfg.text_hidden,
            intermediate_size=2 * cfg.text_hidden,
            projection_dim=cfg.text_hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id,
            attention_dropout=0.0,
        )
    )
    torch.manual_seed(cfg.seed + 2)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=cfg.text_hidden,
            d_kv=16,
            d_ff=2 * cfg.text_hidden,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
            decoder_start_token_id=t5_tok.pad_token_id,
            is_encoder_decoder=False,
            use_cache=False,
        )
    )
    for m in (clip, t5):
        m.eval().requires_grad_(False)
    return clip, t5


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def build_vae(cfg: Config):
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


def train_vae(cfg: Config, vae, images: np.ndarray, t0: float) -> None:
    """Train ``vae`` in place: foreground-weighted L1 + MSE reconstruction plus a tiny KL term."""
    gen = torch.Generator().manual_seed(cfg.seed + 4)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(1, cfg.vae_steps))))
    )
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


def vae_key(cfg: Config) -> dict:
    """The configuration fields that determine the trained VAE."""
    keys = ("seed", "renders_per_combo", "vae_block_out_channels", "vae_latent_channels", "vae_steps",
            "vae_batch", "vae_lr", "vae_kl_weight", "vae_fg_weight")
    return {k: getattr(cfg, k) for k in keys}


def obtain_vae(cfg: Config, images: np.ndarray, cache: Path | None, t0: float):
    """Train the VAE, or load it from ``cache`` when it was trained there with the same configuration."""
    from diffusers import AutoencoderKL

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


# --------------------------------------------------------------------------------------------
# transformer
# --------------------------------------------------------------------------------------------


def build_transformer(cfg: Config):
    from diffusers import FluxTransformer2DModel

    assert sum(cfg.axes_dims_rope) == cfg.attention_head_dim
    torch.manual_seed(cfg.seed + 5)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * cfg.vae_latent_channels,
        num_layers=cfg.num_layers,
        num_single_layers=cfg.num_single_layers,
        attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.num_attention_heads,
        joint_attention_dim=cfg.text_hidden,
        pooled_projection_dim=cfg.text_hidden,
        guidance_embeds=False,
        axes_dims_rope=tuple(cfg.axes_dims_rope),
    )


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SCHEDULER_SHIFT, use_dynamic_shifting=False)


def sample_sigmas(n: int, gen: torch.Generator) -> torch.Tensor:
    """Training noise levels: ``u ~ U(0, 1)`` shifted like the scheduler, ``sigma = s u / (1 + (s - 1) u)``.

    This is the density of the sampler's (shifted, uniformly spaced) inference sigmas.
    """
    u = torch.rand(n, generator=gen)
    s = SCHEDULER_SHIFT
    return s * u / (1 + (s - 1) * u)


def train_transformer(
    cfg: Config,
    transformer,
    latents: torch.Tensor,
    caption_idx: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    t0: float,
):
    """Rectified-flow training on packed latents; returns the EMA copy of ``transformer``.

    Args:
        latents: scaled and shifted latents, float32 ``(N, C, h, w)``.
        caption_idx: int64 ``(N,)`` index of each latent's caption into ``prompt_embeds``/``pooled``.
        prompt_embeds: T5 embeddings ``(K, MAX_SEQUENCE_LENGTH, D)``; pooled: CLIP pooled ``(K, D)``.
        text_ids: ``(MAX_SEQUENCE_LENGTH, 3)`` zeros as in ``FluxPipeline.encode_prompt``.
    """
    from diffusers import FluxPipeline

    n, c, h, w = latents.shape
    img_ids = FluxPipeline._prepare_latent_image_ids(cfg.batch, h // 2, w // 2, "cpu", torch.float32)  # (h*w/4, 3)
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(1, cfg.steps))))
    )
    gen = torch.Generator().manual_seed(cfg.seed + 6)
    transformer.train()
    start = time.time()
    ema_params = list(ema.parameters())
    params = list(transformer.parameters())
    running = None
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        x0 = FluxPipeline._pack_latents(latents[idx], cfg.batch, c, h, w)  # (B, h*w/4, 4C)
        noise = torch.randn(x0.shape, generator=gen)
        sigma = sample_sigmas(cfg.batch, gen)  # (B,)
        s = sigma[:, None, None]
        xt = (1.0 - s) * x0 + s * noise
        k = caption_idx[idx]
        pred = transformer(
            hidden_states=xt,
            timestep=sigma,  # FluxPipeline passes t / 1000 == sigma
            pooled_projections=pooled[k],
            encoder_hidden_states=prompt_embeds[k],
            txt_ids=text_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == cfg.steps - 1:
            rate = (step + 1) / (time.time() - start)
            log(f"flux step {step:5d}/{cfg.steps} loss {running:.4f} lr {sched.get_last_lr()[0]:.2e} {rate:.2f} it/s", t0)
        if cfg.minutes is not None and time.time() - start > 60 * cfg.minutes:
            log(f"flux stage hit the --minutes cap after {step + 1} steps", t0)
            break
    return ema


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_model_card(path: Path, cfg: Config, stats: dict) -> None:
    meta = {
        "name": "l2p tiny-flux",
        "height": data.IMAGE_SIZE,
        "width": data.IMAGE_SIZE,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "num_inference_steps": NUM_INFERENCE_STEPS,
        "guidance": None,
        "scheduler_shift": SCHEDULER_SHIFT,
        "heldout_captions": data.heldout_captions(),
        "config": asdict(cfg),
        "stats": stats,
    }
    (path / "l2p_tiny.json").write_text(json.dumps(meta, indent=2) + "\n")
    (path / "README.md").write_text(
        "# l2p tiny-flux\n\n"
        "A tiny FLUX-architecture text-to-image model trained on procedural shapes "
        "(`l2p.tinymodel.data`); built by `tools/train_tiny.py`.\n\n"
        "Sample it with\n\n"
        "```python\n"
        "pipe = FluxPipeline.from_pretrained(path)\n"
        f"pipe('a red circle at the top left', height={data.IMAGE_SIZE}, width={data.IMAGE_SIZE}, "
        f"num_inference_steps={NUM_INFERENCE_STEPS}, max_sequence_length={MAX_SEQUENCE_LENGTH}, "
        "generator=torch.Generator().manual_seed(0))\n"
        "```\n\n"
        f"`max_sequence_length={MAX_SEQUENCE_LENGTH}` and `height=width={data.IMAGE_SIZE}` are required "
        "(the pipeline defaults, 512 and 1024, are not what the model was trained for). "
        "No guidance (`guidance_embeds=False`). See `l2p_tiny.json` for the training configuration.\n"
    )


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=Config.seed)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to (atomically) replace")
    p.add_argument("--steps", type=int, default=None, help="transformer training steps")
    p.add_argument("--vae-steps", type=int, default=None, help="VAE training steps")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap for the transformer stage")
    p.add_argument("--renders-per-combo", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: few steps and renders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-cache", type=Path, default=None, help="development: reuse/save the trained VAE here")
    shape = p.add_argument_group("transformer shape (defaults: the shipped model's)")
    shape.add_argument("--layers", type=int, default=Config.num_layers, help="double-stream blocks")
    shape.add_argument("--single-layers", type=int, default=Config.num_single_layers, help="single-stream blocks")
    shape.add_argument("--heads", type=int, default=Config.num_attention_heads, help="attention heads")
    shape.add_argument("--head-dim", type=int, default=Config.attention_head_dim,
                       help="channels per head; RoPE takes 4 of them for the text axis and splits the rest over y/x")
    args = p.parse_args(argv)
    cfg = Config(seed=args.seed, num_layers=args.layers, num_single_layers=args.single_layers,
                 num_attention_heads=args.heads, attention_head_dim=args.head_dim)
    if args.head_dim != Config.attention_head_dim:
        if args.head_dim % 4 or args.head_dim < 12:
            p.error("--head-dim must be a multiple of 4 and at least 12 (RoPE axes need even sizes)")
        half = (args.head_dim - 4) // 2  # even, as head_dim is a multiple of 4
        cfg.axes_dims_rope = (4, half, half)
    if args.quick:
        cfg.vae_steps, cfg.steps, cfg.renders_per_combo, cfg.warmup = 20, 30, 4, 10
    if args.steps is not None:
        cfg.steps = args.steps
    if args.vae_steps is not None:
        cfg.vae_steps = args.vae_steps
    if args.renders_per_combo is not None:
        cfg.renders_per_combo = args.renders_per_combo
    cfg.minutes = args.minutes
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    from diffusers import FluxPipeline
    from diffusers.utils import logging as dlogging

    dlogging.disable_progress_bar()
    log(f"config {asdict(cfg)}", t0)

    # 1. data: renders of the training combos only
    rng = np.random.default_rng(cfg.seed)
    combos = [c for c in data.train_combos() for _ in range(cfg.renders_per_combo)]
    images = data.render_batch(combos, rng)  # (N, 64, 64, 3) uint8
    captions = data.train_captions()
    caption_idx = torch.tensor([captions.index(data.caption(c)) for c in combos])  # (N,)
    log(f"rendered {len(images)} images of {len(captions)} training captions", t0)

    # 2. tokenizers, frozen text encoders
    clip_tok, t5_tok = build_clip_tokenizer(), build_t5_tokenizer()
    clip, t5 = build_text_encoders(cfg, clip_tok, t5_tok)

    # 3. VAE (optionally cached across development runs with --vae-cache)
    vae = obtain_vae(cfg, images, args.vae_cache, t0)
    raw = encode_latents(vae, images)  # (N, C, 8, 8)
    shift = raw.mean().item()
    scale = 1.0 / (raw - shift).std().item()
    vae.register_to_config(scaling_factor=scale, shift_factor=shift)
    latents = (raw - shift) * scale
    rec_err, rec_acc = vae_report(vae, images, combos, t0)
    log(f"latents {tuple(raw.shape)} shift {shift:.4f} scale {scale:.4f}", t0)

    # 4. prompt embeddings through the pipeline's own encode_prompt
    transformer = build_transformer(cfg)
    log(f"transformer {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M params", t0)
    pipe = FluxPipeline(
        scheduler=build_scheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    with torch.no_grad():
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            captions, prompt_2=None, device=torch.device("cpu"), max_sequence_length=MAX_SEQUENCE_LENGTH
        )  # (K, 16, D), (K, D), (16, 3)

    # 5. transformer
    train_start = time.time()
    ema = train_transformer(cfg, transformer, latents, caption_idx, prompt_embeds, pooled, text_ids, t0)
    train_minutes = (time.time() - train_start) / 60

    # 6. save atomically
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe = FluxPipeline(**{**pipe.components, "transformer": ema})  # same parts, the EMA weights
    pipe.save_pretrained(tmp, safe_serialization=True)
    for f in tmp.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    stats = {
        "vae_recon_mae_255": round(rec_err, 3),
        "vae_recon_checker_accuracy": rec_acc,
        "transformer_minutes": round(train_minutes, 2),
        "total_minutes": round((time.time() - t0) / 60, 2),
        "train_images": len(images),
    }
    write_model_card(tmp, cfg, stats)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    log(f"saved {out} ({folder_size(out) / 1e6:.2f} MB); total {(time.time() - t0) / 60:.1f} min", t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
