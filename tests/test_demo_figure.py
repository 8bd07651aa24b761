"""The demo's comparison figure: difference maps as stated, no text over text or over an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.text import Text

from l2p.bench import draw_quality
from l2p.demo_figure import Column, compare_figure, diff_map, save_compare


def _columns(rng: np.random.Generator) -> list[Column]:
    ref = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    cols = [Column("full compute\n50/50 steps\nreference", ref, group="full")]
    for m in (10, 5):
        for name in ("L2P", "TaylorSeer-2", "FORA"):
            noisy = np.clip(ref.astype(int) + rng.integers(-3 * m, 3 * m + 1, ref.shape), 0, 255).astype(np.uint8)
            cols.append(Column(f"{name}  {m}/50\n45.3 dB PSNR\n8.8x faster", noisy, "tab:green", str(m)))
    return cols


def _report() -> dict:
    rows = [{"method": "full", "schedule": "all", "full_steps": 50, "flops_reduction": 1.0, "psnr_db": 99.0}]
    for m, psnr in ((10, 50.0), (5, 44.0)):
        rows += [{"method": f"l2p:demo-{m}", "schedule": "own", "full_steps": m, "flops_reduction": 50 / m,
                  "psnr_db": psnr + 3},
                 {"method": "fora", "schedule": "interval", "full_steps": m, "flops_reduction": 50 / m,
                  "psnr_db": psnr}]
    return {"steps": 50, "rows": rows}


def test_diff_map_is_the_amplified_absolute_difference() -> None:
    a = np.array([[[[0, 10, 255]]]], np.uint8)
    b = np.array([[[[3, 0, 200]]]], np.uint8)
    assert diff_map(a, b, 10).tolist() == [[[[30, 100, 255]]]]  # |0-3|*10, |10-0|*10, min(55*10, 255)
    assert diff_map(b, a, 10).tolist() == diff_map(a, b, 10).tolist()


def test_compare_figure_draws_the_difference_and_no_text_overlaps(tmp_path: Path) -> None:
    cols = _columns(np.random.default_rng(0))
    fig = compare_figure(cols, ["a red circle at the top left", "a green square at the bottom", "a blue triangle"],
                         gain=10, title="a title as long as the demo's title is, over the column headers",
                         footnote="PSNR: vs. full compute; faster: measured loop time",
                         draw_plot=lambda ax: draw_quality(ax, _report()))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # each method's second image row is |image - reference| x 10, as drawn
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    want = np.clip(np.abs(cols[1].images[0].astype(int) - cols[0].images[0]) * 10, 0, 255)
    assert any(np.array_equal(np.asarray(s), want) for s in shown)
    image_boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.images]
    found = fig.findobj(lambda a: isinstance(a, Text) and a.get_visible() and bool(a.get_text().strip()))
    texts = list({id(t): t for t in found}.values())  # findobj may visit an artist twice
    boxes = [(t.get_text(), t.get_window_extent(renderer).shrunk(0.98, 0.98)) for t in texts]
    assert any("title as long" in s for s, _ in boxes) and any("|diff| x10" in s for s, _ in boxes)
    for i, (s1, b1) in enumerate(boxes):
        for s2, b2 in boxes[i + 1:]:
            assert not b1.overlaps(b2), f"'{s1}' overlaps '{s2}'"
        for box in image_boxes:
            assert not b1.overlaps(box), f"'{s1}' is drawn over an image"
    save_compare(cols, ["a", "b", "c"], tmp_path / "c.png", gain=10, title="t", footnote="f")
    assert (tmp_path / "c.png").stat().st_size > 5_000
