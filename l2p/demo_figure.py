"""The demo's figures: the caption grid and the side-by-side comparison with difference maps.

Torch-free (numpy + matplotlib). Images are ``(B, H, W, 3)`` uint8 throughout.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_open


@dataclass(frozen=True)
class Column:
    """One column of the comparison: a header, its images, the header's colour and its group.

    ``images``: ``(B, H, W, 3)`` uint8, one per caption, same order as the reference column's.
    ``header``: short lines (name and budget, PSNR, speed-up), drawn above the column.
    ``group``: columns of one group (e.g. one budget) stand together, a gap between groups.
    """

    header: str
    images: np.ndarray
    color: str = "black"
    group: str = ""


def diff_map(images: np.ndarray, reference: np.ndarray, gain: float) -> np.ndarray:
    """``|images - reference| * gain`` per channel, clipped to 0..255.

    Args:
        images, reference: ``(B, H, W, 3)`` uint8 of equal shape.
        gain: the amplification (a difference of ``255 / gain`` or more shows as full intensity).

    Returns:
        ``(B, H, W, 3)`` uint8.
    """
    if images.shape != reference.shape:
        raise ValueError(f"difference of images {images.shape} and reference {reference.shape}")
    d = np.abs(images.astype(np.int16) - reference.astype(np.int16)).astype(np.float32) * gain
    return np.clip(np.rint(d), 0, 255).astype(np.uint8)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    _pyplot().close(fig)
    return path


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def save_grid(columns: dict[str, np.ndarray], captions: list[str], path: Path,
              marks: dict[str, list[bool | None]] | None = None) -> Path:
    """A PNG grid: one row per caption, one column per method (``(B, H, W, 3)`` uint8 each),
    with the caption checker's verdict under each image where ``marks`` has one."""
    plt = _pyplot()
    rows, cols = len(captions), len(columns)
    left = 1.6  # inches for the wrapped captions
    width = 1.7 * cols + left
    fig, axes = plt.subplots(rows, cols, figsize=(width, 1.75 * rows + 0.6), dpi=100, squeeze=False)
    for c, (name, imgs) in enumerate(columns.items()):
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(imgs[r], interpolation="nearest")
            _bare(ax)
            mark = (marks or {}).get(name, [None] * rows)[r]
            if mark is not None:
                ax.set_xlabel("checker: ok" if mark else "checker: mismatch", fontsize=7,
                              color="green" if mark else "red", labelpad=2)
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(textwrap.fill(captions[r], 18), fontsize=8, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=left / width, right=0.98, top=1 - 0.55 / (1.75 * rows + 0.6), bottom=0.03,
                        wspace=0.08, hspace=0.35)
    return _save(fig, path)


def save_compare(columns: Sequence[Column], captions: list[str], path: Path, *, gain: float,
                 title: str, footnote: str, draw_plot: Callable[[Any], None] | None = None) -> Path:
    """The comparison PNG (see :func:`compare_figure`)."""
    return _save(compare_figure(columns, captions, gain=gain, title=title, footnote=footnote,
                                draw_plot=draw_plot), path)


def compare_figure(columns: Sequence[Column], captions: list[str], *, gain: float, title: str,
                   footnote: str, draw_plot: Callable[[Any], None] | None = None) -> Any:
    """The comparison as a matplotlib figure: per caption a row of images and under it a row of
    difference maps (``|image - first column| x gain``); the first column is the reference.
    ``draw_plot(ax)``, when given, draws a panel to the right (the quality-vs-speed-up plot)."""
    plt = _pyplot()
    ref = columns[0].images
    slots: list[int | None] = []  # grid column -> index into columns (None: the gap between groups)
    for i, col in enumerate(columns):
        if i and col.group != columns[i - 1].group:
            slots.append(None)
        slots.append(i)
    gap = 0.2  # a gap's width, in cells
    rows, cell, left, plot_w = 2 * len(captions), 1.25, 1.5, 5.2 if draw_plot else 0.0
    grid_w = left + cell * (len(columns) + gap * slots.count(None))
    fig = plt.figure(figsize=(grid_w + plot_w, cell * rows + 1.9), dpi=100, layout="constrained")
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.supxlabel(footnote, fontsize=8, color="0.3")
    if draw_plot:
        sf_grid, sf_plot = fig.subfigures(1, 2, width_ratios=[grid_w, plot_w], wspace=0.02)
    else:
        sf_grid, sf_plot = fig, None
    axes = sf_grid.subplots(rows, len(slots), squeeze=False, gridspec_kw={
        "wspace": 0.02, "hspace": 0.02, "width_ratios": [gap if i is None else 1 for i in slots]})
    for c, i in enumerate(slots):
        if i is None:
            for ax in axes[:, c]:
                ax.set_axis_off()
            continue
        col = columns[i]
        for r in range(len(captions)):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            top.imshow(col.images[r], interpolation="nearest")
            if i == 0:
                bottom.text(0.5, 0.5, "reference", ha="center", va="center", fontsize=8, color="0.4",
                            transform=bottom.transAxes)
                bottom.set_facecolor("0.95")
            else:
                bottom.imshow(diff_map(col.images[r:r + 1], ref[r:r + 1], gain)[0], interpolation="nearest")
            for ax in (top, bottom):
                _bare(ax)
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if i == 0:
                top.set_ylabel(textwrap.fill(captions[r], 16), fontsize=8, rotation=0, ha="right", va="center")
                bottom.set_ylabel(f"|diff| x{gain:g}", fontsize=8, rotation=0, ha="right", va="center",
                                  color="0.3")
        axes[0, c].set_title(col.header, fontsize=8, color=col.color, linespacing=1.3)
    if sf_plot is not None:
        ax = sf_plot.subplots()
        draw_plot(ax)
        ax.set_box_aspect(0.9)
    return fig
