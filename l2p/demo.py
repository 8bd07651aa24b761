"""``l2p demo``: the whole story on the built-in model, in one command.

1. export the model to a bundle (skipped when up to date);
2. sample held-out captions with full compute, check each image against its caption, write a grid;
3. calibrate an L2P predictor on training captions and show full vs. L2P vs. fixed-formula caches
   side by side, with speed and PSNR (``--no-compare`` skips this part). Speed-ups are timed as
   ``l2p bench`` times them (:mod:`l2p.timing`: warm-up, interleaved rounds, median and range).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .metrics import image_metrics
from .models import BUILTIN
from .timing import NOISE_NOTE, format_speedup, interleaved, is_noise

CAPTIONS_FALLBACK = ["a red circle at the top left", "a blue square at the center",
                     "a green triangle at the bottom right", "a yellow circle at the right"]


def _captions(model: str) -> tuple[list[str], list[str]]:
    """(captions to show, calibration captions) for the model."""
    if model in BUILTIN:
        from .tinymodel.data import heldout_captions, train_captions

        train = train_captions()
        rng = np.random.default_rng(0)
        calib = [train[i] for i in rng.choice(len(train), size=min(32, len(train)), replace=False)]
        return heldout_captions()[:8], calib
    return CAPTIONS_FALLBACK, CAPTIONS_FALLBACK


def _check(images: np.ndarray, captions: list[str], model: str) -> list[bool | None]:
    if model not in BUILTIN:
        return [None] * len(captions)
    from .tinymodel.checker import check

    return [check(img, c).ok for img, c in zip(images, captions)]


def save_grid(columns: dict[str, np.ndarray], captions: list[str], path: Path,
              marks: dict[str, list[bool | None]] | None = None, title: str = "") -> Path:
    """A PNG grid: one row per caption, one column per method (``(B, H, W, 3)`` uint8 each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_open

    import textwrap

    rows, cols = len(captions), len(columns)
    left = 1.6  # inches for the wrapped captions
    width = 1.7 * cols + left
    fig, axes = plt.subplots(rows, cols, figsize=(width, 1.75 * rows + 0.6), dpi=100, squeeze=False)
    for c, (name, imgs) in enumerate(columns.items()):
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(imgs[r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            mark = (marks or {}).get(name, [None] * rows)[r]
            if mark is not None:
                ax.set_xlabel("checker: ok" if mark else "checker: mismatch", fontsize=7,
                              color="green" if mark else "red", labelpad=2)
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(textwrap.fill(captions[r], 18), fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=left / width, right=0.98, top=1 - 0.55 / (1.75 * rows + 0.6), bottom=0.03,
                        wspace=0.08, hspace=0.35)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def run_demo(model: str, out: Path, steps: int = 50, full_steps: int = 10, compare: bool = True,
             repeats: int = 3) -> None:
    from .export.exporter import export_bundle
    from .sampling.pipeline import Sampler

    out.mkdir(parents=True, exist_ok=True)
    bundle = export_bundle(model, out / "bundle")
    sampler = Sampler(bundle)
    captions, calib = _captions(model)
    cond = sampler.encode(captions)
    full = sampler.sample(cond, seed=0, steps=steps)
    assert full.images is not None
    ok = _check(full.images, captions, model)
    grid = save_grid({f"full ({steps} steps)": full.images}, captions, out / "grid.png",
                     {f"full ({steps} steps)": ok})
    if ok[0] is not None:
        print(f"checker: {sum(bool(x) for x in ok)}/{len(ok)} images match their caption")
    print(f"full compute: {full.seconds:.2f} s for {len(captions)} images -> grid: {grid}")
    if not compare:
        return
    from .calibration.calibrate import CalibrationConfig, Calibrator
    from .progress import terminal_bar

    print(f"calibrating an L2P predictor on {len(calib)} training captions ...")
    t0 = time.perf_counter()
    Calibrator(sampler, sampler.encode(calib), CalibrationConfig(steps, full_steps, name=f"demo-{full_steps}",
               seeds=2), log=lambda s: print("  " + s), progress=terminal_bar).run()
    print(f"  calibration took {time.perf_counter() - t0:.1f} s")
    columns = {f"full ({steps})": full.images}
    marks = {f"full ({steps})": ok}
    methods = (f"l2p:demo-{full_steps}", "taylorseer2", "fora")
    results = {m: sampler.sample(cond, seed=0, steps=steps, method=m, full_steps=full_steps) for m in methods}
    # the runs above (and the first full run) were the warm-ups; now interleaved timed rounds
    tasks = {"full": lambda: sampler.sample(cond, seed=0, steps=steps, decode=False).seconds}
    for m in methods:
        tasks[m] = lambda m=m: sampler.sample(cond, seed=0, steps=steps, method=m, full_steps=full_steps,
                                              decode=False).seconds
    times = interleaved(tasks, repeats=repeats, warmup=0)
    bound = steps / full_steps  # the transformer-FLOPs reduction, an upper bound on any real speed-up
    lines = [f"{'method':14s} {'full steps':>10s} {'speed-up':>9s} {'range':>11s} {'PSNR dB':>8s} "
             f"{'SSIM':>6s}  checker"]
    for method, r in results.items():
        assert r.images is not None
        psnr, ssim = image_metrics(r.images, full.images)
        m_ok = _check(r.images, captions, model)
        label = f"{method.split(':')[0]} ({full_steps}/{steps})"
        columns[label], marks[label] = r.images, m_ok
        acc = f"{sum(bool(x) for x in m_ok)}/{len(m_ok)}" if m_ok[0] is not None else "-"
        speed = times[method].ratio_to(times["full"])
        lines.append(f"{method.split(':')[0]:14s} {full_steps:10d} {format_speedup(speed.median, bound):>9s} "
                     f"{speed.low:5.2f}-{speed.high:<5.2f} {psnr:8.2f} {ssim:6.3f}  {acc}")
    lines.append(f"speed-up: denoising loop, median of {repeats} interleaved rounds against full compute "
                 f"({steps / full_steps:.1f}x fewer transformer steps)")
    if any(is_noise(times[m].ratio_to(times["full"]).median, bound) for m in methods):
        lines.append(NOISE_NOTE)
    path = save_grid(columns, captions, out / "compare.png", marks,
                     title=f"full compute vs. cached sampling at {full_steps}/{steps} transformer steps")
    print("\n".join(lines))
    print(f"side by side: {path}")
