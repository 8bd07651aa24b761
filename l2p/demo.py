"""``l2p demo``: the whole story on the built-in model, in one command.

1. export the model to a bundle (skipped when up to date);
2. sample held-out captions with full compute, check each image against its caption, write a grid;
3. calibrate an L2P predictor per budget on training captions, bench it against TaylorSeer-2 and
   FORA with :func:`l2p.bench.run_bench` (the same timing and quality as ``l2p bench``), and draw
   full vs. L2P vs. the fixed formulas side by side with their difference to full compute
   (amplified), PSNR and speed-up, beside the quality-vs-FLOPs plot (``--no-compare`` skips this part).
   Speed-ups are timed as ``l2p bench`` times them (:mod:`l2p.timing`: warm-up, interleaved rounds,
   median; above the FLOPs reduction marked as noise).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_json
from .demo_figure import Column, save_compare, save_grid
from .models import BUILTIN
from .sampling.pipeline import Sampler
from .timing import NOISE_NOTE, format_speedup

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


#: the compared methods: (``--method``, display name, colour); ``{M}`` is the budget
METHODS = (("l2p:demo-{M}", "L2P", "tab:green"), ("taylorseer2", "TaylorSeer-2", "tab:orange"),
           ("fora", "FORA", "tab:red"))
GAIN = 20  # amplification of the difference maps
SHOWN = 4  # captions shown in compare.png (the PSNR is over all of them)


def _row(report: dict[str, Any], method: str, budget: int) -> dict[str, Any]:
    """The bench row of ``method`` at ``budget`` on its own schedule (L2P's, or the presets' interval)."""
    for r in report["rows"]:
        if r["method"] == method and r["full_steps"] == budget and r["schedule"] in ("own", "interval"):
            return r
    raise KeyError(f"no bench row for {method} at {budget}")


def _draw_quality(report: dict[str, Any]) -> Any:
    """``draw(ax)``: bench's quality-vs-FLOPs plot of the demo's methods, in the figure's names and colours."""
    from .bench import draw_quality

    names = {m.replace("-{M}", ""): (n, c) for m, n, c in METHODS}

    def draw(ax: Any) -> None:
        draw_quality(ax, report, keep=lambda r: r["schedule"] in ("own", "interval"))
        for line in ax.get_lines():
            name, color = names.get(line.get_label(), (line.get_label(), None))
            line.set_label(name)
            if color:
                line.set_color(color)
        ax.legend(fontsize=9)
        ax.set_title(f"quality vs. FLOPs reduction ({report['steps']} steps)", fontsize=10)

    return draw


def _calibrate(sampler: Sampler, calib: list[str], steps: int, budgets: Sequence[int]) -> None:
    """One L2P predictor ``demo-M`` per budget (skipped when up to date; the capture is shared)."""
    from .calibration.calibrate import CalibrationConfig, Calibrator
    from .progress import terminal_bar

    cond = sampler.encode_for_runs(calib)
    for m in budgets:
        print(f"calibrating L2P for {m}/{steps} steps on {len(calib)} training captions ...")
        t0 = time.perf_counter()
        Calibrator(sampler, cond, CalibrationConfig(steps, m, name=f"demo-{m}", seeds=2),
                   log=lambda s: print("  " + s), progress=terminal_bar).run()
        print(f"  calibration took {time.perf_counter() - t0:.1f} s")


def run_demo(model: str, out: Path, steps: int = 50, budgets: Sequence[int] = (10, 5), compare: bool = True,
             repeats: int = 3) -> None:
    """Export ``model``, write ``grid.png`` (full compute, checked captions) and, with ``compare``,
    ``compare.png``: full vs. L2P vs. the fixed formulas at each budget, with difference maps,
    PSNR, speed-up and the quality-vs-FLOPs plot. Timing and quality come from :func:`l2p.bench.run_bench`."""
    from .bench import format_table, run_bench
    from .export.exporter import export_bundle

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    bundle = export_bundle(model, out / "bundle")
    sampler = Sampler(bundle)
    captions, calib = _captions(model)
    cond = sampler.encode_for_runs(captions)
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
    budgets = list(dict.fromkeys(budgets))
    _calibrate(sampler, calib, steps, budgets)
    print(f"timing and quality, as l2p bench measures them ({len(captions)} held-out captions, seed 0):")
    report = run_bench(sampler, cond, steps, budgets, [m for m, _, _ in METHODS], [0],
                       log=lambda s: print("  " + s), repeats=repeats)
    shown = min(SHOWN, len(captions))
    columns = [Column(f"full compute\n{steps}/{steps} steps\nreference", full.images[:shown], group="full")]
    checks: dict[str, dict[str, list[bool | None]]] = {}  # budget -> method -> verdict per caption
    for m_budget in budgets:
        for method, name, color in METHODS:
            method = method.replace("{M}", str(m_budget))
            row = _row(report, method, m_budget)
            images = sampler.sample(cond, seed=0, steps=steps, method=method, full_steps=m_budget).images
            assert images is not None
            checks.setdefault(str(m_budget), {})[method] = _check(images, captions, model)
            columns.append(Column(f"{name}  {m_budget}/{steps}\n{row['psnr_db']:.1f} dB PSNR\n"
                                  f"{format_speedup(row['speedup'], row['flops_reduction'])} faster", images[:shown], color, str(m_budget)))
    noisy = any(c.header.endswith("* faster") for c in columns)
    path = save_compare(
        columns, captions[:shown], out / "compare.png", gain=GAIN,
        title=f"L2P (learned forecast) vs. fixed formulas (TaylorSeer-2, FORA), "
              f"{' and '.join(f'{m}/{steps}' for m in budgets)} transformer steps\n"
              f"each image, and under it its difference to full compute, amplified x{GAIN}",
        footnote=f"PSNR: vs. full compute, mean over {len(captions)} held-out captions ({shown} shown), seed 0. "
                 "Faster: measured denoising-loop time vs. full compute on this machine "
                 "(bounded by the FLOPs reduction, right)." + (f"\n{NOISE_NOTE}" if noisy else ""),
        draw_plot=_draw_quality(report))
    write_json(out / "compare.json", {**report, "captions": captions, "checker": checks, "gain": GAIN})
    print(format_table(report))
    if ok[0] is not None:
        print("checker, images matching their caption: " + ", ".join(
            f"{m} at {b}: {sum(bool(x) for x in v)}/{len(v)}" for b, per in checks.items() for m, v in per.items()))
    print(f"side by side: {path} (numbers: {out / 'compare.json'})")
    print(f"demo took {time.perf_counter() - t_start:.0f} s")
