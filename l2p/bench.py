"""``l2p bench``: methods at equal budgets on the same seeds.

For each method: full steps, transformer-FLOPs reduction counted from the ONNX graphs (predictor
and head included), measured latency speedup of the denoising loop, quality against full compute
and peak resident memory. Torch-free.

Quality, each the mean over images of the PSNR against the full-compute image from the same seed:

- ``PSNR dB``: the saved 8-bit images (peak 255), and their SSIM;
- ``float dB``: the decoded images before 8-bit rounding (peak 1). Above ~55 dB the 8-bit
  rounding flips only a few pixels' values, so this is the finer measure of the same images;
- ``latent dB``: the final latents (peak: the reference's value range).

A bundle without an image decoder has only the latent measures (``PSNR dB`` is then on latents).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .engine.flops import count_flops
from .metrics import image_metrics, psnr_db
from .errors import InputError
from .predictor.presets import PRESETS
from .predictor.schedule import interval_schedule
from .sampling.loop import Forecaster
from .sampling.methods import l2p_forecaster, preset_forecaster
from .sampling.settings import Method
from .sampling.pipeline import Sampler, to_uint8

BENCH_SEED0 = 1000  # bench seeds start here: disjoint from calibration seeds (0, 1, ...)


class PeakRSS:
    """Samples the process's resident set size in a thread; ``peak_mb`` after ``stop``."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.rss()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@dataclass
class Row:
    method: str
    schedule: str
    full_steps: int
    flops_reduction: float
    speedup: float
    psnr_db: float
    ssim: float
    seconds: float
    peak_rss_mb: float
    psnr_float_db: float = float("nan")
    latent_psnr_db: float = float("nan")


class Bench:
    """Runs methods on one sampler, one conditioning set and fixed seeds."""

    def __init__(self, sampler: Sampler, cond: dict[str, np.ndarray], steps: int, seeds: Sequence[int],
                 log: Callable[[str], None] = print) -> None:
        self.s = sampler
        self.cond = cond
        self.steps = steps
        self.seeds = list(seeds)
        self.log = log
        b = sampler.bundle
        dims = self._dims()
        self.f_transformer = count_flops(b.onnx_path("transformer"), dims, strict=False)
        self.f_head = count_flops(b.onnx_path("head"), dims, strict=False) if b.has("head") else 0
        self._ref: dict[str, Any] | None = None

    def _dims(self) -> dict[str, int]:
        shape = self.s.rt.latent_shape(1)
        feed = self.s.rt.static_inputs({k: v[:1] for k, v in self.cond.items()})
        dims = self.s.bundle.spec("transformer").check_feed(
            {**feed, **self.s.rt.step_inputs(np.zeros(shape, np.float32), 1.0)}, "bench")
        return dims

    def _run(self, fc: Forecaster | None) -> dict[str, Any]:
        """``images`` (uint8, or for bundles without an image decoder spatial latents), ``float``
        images (or ``None``), ``finals`` (packed final latents), median ``seconds``, peak ``mem`` MB."""
        images, floats, finals, secs = [], [], [], []
        self.s.sample(self.cond, self.seeds[0], self.steps, forecaster=fc, decode=False)  # warm-up
        with PeakRSS() as mem:
            for seed in self.seeds:
                r = self.s.sample(self.cond, seed, self.steps, forecaster=fc, decode=False)
                secs.append(r.seconds)
                finals.append(r.final)
        for final in finals:  # decoding is not part of the timed loop
            fl = self.s.decode_float(final) if self.s.bundle.has("vae_decoder") else None
            floats.append(fl)
            images.append(to_uint8(fl) if fl is not None else self.s.rt.to_vae_latent(final))
        return {"images": np.concatenate(images), "finals": np.concatenate(finals),
                "float": None if floats[0] is None else np.concatenate(floats),
                "seconds": float(np.median(secs)), "mem": mem.peak_mb}

    def reference(self) -> dict[str, Any]:
        if self._ref is None:
            self.log(f"full compute: {self.steps} steps x {len(self.seeds)} seeds ...")
            self._ref = self._run(None)
        return self._ref

    def row(self, label: str, fc: Forecaster | None, schedule: str) -> Row:
        ref = self.reference()
        got = ref if fc is None else self._run(fc)
        psnr, ssim = image_metrics(got["images"], ref["images"])
        fpsnr = psnr_db(got["float"], ref["float"], 1.0) if ref["float"] is not None else float("nan")
        lpsnr = psnr_db(got["finals"], ref["finals"])
        full = self.steps if fc is None else len(fc.table.computed)
        row = Row(label, schedule, full, self.flops_reduction(fc), ref["seconds"] / got["seconds"], psnr, ssim,
                  got["seconds"], got["mem"], fpsnr, lpsnr)
        self.log(f"  {label:22s} {full:3d} full steps  {row.flops_reduction:5.2f}x FLOPs  "
                 f"{row.speedup:5.2f}x latency  {psnr:6.2f} dB  float {fpsnr:6.2f} dB  latent {lpsnr:6.2f} dB  "
                 f"SSIM {ssim:.4f}")
        return row

    def flops_reduction(self, fc: Forecaster | None) -> float:
        if fc is None:
            return 1.0
        m = len(fc.table.computed)
        pred = predictor_flops(fc, self.s.rt.latent_shape(1))
        extra = self.f_head if fc.tap != "output" else 0
        total = m * self.f_transformer + (self.steps - m) * (pred + extra)
        return self.steps * self.f_transformer / total


def predictor_flops(fc: Forecaster, latent_shape: tuple[int, ...]) -> int:
    """FLOPs of one predictor-engine call, counted from its ONNX graph."""
    import onnx

    from .predictor.graph import build_predictor_graph

    spec = fc.engine.spec
    hist = spec.input("history")
    dims = {d: v for d, v in zip(hist.shape[1:], latent_shape) if isinstance(d, str)}
    fspec = spec.output("feature")
    lat = spec.input("latent") if "latent" in spec.input_names else None
    model: onnx.ModelProto = build_predictor_graph(fc.table, fspec, lat)
    if fc.tap != "output":  # residual tap: its own channel count; dims by name still hold
        dims = {"batch": latent_shape[0], "img_seq": latent_shape[1]}
    return count_flops(model, dims, strict=False)


def run_bench(sampler: Sampler, cond: dict[str, np.ndarray], steps: int, budgets: Sequence[int],
              methods: Sequence[str], seeds: Sequence[int], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Bench ``methods`` at each budget. ``l2p:NAME`` may contain ``{M}`` (the budget); a method
    named twice is benched once."""
    methods = list(dict.fromkeys(methods))
    bench = Bench(sampler, cond, steps, seeds, log)
    rows = [bench.row("full", None, "all")]
    for m_budget in budgets:
        log(f"budget {m_budget}/{steps} full steps:")
        l2p_scheds: dict[tuple[int, ...], str] = {}  # schedule -> the predictor that chose it
        for meth in methods:
            if meth == "full":
                continue
            parsed = Method.parse(meth.replace("{M}", str(m_budget)))
            if parsed.kind == "l2p":
                fc = l2p_forecaster(sampler.bundle, parsed.name, steps, m_budget)
                l2p_scheds.setdefault(fc.table.computed, parsed.name)
                rows.append(bench.row(str(parsed), fc, "own"))
        for meth in methods:
            if meth in PRESETS:
                fc = preset_forecaster(sampler.bundle, meth, steps, m_budget)
                rows.append(bench.row(meth, fc, "interval"))
                for sched, owner in l2p_scheds.items():
                    if sched != interval_schedule(steps, m_budget):
                        fc = preset_forecaster(sampler.bundle, meth, steps, m_budget, schedule=sched)
                        rows.append(bench.row(meth, fc, f"={owner}"))
            elif meth != "full" and not meth.startswith("l2p"):
                raise InputError(f"unknown method '{meth}' for bench")
    return {"bundle": str(sampler.bundle.root), "bundle_hash": sampler.bundle.hash, "steps": steps,
            "seeds": list(seeds), "transformer_flops": bench.f_transformer,
            "rows": [asdict(r) for r in rows]}


def format_table(report: dict[str, Any]) -> str:
    head = (f"{'method':22s} {'schedule':16s} {'full':>4s} {'FLOPs red.':>10s} {'speedup':>8s} "
            f"{'PSNR dB':>8s} {'float dB':>8s} {'latent dB':>9s} {'SSIM':>7s} {'s/run':>7s} {'peak MB':>8s}")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['method']:22s} {r['schedule']:16s} {r['full_steps']:4d} {r['flops_reduction']:9.2f}x "
                     f"{r['speedup']:7.2f}x {r['psnr_db']:8.2f} {r.get('psnr_float_db', float('nan')):8.2f} "
                     f"{r.get('latent_psnr_db', float('nan')):9.2f} {r['ssim']:7.4f} {r['seconds']:7.3f} "
                     f"{r['peak_rss_mb']:8.0f}")
    return "\n".join(lines)


def draw_quality(ax: Any, report: dict[str, Any], keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> None:
    """Quality (PSNR) vs. FLOPs reduction on a matplotlib ``ax``, one line per method (the rows
    ``keep`` accepts; full compute is never drawn)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in report["rows"]:
        if r["method"] == "full" or not keep(r):
            continue
        key = r["method"] if r["schedule"] in ("interval", "own") else f"{r['method']} (schedule {r['schedule']})"
        key = key.replace("-" + str(r["full_steps"]), "")  # one line per predictor family over budgets
        series.setdefault(key, []).append((r["flops_reduction"], min(r["psnr_db"], 99)))
    for key, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key)
    ax.set_xlabel("transformer FLOPs reduction (x)")
    ax.set_ylabel("PSNR vs. full compute (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot(report: dict[str, Any], path: Path) -> Path:
    """PNG of quality (PSNR) vs. FLOPs reduction, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_open

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    draw_quality(ax, report)
    ax.set_title(f"quality vs. speed-up, {report['steps']} steps")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path
