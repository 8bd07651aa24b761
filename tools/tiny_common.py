"""Parts shared by the tiny-model trainers (``tools/train_tiny.py``, ``tools/train_tiny_sd3.py``).

Everything is built from a seed, offline, on CPU: the shapes data set (:mod:`l2p.tinymodel.data`),
tokenizers over its caption vocabulary, frozen random text encoders, the rectified-flow noise levels,
the EMA training loop, the shared command-line options, the model card and the atomic save. The
VAE is in :mod:`tiny_vae`.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# Passive OpenMP waiting: on a shared 2-core machine spinning worker threads slow training down ~4x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from l2p.tinymodel import data  # noqa: E402


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


def start_run(args: argparse.Namespace, cfg: BaseConfig) -> float:
    """Threads, quiet diffusers progress bars, the configuration logged; returns the start time."""
    from diffusers.utils import logging as dlogging

    torch.set_num_threads(args.threads)
    t0 = time.time()
    dlogging.disable_progress_bar()
    log(f"config {asdict(cfg)}", t0)
    return t0


def render_training_set(cfg: BaseConfig, t0: float) -> tuple[np.ndarray, list, list[str], torch.Tensor]:
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
    log(f"rendered {len(images)} images of {len(captions)} training captions", t0)
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
# flow matching
# --------------------------------------------------------------------------------------------


def cosine_lr(warmup: int, steps: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% at ``steps``."""
    return lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))


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


# --------------------------------------------------------------------------------------------
# command line and model card
# --------------------------------------------------------------------------------------------


def add_run_options(p: argparse.ArgumentParser, seed: int, out: Path) -> None:
    """The options both trainers share (seed, output, step counts, smoke mode, threads, VAE cache)."""
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--out", type=Path, default=out, help="model folder to (atomically) replace")
    p.add_argument("--steps", type=int, default=None, help="transformer training steps")
    p.add_argument("--vae-steps", type=int, default=None, help="VAE training steps")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap for the transformer stage")
    p.add_argument("--renders-per-combo", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: few steps and renders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-cache", type=Path, default=None, help="development: reuse/save the trained VAE here")
    p.add_argument("--vae-from", type=Path, default=None,
                   help="take the trained VAE of this tiny pipeline folder (its vae/) instead of training one")


def apply_run_options(args: argparse.Namespace, cfg) -> None:
    """``--quick`` (20 VAE steps, 30 transformer steps, 4 renders per combo), then explicit overrides."""
    if args.quick:
        cfg.vae_steps, cfg.steps, cfg.renders_per_combo, cfg.warmup = 20, 30, 4, 10
    if args.steps is not None:
        cfg.steps = args.steps
    if args.vae_steps is not None:
        cfg.vae_steps = args.vae_steps
    if args.renders_per_combo is not None:
        cfg.renders_per_combo = args.renders_per_combo
    cfg.minutes = args.minutes


def run_stats(args: argparse.Namespace, ts, train_minutes: float, t0: float) -> dict:
    """The ``stats`` of ``l2p_tiny.json`` from the :class:`tiny_vae.TrainingSet` ``ts``: VAE quality
    (and origin with ``--vae-from``), wall times, training set size."""
    return {
        "vae_recon_mae_255": round(ts.rec_err, 3),
        "vae_recon_checker_accuracy": ts.rec_acc,
        **({"vae_from": str(args.vae_from)} if args.vae_from else {}),
        "transformer_minutes": round(train_minutes, 2),
        "total_minutes": round((time.time() - t0) / 60, 2),
        "train_images": ts.images,
    }


def write_card(path: Path, name: str, conventions: dict, cfg, stats: dict, readme: str) -> None:
    """``l2p_tiny.json`` (name, image size, the sampling ``conventions``, held-out captions, the
    training configuration and ``stats``) and ``README.md`` in the model folder ``path``."""
    meta = {
        "name": name,
        "height": data.IMAGE_SIZE,
        "width": data.IMAGE_SIZE,
        **conventions,
        "heldout_captions": data.heldout_captions(),
        "config": asdict(cfg),
        "stats": stats,
    }
    (path / "l2p_tiny.json").write_text(json.dumps(meta, indent=2) + "\n")
    (path / "README.md").write_text(readme)
