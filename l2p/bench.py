"""``l2p bench``: methods at equal budgets on the same seeds.

For each method: full steps, transformer-FLOPs reduction counted from the ONNX graphs (predictor
and head included; under classifier-free guidance a computed step counts both branches, and a
forecast of both branches counts the predictor at twice the batch), measured latency speedup of the denoising loop (median and range of
interleaved rounds, :mod:`l2p.timing`; above the FLOPs reduction it is marked as noise), quality
against full compute and peak resident memory. Torch-free.

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
from .predictor.schedule import interval_schedule, taylorseer_pattern
from .sampling.loop import Forecaster
from .sampling.guidance import split_conditioning
from .sampling.methods import l2p_forecaster, preset_forecaster
from .sampling.settings import Method, RunSettings
from .sampling.pipeline import Sampler, to_uint8
from .timing import NOISE_NOTE, format_speedup, interleaved, is_noise

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
    speedup: float  # median over the timed rounds of (full run's seconds / this run's seconds), paired per round
    psnr_db: float
    ssim: float
    seconds: float  # median seconds per run (denoising loop only)
    peak_rss_mb: float
    psnr_float_db: float = float("nan")
    latent_psnr_db: float = float("nan")
    speedup_low: float = float("nan")  # range of the per-round speed-ups
    speedup_high: float = float("nan")


@dataclass
class Entry:
    """One method to bench: its label, forecaster (``None`` = full compute) and schedule name."""

    label: str
    fc: Forecaster | None
    schedule: str


class Bench:
    """Runs methods on one sampler, one conditioning set and fixed seeds.

    Each method first runs once per seed, untimed: that gives its images (quality), its peak
    memory, and warms it up. Then :func:`l2p.timing.interleaved` times ``repeats`` rounds, each
    running every method once (seed ``seeds[0]``), so load that comes and goes hits all alike.
    """

    def __init__(self, sampler: Sampler, cond: dict[str, np.ndarray], steps: int, seeds: Sequence[int],
                 log: Callable[[str], None] = print, repeats: int = 3) -> None:
        if repeats < 1:
            raise InputError(f"--repeats {repeats}: give at least 1 timed round")
        self.s = sampler
        self.cond = cond
        self.steps = steps
        self.seeds = list(seeds)
        if not self.seeds:
            raise InputError("bench needs at least one seed; give --seeds N with N >= 1")
        self.log = log
        self.repeats = repeats
        b = sampler.bundle
        self.cfg_scale = sampler.run_cfg_scale
        self.branch_forecast = self.cfg_scale > 1 and sampler.cfg_forecast == "branches"
        pos, neg = split_conditioning(sampler.rt, cond, self.cfg_scale > 1)
        dims = self._dims(pos)
        self.f_transformer = count_flops(b.onnx_path("transformer"), dims, strict=False)  # one branch, one row
        #: a computed step: both branches under guidance (the negative one at its own text length)
        self.f_step = self.f_transformer + (0 if neg is None else
                                            count_flops(b.onnx_path("transformer"), self._dims(neg), strict=False))
        self.f_head = count_flops(b.onnx_path("head"), dims, strict=False) if b.has("head") else 0

    def _dims(self, cond: dict[str, np.ndarray]) -> dict[str, int]:
        shape = self.s.rt.latent_shape(1)
        feed = self.s.rt.static_inputs({k: v[:1] for k, v in cond.items()})
        dims = self.s.bundle.spec("transformer").check_feed(
            {**feed, **self.s.rt.step_inputs(np.zeros(shape, np.float32), 1.0)}, "bench")
        return dims

    def outputs(self, fc: Forecaster | None) -> dict[str, Any]:
        """One untimed run per seed: ``images`` (uint8, or for bundles without an image decoder
        spatial latents), ``float`` images (or ``None``), ``finals`` (packed final latents), peak ``mem`` MB."""
        images, floats, finals = [], [], []
        with PeakRSS() as mem:
            for seed in self.seeds:
                finals.append(self.s.sample(self.cond, seed, self.steps, forecaster=fc, decode=False).final)
        for final in finals:  # decoding is not part of the loop
            fl = self.s.decode_float(final) if self.s.bundle.has("vae_decoder") else None
            floats.append(fl)
            images.append(to_uint8(fl) if fl is not None else self.s.rt.to_vae_latent(final))
        return {"images": np.concatenate(images), "finals": np.concatenate(finals),
                "float": None if floats[0] is None else np.concatenate(floats), "mem": mem.peak_mb}

    def rows(self, entries: Sequence[Entry]) -> list[Row]:
        """Quality, memory and timing of ``entries``; the first must be full compute (the reference)."""
        if not entries or entries[0].fc is not None:
            raise InputError("bench: the first entry must be full compute (the reference)")
        outs = []
        for e in entries:
            self.log(f"  {e.label} ({e.schedule}): {len(self.seeds)} seed(s) ...")
            outs.append(self.outputs(e.fc))
        self.log(f"timing: {self.repeats} interleaved rounds of {len(entries)} runs ...")
        seed = self.seeds[0]
        tasks = {str(n): (lambda fc=e.fc: self.s.sample(self.cond, seed, self.steps, forecaster=fc,
                                                         decode=False).seconds)
                 for n, e in enumerate(entries)}
        times = interleaved(tasks, repeats=self.repeats, warmup=0)
        ref, ref_t = outs[0], times["0"]
        rows = []
        for n, (e, got) in enumerate(zip(entries, outs)):
            psnr, ssim = image_metrics(got["images"], ref["images"])
            fpsnr = psnr_db(got["float"], ref["float"], 1.0) if ref["float"] is not None else float("nan")
            speed = times[str(n)].ratio_to(ref_t)
            full = self.steps if e.fc is None else len(e.fc.table.computed)
            rows.append(Row(e.label, e.schedule, full, self.flops_reduction(e.fc), speed.median, psnr, ssim,
                            times[str(n)].median, got["mem"], fpsnr, psnr_db(got["finals"], ref["finals"]),
                            speed.low, speed.high))
        return rows

    def flops_reduction(self, fc: Forecaster | None) -> float:
        if fc is None:
            return 1.0
        m = len(fc.table.computed)
        pred = predictor_flops(fc, self.s.rt.latent_shape(2 if self.branch_forecast else 1))
        extra = self.f_head if fc.tap != "output" else 0
        total = m * self.f_step + (self.steps - m) * (pred + extra)
        return self.steps * self.f_step / total


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


def sampler_settings(sampler: Sampler) -> RunSettings:
    """The classifier-free guidance of ``sampler``'s runs, as settings (for predictor checks)."""
    return RunSettings(cfg_scale=sampler.cfg_scale, cfg_forecast=sampler.cfg_forecast)


def borrowed(owner: str) -> str:
    """The ``schedule`` label of a preset row run on the computed steps that predictor ``l2p:owner`` chose."""
    return f"of l2p:{owner}"


def check_methods(sampler: Sampler, methods: Sequence[str], steps: int, budgets: Sequence[int],
                  schedule: tuple[int, ...] | None = None) -> None:
    """Refuse, before any compute, a method name bench does not know or an ``l2p:NAME``
    predictor (``{M}`` = each budget) that is missing or made for another bundle, step count,
    budget or (given a ``schedule``) other computed steps; the message says how to make a matching one."""
    from .predictor.artifact import load_predictor
    from .sampling.methods import cfg_flags, expectation

    for meth in methods:
        for m_budget in budgets:
            parsed = Method.parse(meth.replace("{M}", str(m_budget)))
            if parsed.kind != "l2p":
                continue
            folder = sampler.bundle.predictors_dir / parsed.name
            if not (folder / "predictor.json").is_file():
                raise InputError(f"--methods {meth}: bundle {sampler.bundle.root} has no predictor '{parsed.name}' "
                                 f"for budget {m_budget}; make it with: l2p calibrate {sampler.bundle.root} --steps "
                                 f"{steps} --full-steps {m_budget} --name {parsed.name}"
                                 f"{cfg_flags(sampler.bundle, sampler_settings(sampler))} (or bench --calibrate)")
            load_predictor(folder, expect=expectation(sampler.bundle, steps, m_budget, schedule,
                                                      sampler_settings(sampler)))


#: ``--preset-schedules`` names: the presets' even interval schedule and diffusers' TaylorSeer pattern
PRESET_SCHEDULES = {"interval": interval_schedule, "taylorseer": taylorseer_pattern}


def run_bench(sampler: Sampler, cond: dict[str, np.ndarray], steps: int, budgets: Sequence[int],
              methods: Sequence[str], seeds: Sequence[int], log: Callable[[str], None] = print,
              repeats: int = 3, schedule: tuple[int, ...] | None = None,
              preset_schedules: Sequence[str] = ("interval",)) -> dict[str, Any]:
    """Bench ``methods`` at each budget. ``l2p:NAME`` may contain ``{M}`` (the budget); a method
    named twice is benched once. Every method is checked (:func:`check_methods`) before the
    full-compute reference runs; all methods of all budgets are timed together, interleaved.
    Presets run on each of ``preset_schedules`` (:data:`PRESET_SCHEDULES`; a schedule two names give
    runs once) and on every predictor's schedule. With a ``schedule`` (its count the one budget)
    presets run on it (schedule ``given``) instead, and every predictor must have been calibrated for it."""
    methods = list(dict.fromkeys(methods))
    unknown = [n for n in preset_schedules if n not in PRESET_SCHEDULES]
    if unknown or not preset_schedules:
        raise InputError(f"--preset-schedules {','.join(preset_schedules)}: choose one or more of "
                         f"{', '.join(PRESET_SCHEDULES)}")
    if schedule is not None and list(budgets) != [len(schedule)]:
        raise InputError(f"bench: schedule {list(schedule)} has {len(schedule)} computed steps, but the budgets "
                         f"are {list(budgets)}")
    check_methods(sampler, methods, steps, budgets, schedule)
    bench = Bench(sampler, cond, steps, seeds, log, repeats)
    entries = [Entry("full", None, "all")]
    for m_budget in budgets:
        l2p_scheds: dict[tuple[int, ...], str] = {}  # schedule -> the predictor that chose it
        for meth in methods:
            if meth == "full":
                continue
            parsed = Method.parse(meth.replace("{M}", str(m_budget)))
            if parsed.kind == "l2p":
                fc = l2p_forecaster(sampler.bundle, parsed.name, steps, m_budget, schedule=schedule,
                                    settings=sampler_settings(sampler))
                l2p_scheds.setdefault(fc.table.computed, parsed.name)
                entries.append(Entry(str(parsed), fc, "own"))
        # schedule -> its label: the given one, or each named preset schedule, then the predictors'
        own: dict[tuple[int, ...], str] = {schedule: "given"} if schedule is not None else {}
        if schedule is None:
            for name in preset_schedules:
                own.setdefault(PRESET_SCHEDULES[name](steps, m_budget), name)
        for sched, owner in l2p_scheds.items():
            own.setdefault(sched, borrowed(owner))
        for meth in methods:
            if meth in PRESETS:
                for sched, label in own.items():
                    fc = preset_forecaster(sampler.bundle, meth, steps, m_budget, schedule=sched)
                    entries.append(Entry(meth, fc, label))
    log(f"{len(entries)} runs: full compute and {len(entries) - 1} cached at budgets {list(budgets)}/{steps}")
    rows = bench.rows(entries)
    return {"bundle": str(sampler.bundle.root), "bundle_hash": sampler.bundle.hash, "steps": steps,
            "seeds": list(seeds), "repeats": repeats, "transformer_flops": bench.f_transformer,
            "transformer_flops_per_step": bench.f_step, "cfg_scale": bench.cfg_scale,
            "cfg_forecast": sampler.cfg_forecast if bench.cfg_scale > 1 else None,
            "rows": [asdict(r) for r in rows]}


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table; speed-ups above the FLOPs reduction are marked as noise."""
    head = (f"{'method':22s} {'schedule':16s} {'full':>4s} {'FLOPs red.':>10s} {'speedup':>8s} {'range':>11s} "
            f"{'of FLOPs':>8s} {'PSNR dB':>8s} {'float dB':>8s} {'latent dB':>9s} {'SSIM':>7s} {'s/run':>7s} "
            f"{'peak MB':>8s}")
    lines = [head, "-" * len(head)]
    noisy = False
    for r in report["rows"]:
        lo, hi = r.get("speedup_low", float("nan")), r.get("speedup_high", float("nan"))
        noisy = noisy or is_noise(r["speedup"], r["flops_reduction"])
        lines.append(f"{r['method']:22s} {r['schedule']:16s} {r['full_steps']:4d} {r['flops_reduction']:9.2f}x "
                     f"{format_speedup(r['speedup'], r['flops_reduction']):>8s} {lo:5.2f}-{hi:<5.2f} "
                     f"{r['speedup'] / r['flops_reduction']:8.3f} {r['psnr_db']:8.2f} "
                     f"{r.get('psnr_float_db', float('nan')):8.2f} {r.get('latent_psnr_db', float('nan')):9.2f} "
                     f"{r['ssim']:7.4f} {r['seconds']:7.3f} {r['peak_rss_mb']:8.0f}")
    lines.append(f"speedup: median of {report.get('repeats', 1)} interleaved rounds, each against that round's full "
                 "run; range: lowest-highest round")
    if noisy:
        lines.append(NOISE_NOTE)
    return "\n".join(lines)


def series_label(row: dict[str, Any]) -> str:
    """The plot's name for a bench row's line over budgets: the method, and whose schedule it ran
    on when not its own or the even interval one (``taylorseer2 on l2p:bench's schedule``,
    ``fora on the TaylorSeer pattern``)."""
    m = str(row["full_steps"])

    def strip(name: str) -> str:  # one line per predictor family over budgets: l2p:bench-10 -> l2p:bench
        return name[: -len(m) - 1] if name.endswith("-" + m) else name

    schedule = str(row["schedule"])
    if schedule == "taylorseer":
        return f"{row['method']} on the TaylorSeer pattern"
    if schedule.startswith("of l2p:"):
        return f"{row['method']} on l2p:{strip(schedule[len('of l2p:'):])}'s schedule"
    return strip(str(row["method"]))


def draw_quality(ax: Any, report: dict[str, Any], keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> None:
    """Quality (PSNR vs. full compute) against transformer-FLOPs reduction on a matplotlib ``ax``,
    one line per method over the budgets (of the rows ``keep`` accepts; full compute is not drawn);
    axis labels and grid, no title or legend."""
    series: dict[str, list[tuple[float, float]]] = {}
    method_of: dict[str, str] = {}
    for r in report["rows"]:
        if r["method"] != "full" and keep(r):
            key = series_label(r)
            series.setdefault(key, []).append((r["flops_reduction"], min(r["psnr_db"], 99)))
            method_of[key] = key.split(" on ")[0]
    colours = {m: f"C{i % 10}" for i, m in enumerate(sorted(set(method_of.values())))}  # a method keeps its colour
    for key, pts in sorted(series.items()):
        pts.sort()
        # dashed: the same method on an L2P predictor's schedule; dotted: on diffusers' TaylorSeer pattern
        style = "o:" if key.endswith("TaylorSeer pattern") else "o--" if " on " in key else "o-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=key,
                color=colours[method_of[key]], lw=2.5 if key.startswith("l2p") else 1.5)
    ax.set_xlabel("transformer FLOPs reduction vs. full compute (x)")
    ax.set_ylabel("PSNR vs. full compute (dB)")
    ax.grid(alpha=0.3)


def plot(report: dict[str, Any], path: Path) -> Path:
    """PNG of :func:`draw_quality` for every row; the legend sits outside the axes, so it covers no line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_open

    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    draw_quality(ax, report)
    seeds = len(report["seeds"])
    ax.set_title(f"Quality vs. FLOPs reduction ({report['steps']} steps, {seeds} seed{'s' * (seeds != 1)})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              title="method (even interval schedule\nunless noted)", title_fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
