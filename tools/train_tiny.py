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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_common as tc  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)
import tiny_vae as tv  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from l2p.tinymodel import data  # noqa: E402

DEFAULT_OUT = tc.REPO / "l2p" / "assets" / "tiny-flux"

# Sampling conventions the model is trained for (also written to the model folder).
MAX_SEQUENCE_LENGTH = 16  # T5 tokens; captions have <= 9 tokens including </s>
NUM_INFERENCE_STEPS = 50
SCHEDULER_SHIFT = 3.0


@dataclass
class Config(tc.BaseConfig):
    """Hyper-parameters of one training run (saved as ``l2p_tiny.json`` in the model folder)."""

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

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        x0 = FluxPipeline._pack_latents(latents[idx], cfg.batch, c, h, w)  # (B, h*w/4, 4C)
        noise = torch.randn(x0.shape, generator=gen)
        sigma = tc.sample_sigmas(cfg.batch, gen, SCHEDULER_SHIFT)  # (B,)
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
        return F.mse_loss(pred, noise - x0)

    return tc.train_ema(cfg, transformer, loss_fn, "flux", t0)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def write_model_card(path: Path, cfg: Config, stats: dict) -> None:
    conventions = {"max_sequence_length": MAX_SEQUENCE_LENGTH, "num_inference_steps": NUM_INFERENCE_STEPS,
                   "guidance": None, "scheduler_shift": SCHEDULER_SHIFT}
    tc.write_card(path, "l2p tiny-flux", conventions, cfg, stats, readme=(
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
    ))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tc.add_run_options(p, Config.seed, DEFAULT_OUT)
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
    tc.apply_run_options(args, cfg)
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    t0 = tc.start_run(args, cfg)
    from diffusers import FluxPipeline

    # 1. data: renders of the training combos; the VAE (optionally cached across development runs
    #    with --vae-cache, or taken from --vae-from) and the latents
    ts = tv.training_set(args, cfg, t0)

    # 2. tokenizers, frozen text encoders
    clip_tok, t5_tok = tc.build_clip_tokenizer(), tc.build_t5_tokenizer(MAX_SEQUENCE_LENGTH)
    clip = tc.build_clip_encoder(cfg.text_hidden, clip_tok, cfg.seed + 1)
    t5 = tc.build_t5_encoder(cfg.text_hidden, t5_tok, cfg.seed + 2)

    # 3. prompt embeddings through the pipeline's own encode_prompt
    transformer = build_transformer(cfg)
    tc.log(f"transformer {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M params", t0)
    pipe = FluxPipeline(
        scheduler=tc.build_scheduler(SCHEDULER_SHIFT),
        vae=ts.vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    with torch.no_grad():
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            ts.captions, prompt_2=None, device=torch.device("cpu"), max_sequence_length=MAX_SEQUENCE_LENGTH
        )  # (K, 16, D), (K, D), (16, 3)

    # 4. transformer
    train_start = time.time()
    ema = train_transformer(cfg, transformer, ts.latents, ts.caption_idx, prompt_embeds, pooled, text_ids, t0)
    train_minutes = (time.time() - train_start) / 60

    # 5. save atomically: the same parts, the EMA weights
    stats = tc.run_stats(args, ts, train_minutes, t0)
    pipe = FluxPipeline(**{**pipe.components, "transformer": ema})
    tc.save_atomically(pipe, args.out, lambda path: write_model_card(path, cfg, stats), t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
