#!/usr/bin/env python
"""Evaluate the shipped tiny FLUX model with the image-analysis checker.

Loads the folder with ``diffusers.FluxPipeline.from_pretrained`` (offline), samples every held-out
caption (or, with ``--train-captions``, every training caption) for seeds ``0..N-1`` at the shipped
step count, checks each image with :func:`l2p.tinymodel.checker.check`, prints the accuracy table
and writes a captioned PNG grid.

Usage::

    python tools/eval_tiny.py --out /tmp/tiny_heldout.png
    python tools/eval_tiny.py --train-captions --out /tmp/tiny_train.png
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
    """``FluxPipeline.from_pretrained(path)`` in fp32 on CPU, progress bar off."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(path), local_files_only=True)
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
) -> list[np.ndarray]:
    """Sample ``captions x seeds`` (caption-major) -> list of uint8 ``(size, size, 3)`` images.

    Image ``(caption c, seed s)`` uses ``torch.Generator().manual_seed(s)`` for its own initial noise,
    so results do not depend on the batching.
    """
    jobs = [(c, s) for c in captions for s in seeds]
    out: list[np.ndarray] = []
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        result = pipe(
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, default=Path("tiny_flux_eval.png"), help="PNG grid to write")
    p.add_argument("--train-captions", action="store_true", help="evaluate the training captions instead")
    p.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per caption")
    p.add_argument("--steps", type=int, default=None, help="default: the shipped step count")
    p.add_argument("--max-sequence-length", type=int, default=None, help="default: the shipped value")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write per-image results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    meta = model_defaults(args.model)
    steps = args.steps or meta["num_inference_steps"]
    msl = args.max_sequence_length or meta["max_sequence_length"]
    captions = data.train_captions() if args.train_captions else data.heldout_captions()
    seeds = list(range(args.seeds))

    t0 = time.time()
    pipe = load_pipeline(args.model)
    images = sample(pipe, captions, seeds, steps, msl, size=meta.get("height", 64))
    dt = time.time() - t0
    labels = [c for c in captions for _ in seeds]
    results = [check(img, cap) for img, cap in zip(images, labels)]

    which = "training" if args.train_captions else "held-out"
    acc = accuracy_table(results)
    print(f"{which} captions: {len(captions)} x {len(seeds)} seeds, {steps} steps, max_sequence_length {msl}")
    print(f"sampling took {dt:.1f}s")
    print(f"{'attribute':<10} accuracy")
    for k, v in acc.items():
        print(f"{k:<10} {100 * v:6.1f}%  ({round(v * len(results))}/{len(results)})")
    failures = [(lab, s, r.reason) for lab, s, r in zip(labels, seeds * len(captions), results) if not r.ok]
    if failures:
        print("failures:")
        for lab, s, reason in failures:
            print(f"  seed {s} {lab!r}: {reason}")
    short = [f"{lab[2:]} s{s}" for lab, s in zip(labels, seeds * len(captions))]
    save_grid(images, short, [r.ok for r in results], args.out, cols=max(4, min(12, 2 * len(seeds))))
    print(f"wrote {args.out}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "accuracy": acc,
                    "results": [
                        {"caption": lab, "seed": s, "ok": r.ok, "reason": r.reason, "detected": [r.colour, r.shape, r.position]}
                        for lab, s, r in zip(labels, seeds * len(captions), results)
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
