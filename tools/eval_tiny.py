#!/usr/bin/env python
"""Evaluate a tiny model folder (tiny-flux or tiny-sd3) with the image-analysis checker.

Loads the folder with ``diffusers.DiffusionPipeline.from_pretrained`` (offline; the class named in its
``model_index.json``: ``FluxPipeline`` or ``StableDiffusion3Pipeline``), samples every held-out caption
(or, with ``--train-captions``, every training caption) for seeds ``0..N-1`` at the shipped step count,
checks each image with :func:`l2p.tinymodel.checker.check`, prints the accuracy table and writes a
captioned PNG grid. For a guided (SD3) folder, ``--cfg-scale G [G ...]`` evaluates each
classifier-free guidance scale (default: the folder's ``guidance_scale``; 1 turns guidance off) with
the pipeline's default negative prompt ``""`` and prints one accepted count per scale.

Usage::

    python tools/eval_tiny.py --out /tmp/tiny_heldout.png
    python tools/eval_tiny.py --train-captions --out /tmp/tiny_train.png
    python tools/eval_tiny.py --model l2p/assets/tiny-sd3 --cfg-scale 7 1 --out /tmp/sd3.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tools/train_tiny.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2p.tinymodel import data  # noqa: E402
from l2p.tinymodel.checker import CheckResult, check  # noqa: E402

DEFAULT_MODEL = REPO / "l2p" / "assets" / "tiny-flux"


def load_pipeline(path: Path):
    """The folder's pipeline (``DiffusionPipeline.from_pretrained``) in fp32 on CPU, progress bar off."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_defaults(path: Path) -> dict:
    """Sampling conventions written by ``tools/train_tiny.py`` (``l2p_tiny.json``)."""
    meta = path / "l2p_tiny.json"
    if meta.exists():
        return json.loads(meta.read_text())
    return {"height": 64, "width": 64, "num_inference_steps": 50, "max_sequence_length": 16}


@torch.no_grad()
def sample(
    pipe,
    captions: list[str],
    seeds: list[int],
    steps: int,
    max_sequence_length: int,
    size: int = 64,
    batch: int = 64,
    cfg_scale: float | None = None,
) -> list[np.ndarray]:
    """Sample ``captions x seeds`` (caption-major) -> list of uint8 ``(size, size, 3)`` images.

    Image ``(caption c, seed s)`` uses ``torch.Generator().manual_seed(s)`` for its own initial noise,
    so results do not depend on the batching. ``cfg_scale`` is passed as ``guidance_scale`` (guided
    pipelines: classifier-free guidance with the default negative prompt ``""``); None: not passed.
    """
    jobs = [(c, s) for c in captions for s in seeds]
    out: list[np.ndarray] = []
    extra = {} if cfg_scale is None else {"guidance_scale": cfg_scale}
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        result = pipe(
            **extra,
            prompt=[c for c, _ in chunk],
            height=size,
            width=size,
            num_inference_steps=steps,
            max_sequence_length=max_sequence_length,
            generator=[torch.Generator().manual_seed(s) for _, s in chunk],
            output_type="np",
        )
        imgs = np.clip(np.round(result.images * 255.0), 0, 255).astype(np.uint8)  # (B, H, W, 3)
        out.extend(imgs)
    return out


def accuracy_table(results: list[CheckResult]) -> dict[str, float]:
    n = max(1, len(results))
    return {
        "overall": sum(r.ok for r in results) / n,
        "colour": sum(r.colour_ok for r in results) / n,
        "shape": sum(r.shape_ok for r in results) / n,
        "position": sum(r.position_ok for r in results) / n,
    }


def save_grid(images: list[np.ndarray], labels: list[str], oks: list[bool], path: Path, cols: int) -> None:
    """Write a PNG grid (matplotlib), each tile titled with its caption and check result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, label, ok in zip(axes.flat, images, labels, oks):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=6, color="green" if ok else "red")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def guided(pipe) -> bool:
    """Whether the pipeline's ``guidance_scale`` is classifier-free guidance (SD3), not FLUX's embedding."""
    return type(pipe).__name__ == "StableDiffusion3Pipeline"


def report(results: list[CheckResult], labels: list[str], seeds: list[int], title: str) -> dict[str, float]:
    """Print the accuracy table and the failures; returns the accuracy table."""
    acc = accuracy_table(results)
    print(title)
    print(f"{'attribute':<10} accuracy")
    for k, v in acc.items():
        print(f"{k:<10} {100 * v:6.1f}%  ({round(v * len(results))}/{len(results)})")
    per_seed = seeds * (len(labels) // len(seeds))
    failures = [(lab, s, r.reason) for lab, s, r in zip(labels, per_seed, results) if not r.ok]
    if failures:
        print("failures:")
        for lab, s, reason in failures:
            print(f"  seed {s} {lab!r}: {reason}")
    return acc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, default=Path("tiny_flux_eval.png"),
                   help="PNG grid to write (with several --cfg-scale values: one per scale, suffixed _cfgG)")
    p.add_argument("--train-captions", action="store_true", help="evaluate the training captions instead")
    p.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per caption")
    p.add_argument("--steps", type=int, default=None, help="default: the shipped step count")
    p.add_argument("--max-sequence-length", type=int, default=None, help="default: the shipped value")
    p.add_argument("--cfg-scale", type=float, nargs="+", default=None, metavar="G",
                   help="classifier-free guidance scale(s) of a guided (SD3) folder; default: the folder's "
                        "guidance_scale (l2p_tiny.json); 1: no guidance")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write per-image results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    meta = model_defaults(args.model)
    steps = args.steps or meta["num_inference_steps"]
    msl = args.max_sequence_length or meta["max_sequence_length"]
    captions = data.train_captions() if args.train_captions else data.heldout_captions()
    seeds = list(range(args.seeds))
    labels = [c for c in captions for _ in seeds]
    which = "training" if args.train_captions else "held-out"

    pipe = load_pipeline(args.model)
    if not guided(pipe) and args.cfg_scale is not None:
        p.error(f"--cfg-scale needs a guided (SD3) folder; {args.model} holds a {type(pipe).__name__}")
    scales: list[float | None] = [None]  # FLUX: no classifier-free guidance
    if guided(pipe):
        scales = list(args.cfg_scale or [meta.get("guidance_scale", 7.0)])  # 7.0: the SD3 pipeline's default
    runs = []
    for scale in scales:
        t0 = time.time()
        images = sample(pipe, captions, seeds, steps, msl, size=meta.get("height", 64), cfg_scale=scale)
        dt = time.time() - t0
        results = [check(img, cap) for img, cap in zip(images, labels)]
        cfg_text = "" if scale is None else f", cfg scale {scale:g}"
        acc = report(results, labels, seeds, f"{which} captions: {len(captions)} x {len(seeds)} seeds, {steps} steps, "
                                             f"max_sequence_length {msl}{cfg_text}; sampling took {dt:.1f}s")
        out = args.out if len(scales) == 1 else args.out.with_name(f"{args.out.stem}_cfg{scale:g}{args.out.suffix}")
        short = [f"{lab[2:]} s{s}" for lab, s in zip(labels, seeds * len(captions))]
        save_grid(images, short, [r.ok for r in results], out, cols=max(4, min(12, 2 * len(seeds))))
        print(f"wrote {out}")
        runs.append({
            "cfg_scale": scale, "accuracy": acc, "accepted": sum(r.ok for r in results), "total": len(results),
            "results": [
                {"caption": lab, "seed": s, "ok": r.ok, "reason": r.reason, "detected": [r.colour, r.shape, r.position]}
                for lab, s, r in zip(labels, seeds * len(captions), results)
            ],
        })
    if len(runs) > 1:
        print("summary (accepted images per cfg scale):")
        for run in runs:
            print(f"  cfg {run['cfg_scale']:g}: {run['accepted']}/{run['total']} "
                  f"({100 * run['accepted'] / run['total']:.1f}%)")
    if args.json:
        args.json.write_text(json.dumps(runs[0] if len(runs) == 1 else {"runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
