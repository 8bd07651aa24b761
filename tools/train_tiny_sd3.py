#!/usr/bin/env python
"""Train the tiny SD3-architecture text-to-image model for ``l2p/assets/tiny-sd3/`` (``l2p export tiny-sd3``).

Same data, tokenizers, VAE recipe and EMA loop as the tiny FLUX model (:mod:`tiny_common`,
:mod:`tiny_vae`), in the layout ``StableDiffusion3Pipeline`` needs:

1. two CLIP tokenizers (the captions' byte-level BPE, ``model_max_length`` 16) and a T5 tokenizer;
   three tiny *frozen, randomly initialised* text encoders: ``text_encoder``/``text_encoder_2`` =
   ``CLIPTextModelWithProjection`` (hidden ``text_hidden / 2`` each, so their concatenation fills the
   joint dimension as CLIP-L + CLIP-G do in SD3), ``text_encoder_3`` = ``T5EncoderModel`` (``text_hidden``);
2. a tiny ``AutoencoderKL`` (16 latent channels, factor 8) with ``scaling_factor``/``shift_factor`` from
   latent statistics (``--vae-from`` takes a trained one from another tiny pipeline folder instead);
3. a tiny ``SD3Transformer2DModel`` trained with flow matching as SD3/diffusers define it:
   ``x_t = (1 - sigma) x0 + sigma noise``, target ``noise - x0``, ``timestep = sigma * 1000`` (the
   pipeline passes the scheduler's ``t`` unscaled), ``sigma`` drawn with the density of the shifted
   inference schedule (``FlowMatchEulerDiscreteScheduler(shift=3.0)``, as SD3's scheduler config);
   **caption dropout**: a ``--caption-dropout`` fraction of the samples is conditioned on the
   embedding of the empty prompt, which is what the pipeline encodes for the default negative prompt
   ``""``, so classifier-free guidance has a learned unconditional branch; weights are EMA;
   **guidance-aware targets** (``--guidance-target G``, default 3): the captioned samples' target is
   ``u + (v - u) / G``, ``u`` the model's own empty-prompt prediction (no gradient), so the captioned
   branch learns a G-th of the way from the unconditional flow to the conditional one. Guidance at
   ``G`` then draws the data; at SD3's default 7 it overshoots by 7/G; without guidance the samples
   barely follow the prompt, as with large real models. Plain flow matching (``1``) follows the
   prompt without guidance and overshoots 7x at the default scale; ``G = 7`` amplifies the branch's
   errors 7x and did not learn the captions in a 1000-step trial;
4. ``StableDiffusion3Pipeline(...).save_pretrained`` into a temporary folder renamed atomically onto ``--out``.

Usage::

    # full run into l2p/assets/tiny-sd3 (35 min on 2 idle cores for the shipped run; training the VAE
    # instead of --vae-from adds ~12-14 min)
    python tools/train_tiny_sd3.py --vae-from l2p/assets/tiny-flux
    python tools/train_tiny_sd3.py --quick --out /tmp/tiny-sd3-smoke  # smoke run (~1-2 min)

The result is reproducible from ``--seed`` (and the ``--vae-from`` folder) for a fixed ``--steps``;
``--minutes`` only caps wall time as a safety net.
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

DEFAULT_OUT = tc.REPO / "l2p" / "assets" / "tiny-sd3"

# Sampling conventions the model is trained for (also written to the model folder).
CLIP_LENGTH = 16  # CLIP tokenizers' model_max_length (the pipeline pads CLIP to it); captions have <= 9 tokens
MAX_SEQUENCE_LENGTH = 16  # T5 tokens (the pipeline's max_sequence_length); captions have <= 9 incl. </s>
NUM_INFERENCE_STEPS = 50
GUIDANCE_SCALE = 7.0  # StableDiffusion3Pipeline's default
SCHEDULER_SHIFT = 3.0  # SD3's scheduler_config


@dataclass
class Config(tc.BaseConfig):
    """Hyper-parameters of one training run (saved as ``l2p_tiny.json`` in the model folder)."""

    # transformer
    num_layers: int = 5
    attention_head_dim: int = 32
    num_attention_heads: int = 5
    patch_size: int = 2
    steps: int = 4000
    batch: int = 64
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.15
    # guidance-aware targets: the captioned branch learns uncond + (v - uncond) / G (uncond = the model's
    # own empty-prompt prediction, no gradient), so that guidance at scale G reproduces the data flow
    guidance_target: float = 3.0
    minutes: float | None = None  # wall-clock cap for the transformer stage


def build_transformer(cfg: Config):
    from diffusers import SD3Transformer2DModel

    latent = data.IMAGE_SIZE // 8
    torch.manual_seed(cfg.seed + 5)
    return SD3Transformer2DModel(
        sample_size=latent,  # the pipeline's default height/width = sample_size * vae factor = 64
        patch_size=cfg.patch_size,
        in_channels=cfg.vae_latent_channels,
        out_channels=cfg.vae_latent_channels,
        num_layers=cfg.num_layers,
        attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.num_attention_heads,
        joint_attention_dim=cfg.text_hidden,  # T5 width; CLIP-L + CLIP-G are zero-padded to it
        caption_projection_dim=cfg.num_attention_heads * cfg.attention_head_dim,
        pooled_projection_dim=cfg.text_hidden,  # two CLIP projections of text_hidden / 2
        pos_embed_max_size=latent // cfg.patch_size,  # exactly the trained grid: other sizes are refused
    )


def text_parts(cfg: Config) -> dict:
    """The pipeline's tokenizers, frozen random text encoders and scheduler, as keyword arguments of
    ``StableDiffusion3Pipeline``: two CLIPs of width ``text_hidden / 2`` (their concatenation fills the
    joint width, as CLIP-L + CLIP-G do) sharing the caption tokenizer, and a T5 of width ``text_hidden``."""
    clip_tok, t5_tok = tc.build_clip_tokenizer(CLIP_LENGTH), tc.build_t5_tokenizer(MAX_SEQUENCE_LENGTH)
    clip_hidden = cfg.text_hidden // 2
    return {
        "text_encoder": tc.build_clip_encoder(clip_hidden, clip_tok, cfg.seed + 1, projection=True),
        "tokenizer": clip_tok,
        "text_encoder_2": tc.build_clip_encoder(clip_hidden, clip_tok, cfg.seed + 7, projection=True),
        "tokenizer_2": clip_tok,
        "text_encoder_3": tc.build_t5_encoder(cfg.text_hidden, t5_tok, cfg.seed + 2),
        "tokenizer_3": t5_tok,
        "scheduler": tc.build_scheduler(SCHEDULER_SHIFT),
    }


def encode_captions(pipe, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``captions + [""]`` through ``StableDiffusion3Pipeline.encode_prompt`` (the last row is the
    empty prompt, i.e. the pipeline's default negative prompt).

    Returns:
        prompt_embeds ``(K + 1, CLIP_LENGTH + MAX_SEQUENCE_LENGTH, text_hidden)`` and pooled
        ``(K + 1, text_hidden)``, float32.
    """
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=captions + [""], prompt_2=None, prompt_3=None, device=torch.device("cpu"),
            do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
    return embeds, pooled


def flow_matching_pair(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor):
    """SD3's training pair: ``x_t = (1 - sigma) x0 + sigma noise``, velocity target ``noise - x0`` and the
    transformer's ``timestep = 1000 sigma`` (StableDiffusion3Pipeline passes the scheduler's ``t``).

    Args: x0, noise float32 ``(B, C, h, w)``; sigma ``(B,)`` in [0, 1]. Returns (x_t, target, timestep).
    """
    s = sigma[:, None, None, None]
    return (1.0 - s) * x0 + s * noise, noise - x0, sigma * 1000.0


def guided_target(transformer, xt: torch.Tensor, timestep: torch.Tensor, target: torch.Tensor,
                  keep: torch.Tensor, empty_embeds: torch.Tensor, empty_pooled: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """Targets under which guidance at ``scale`` reproduces the conditional flow.

    For the captioned rows (``keep``) the target becomes ``u + (v - u) / scale``, where ``u`` is the
    model's own prediction for the same ``x_t`` under the empty prompt (no gradient) and ``v`` the flow
    target. In expectation the captioned branch then learns ``c = u + (v* - u) / scale``, so the
    pipeline's ``u + scale (c - u)`` equals the conditional flow ``v*``, while ``guidance_scale=1``
    samples ``c``: mostly the unconditional flow, as with large real models, where guidance is what
    makes samples follow the prompt.

    Args: xt, target float32 ``(B, C, h, w)``; timestep ``(B,)``; keep bool ``(B,)``;
    empty_embeds ``(T, D)``, empty_pooled ``(D,)``. Returns the new targets ``(B, C, h, w)``.
    """
    if not bool(keep.any()):
        return target
    n = int(keep.sum())
    with torch.no_grad():
        uncond = transformer(hidden_states=xt[keep], encoder_hidden_states=empty_embeds.expand(n, -1, -1),
                             pooled_projections=empty_pooled.expand(n, -1), timestep=timestep[keep],
                             return_dict=False)[0]  # (n, C, h, w)
    out = target.clone()
    out[keep] = uncond + (target[keep] - uncond) / scale
    return out


def train_transformer(cfg: Config, transformer, latents: torch.Tensor, caption_idx: torch.Tensor,
                      prompt_embeds: torch.Tensor, pooled: torch.Tensor, t0: float):
    """Flow-matching training with caption dropout; returns the EMA copy of ``transformer``.

    Args:
        latents: scaled and shifted latents, float32 ``(N, C, h, w)``.
        caption_idx: int64 ``(N,)`` index of each latent's caption into ``prompt_embeds``/``pooled``.
        prompt_embeds: ``(K + 1, T, D)``; pooled: ``(K + 1, D)``; row ``K`` is the empty prompt.
    """
    n = latents.shape[0]
    empty = prompt_embeds.shape[0] - 1

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        x0 = latents[idx]  # (B, C, h, w)
        noise = torch.randn(x0.shape, generator=gen)
        sigma = tc.sample_sigmas(cfg.batch, gen, SCHEDULER_SHIFT)  # (B,)
        drop = torch.rand(cfg.batch, generator=gen) < cfg.caption_dropout  # (B,)
        xt, target, timestep = flow_matching_pair(x0, noise, sigma)
        k = torch.where(drop, empty, caption_idx[idx])  # dropped captions -> the empty prompt's row
        if cfg.guidance_target != 1.0:
            target = guided_target(transformer, xt, timestep, target, ~drop, prompt_embeds[empty], pooled[empty],
                                   cfg.guidance_target)
        pred = transformer(hidden_states=xt, encoder_hidden_states=prompt_embeds[k], pooled_projections=pooled[k],
                           timestep=timestep, return_dict=False)[0]
        return F.mse_loss(pred, target)

    return tc.train_ema(cfg, transformer, loss_fn, "sd3", t0)


def write_model_card(path: Path, cfg: Config, stats: dict) -> None:
    conventions = {"max_sequence_length": MAX_SEQUENCE_LENGTH, "clip_max_length": CLIP_LENGTH,
                   "num_inference_steps": NUM_INFERENCE_STEPS, "guidance_scale": GUIDANCE_SCALE,
                   "negative_prompt": "", "scheduler_shift": SCHEDULER_SHIFT}
    tc.write_card(path, "l2p tiny-sd3", conventions, cfg, stats, readme=(
        "# l2p tiny-sd3\n\n"
        "A tiny SD3-architecture text-to-image model trained on procedural shapes "
        "(`l2p.tinymodel.data`) with caption dropout and guidance-aware targets; built by `tools/train_tiny_sd3.py`.\n\n"
        "Sample it with\n\n"
        "```python\n"
        "pipe = StableDiffusion3Pipeline.from_pretrained(path)\n"
        f"pipe('a red circle at the top left', height={data.IMAGE_SIZE}, width={data.IMAGE_SIZE}, "
        f"num_inference_steps={NUM_INFERENCE_STEPS}, guidance_scale={GUIDANCE_SCALE}, "
        f"max_sequence_length={MAX_SEQUENCE_LENGTH}, generator=torch.Generator().manual_seed(0))\n"
        "```\n\n"
        f"`max_sequence_length={MAX_SEQUENCE_LENGTH}` is required (the pipeline default, 256, changes the T5 "
        f"embeddings); `height=width={data.IMAGE_SIZE}` is the pipeline default for this folder and the only "
        f"size its position table allows. The CLIP tokenizers pad to {CLIP_LENGTH} tokens. Classifier-free "
        "guidance with the empty negative prompt (`guidance_scale=1` turns it off). Guidance-aware training: "
        f"the captioned branch learns `u + (v - u) / {cfg.guidance_target:g}` (`u`: the unconditional prediction, "
        f"`v`: the flow target), so guidance at {cfg.guidance_target:g} draws the data, the default "
        f"{GUIDANCE_SCALE:g} a little beyond, and `guidance_scale=1` barely follows the prompt. "
        "See `l2p_tiny.json` for the training configuration.\n"
    ))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tc.add_run_options(p, Config.seed, DEFAULT_OUT)
    p.add_argument("--caption-dropout", type=float, default=Config.caption_dropout,
                   help="fraction of training samples conditioned on the empty prompt")
    p.add_argument("--guidance-target", type=float, default=Config.guidance_target,
                   help="guidance-aware targets: train the captioned branch so that guidance at this scale "
                        "draws the data (default %(default)s; 1 = plain flow matching)")
    shape = p.add_argument_group("transformer shape")
    shape.add_argument("--layers", type=int, default=Config.num_layers, help="joint transformer blocks")
    shape.add_argument("--heads", type=int, default=Config.num_attention_heads, help="attention heads")
    shape.add_argument("--head-dim", type=int, default=Config.attention_head_dim, help="channels per head")
    args = p.parse_args(argv)
    if not 0.0 <= args.caption_dropout < 1.0:
        p.error(f"--caption-dropout must be in [0, 1), got {args.caption_dropout}")
    if args.guidance_target < 1.0:
        p.error(f"--guidance-target must be >= 1, got {args.guidance_target}")
    cfg = Config(seed=args.seed, num_layers=args.layers, num_attention_heads=args.heads,
                 attention_head_dim=args.head_dim, caption_dropout=args.caption_dropout,
                 guidance_target=args.guidance_target)
    if args.quick:  # also a smaller transformer
        cfg.num_layers, cfg.num_attention_heads = 2, 2
    tc.apply_run_options(args, cfg)
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    t0 = tc.start_run(args, cfg)
    from diffusers import StableDiffusion3Pipeline

    # 1. data: renders of the training combos; the VAE (--vae-cache, --vae-from) and the latents
    ts = tv.training_set(args, cfg, t0)

    # 2. tokenizers, frozen text encoders (CLIP-L / CLIP-G / T5 stand-ins), scheduler; the prompt
    #    embeddings (and the empty prompt's) through the pipeline's own encode_prompt
    transformer = build_transformer(cfg)
    tc.log(f"transformer {sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M params", t0)
    pipe = StableDiffusion3Pipeline(transformer=transformer, vae=ts.vae, **text_parts(cfg))
    prompt_embeds, pooled = encode_captions(pipe, ts.captions)  # (K+1, 32, D), (K+1, D)

    # 3. transformer
    train_start = time.time()
    ema = train_transformer(cfg, transformer, ts.latents, ts.caption_idx, prompt_embeds, pooled, t0)
    train_minutes = (time.time() - train_start) / 60

    # 4. save atomically: the same parts, the EMA weights
    stats = tc.run_stats(args, ts, train_minutes, t0)
    pipe = StableDiffusion3Pipeline(**{**pipe.components, "transformer": ema})
    tc.save_atomically(pipe, args.out, lambda path: write_model_card(path, cfg, stats), t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
