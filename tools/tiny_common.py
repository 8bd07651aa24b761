"""Parts shared by the tiny-model trainers (``tools/train_tiny.py``, ``tools/train_tiny_sd3.py``).

Everything is built from a seed, offline, on CPU: the shapes data set (:mod:`l2p.tinymodel.data`),
tokenizers over its caption vocabulary, frozen random text encoders, a tiny ``AutoencoderKL``
trained on the renders, the rectified-flow noise levels, the EMA training loop and the atomic save.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Passive OpenMP waiting: on a shared 2-core machine spinning worker threads slow training down ~4x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from l2p.tinymodel import data  # noqa: E402
from l2p.tinymodel.checker import check  # noqa: E402


@dataclass
class BaseConfig:
    """Data, VAE and text-encoder hyper-parameters (the first fields of each trainer's ``Config``)."""

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


def log(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)


def render_training_set(cfg: BaseConfig) -> tuple[np.ndarray, list, list[str], torch.Tensor]:
    """Renders of the training combos only.

    Returns:
        images uint8 ``(N, 64, 64, 3)``, their combos, the training captions (K) and int64
        ``(N,)`` indices of each image's caption into them.
    """
    rng = np.random.default_rng(cfg.seed)
    combos = [c for c in data.train_combos() for _ in range(cfg.renders_per_combo)]
    images = data.render_batch(combos, rng)  # (N, 64, 64, 3) uint8
    captions = data.train_captions()
    caption_idx = torch.tensor([captions.index(data.caption(c)) for c in combos])  # (N,)
    return images, combos, captions, caption_idx


# --------------------------------------------------------------------------------------------
# tokenizers and frozen text encoders
# --------------------------------------------------------------------------------------------


def canonical_bpe_vocab(vocab: dict[str, int], merges: list[tuple[str, str]], specials: list[str]) -> dict[str, int]:
    """Renumber a trained BPE vocabulary deterministically: ``specials``, then the single symbols
    sorted, then each merge's product in merge order.

    The ``tokenizers`` BPE trainer numbers symbols of equal frequency in hash-map order, which
    changes from process to process; the merges (what decides the segmentation) do not.
    """
    products = list(dict.fromkeys(a + b for a, b in merges))
    symbols = sorted(set(vocab) - set(specials) - set(products))
    order = specials + symbols + products
    assert sorted(order) == sorted(vocab), "BPE vocabulary is not specials + symbols + merge products"
    return {token: i for i, token in enumerate(order)}


def build_clip_tokenizer(model_max_length: int = 77):
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
    merges = [tuple(m) for m in model["merges"]]
    vocab = canonical_bpe_vocab(model["vocab"], merges, ["<|startoftext|>", "<|endoftext|>"])
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    for word in data.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    return tok


def build_t5_tokenizer(model_max_length: int):
    """T5 unigram tokenizer: one ``▁word`` piece per caption word plus single letters as fallback."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -5.0)]
    pieces += [("\u2581" + w, -1.0) for w in data.vocabulary()]
    pieces += [(ch, -8.0) for ch in "abcdefghijklmnopqrstuvwxyz"]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=model_max_length)
    for word in data.vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    return tok


def build_clip_encoder(hidden: int, tok, seed: int, projection: bool = False):
    """A tiny frozen random CLIP text encoder (fp32, eval mode), seeded with ``seed``.

    ``projection=True`` gives ``CLIPTextModelWithProjection`` (SD3), else ``CLIPTextModel`` (FLUX).
    Its position table has ``tok.model_max_length`` entries.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    model = cls(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            projection_dim=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tok.model_max_length,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            attention_dropout=0.0,
        )
    )
    return model.eval().requires_grad_(False)


def build_t5_encoder(hidden: int, tok, seed: int):
    """A tiny frozen random ``T5EncoderModel`` (fp32, eval mode), seeded with ``seed``."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    model = T5EncoderModel(
        T5Config(
            vocab_size=len(tok),
            d_model=hidden,
            d_kv=16,
            d_ff=2 * hidden,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id,
            is_encoder_decoder=False,
            use_cache=False,
        )
    )
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------


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


def cosine_lr(warmup: int, steps: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% at ``steps``."""
    return lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))


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


def obtain_vae(cfg: BaseConfig, images: np.ndarray, cache: Path | None, t0: float):
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


def scaled_latents(vae, images: np.ndarray, t0: float) -> torch.Tensor:
    """Encode ``images`` and set the VAE's ``scaling_factor``/``shift_factor`` from the latent statistics
    (as FLUX and SD3 do); returns the latents as the transformer sees them, float32 ``(N, C, 8, 8)``."""
    raw = encode_latents(vae, images)  # (N, C, 8, 8)
    shift = raw.mean().item()
    scale = 1.0 / (raw - shift).std().item()
    vae.register_to_config(scaling_factor=scale, shift_factor=shift)
    log(f"latents {tuple(raw.shape)} shift {shift:.4f} scale {scale:.4f}", t0)
    return (raw - shift) * scale


# --------------------------------------------------------------------------------------------
# flow matching
# --------------------------------------------------------------------------------------------


def build_scheduler(shift: float):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)


def sample_sigmas(n: int, gen: torch.Generator, shift: float) -> torch.Tensor:
    """Training noise levels: ``u ~ U(0, 1)`` shifted like the scheduler, ``sigma = s u / (1 + (s - 1) u)``.

    This is the density of the sampler's (shifted, uniformly spaced) inference sigmas.
    """
    u = torch.rand(n, generator=gen)
    return shift * u / (1 + (shift - 1) * u)


def train_ema(cfg, transformer, loss_fn: Callable[[torch.Generator], torch.Tensor], tag: str, t0: float):
    """AdamW + warm-up/cosine schedule + gradient clipping; returns the EMA copy of ``transformer``.

    ``loss_fn(gen)`` draws one batch from ``gen`` and returns the training loss. ``cfg`` supplies
    ``steps``, ``lr``, ``warmup``, ``ema_decay``, ``seed`` and ``minutes`` (a wall-clock cap or None).
    """
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr(cfg.warmup, cfg.steps))
    gen = torch.Generator().manual_seed(cfg.seed + 6)
    transformer.train()
    start = time.time()
    ema_params = list(ema.parameters())
    params = list(transformer.parameters())
    running = None
    for step in range(cfg.steps):
        loss = loss_fn(gen)
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
            lr = sched.get_last_lr()[0]
            log(f"{tag} step {step:5d}/{cfg.steps} loss {running:.4f} lr {lr:.2e} {rate:.2f} it/s", t0)
        if cfg.minutes is not None and time.time() - start > 60 * cfg.minutes:
            log(f"{tag} stage hit the --minutes cap after {step + 1} steps", t0)
            break
    return ema


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_atomically(pipe, out: Path, write_card: Callable[[Path], None], t0: float) -> Path:
    """``pipe.save_pretrained`` (safetensors) plus ``write_card(folder)`` into a temporary folder
    beside ``out``, then renamed onto ``out`` (an existing ``out`` is replaced only once complete)."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    for f in tmp.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    write_card(tmp)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    log(f"saved {out} ({folder_size(out) / 1e6:.2f} MB); total {(time.time() - t0) / 60:.1f} min", t0)
    return out
