#!/usr/bin/env python
"""diffusers' own cache hooks against l2p on one FLUX model: same noise, counted transformer FLOPs, one table.

    python tools/diffusers_caches.py [--model tiny-flux] --bundle DIR [--predictors m10,m7] [--json OUT] [--quick]

Reference: the diffusers ``FluxPipeline`` at full compute (PyTorch, fp32, CPU). Every run, in
diffusers and in l2p, starts from the noise l2p draws for the seed (``FamilyRuntime.noise``:
numpy PCG64 in the spatial layout, packed 2x2), handed to diffusers as ``latents=``; the prompts
go through each side's own text encoders. Held-out captions x seeds 1000.. (``l2p bench``'s
seeds, disjoint from calibration seeds), one batch of all captions per seed.

diffusers rows: ``pipe.transformer.enable_cache(...)`` with ``TaylorSeerCacheConfig`` (``lite``:
blocks skipped, ``proj_out`` forecast, i.e. an output-level forecast like l2p's; ``attn``:
diffusers' default, only the attention modules forecast), ``FirstBlockCacheConfig`` and
``MagCacheConfig`` (its ``mag_ratios`` from its own calibration mode, run on calibration captions,
seed 0). l2p rows: the bundle at full compute (ONNX Runtime; its PSNR against diffusers' full run
checks that both start from the same noise and agree), the presets on their interval schedule
at each budget, ``taylorseer1`` on each ``lite`` TaylorSeer setting's computed steps (the same
forecast as diffusers'), and calibrated ``l2p:NAME`` predictors. Make those first, e.g.::

    l2p export tiny-flux --out BUNDLE
    l2p calibrate BUNDLE --prompts calib.txt --steps 50 --full-steps 10 --name m10
    l2p calibrate BUNDLE --prompts calib.txt --steps 50 --full-steps 7 --name m7
    python tools/diffusers_caches.py --bundle BUNDLE --predictors m10,m7 --json out.json

(``calib.txt``: training captions, one per line, e.g. those of ``tools/l2p_study.py``.)
FLUX pipeline folders only (the l2p bundle must be exported from the same folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP workers slow a shared CPU down (train_tiny.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusers_hooks import FluxRunner, cache_methods, load_flux, magcache_ratios  # noqa: E402

from l2p.atomic import write_json  # noqa: E402
from l2p.bench import BENCH_SEED0, Bench  # noqa: E402
from l2p.metrics import image_metrics, psnr_db  # noqa: E402
from l2p.models import model_defaults, resolve_model  # noqa: E402
from l2p.sampling.methods import l2p_forecaster, preset_forecaster  # noqa: E402
from l2p.sampling.pipeline import Sampler, to_uint8  # noqa: E402

FULL_MATCH_DB = 60.0  # l2p's full-compute run must match diffusers' to this latent PSNR (fp32)
FOOTER = """\
calls: transformer calls in which every block ran (mean per image); equiv: transformer FLOPs run / FLOPs of one
  full call (diffusers rows: nn.Linear and attention-core FLOPs of the modules that really ran, counted by hooks,
  equal to torch.utils.flop_counter's count; a FirstBlockCache call that skips still runs the first block and the
  embedders, a TaylorSeer 'attn' step still runs every block's feed-forward; l2p rows: FLOPs counted from the ONNX
  graphs as `l2p bench` does, predictor and head included). FLOPs red. = steps / equiv.
latent dB / image dB: PSNR of the final latents / 8-bit images against diffusers' full-compute run from the same
  noise (mean over captions x seeds). accept: images the caption checker accepts. s/img: one batch of all
  captions per seed, seconds of the denoising call / batch size (PyTorch eager vs. ONNX Runtime: not comparable
  across the two; on a shared machine). FirstBlockCache decides per batch (diffusers' rule: mean over the batch)."""


def captions(path: Path, a: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """Held-out captions (``--captions``, else the model folder's ``heldout_captions``) and MagCache's
    calibration captions (``--calib-captions``, else for the built-in model its training captions
    that ``tools/l2p_study.py`` calibrates on; never the held-out ones)."""
    read = lambda f: [x.strip() for x in Path(f).read_text().splitlines() if x.strip()]  # noqa: E731
    held = read(a.captions) if a.captions else model_defaults(path).get("heldout_captions")
    if not held:
        raise SystemExit(f"error: {path} lists no heldout_captions; give --captions FILE (one caption per line)")
    calib = read(a.calib_captions) if a.calib_captions else None
    if calib is None and (path / "l2p_tiny.json").is_file():
        from l2p_study import captions as study_captions

        calib = study_captions(16)[0]
    return (held[:2] if a.quick else list(held)), calib


def l2p_entries(sampler: Sampler, steps: int, budgets: list[int], presets: list[str], predictors: list[str],
                ts_schedules: dict[str, tuple[int, ...]]) -> list[tuple[str, Any]]:
    """``(label, forecaster or None)`` of every l2p row; ``ts_schedules``: label -> computed steps."""
    b = sampler.bundle
    out: list[tuple[str, Any]] = [("l2p full (ONNX Runtime)", None)]
    for m in budgets:
        out += [(f"l2p {p} interval {m}/{steps}", preset_forecaster(b, p, steps, m)) for p in presets]
    for label, sched in ts_schedules.items():
        out.append((f"l2p taylorseer1 on TS {label.split(' ')[-1]} steps",
                    preset_forecaster(b, "taylorseer1", steps, len(sched), schedule=sched)))
    out += [(f"l2p:{n}", l2p_forecaster(b, n, steps, None)) for n in predictors]
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every method; returns the report (settings and one dict per table row)."""
    src = resolve_model(args.model)
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        from l2p.export.exporter import export_bundle

        print(f"no bundle at {bundle}: exporting it (as `l2p export {args.model} --out {bundle}`) ...")
        export_bundle(args.model, bundle)
    sampler = Sampler(bundle, threads=args.threads, guidance_scale=args.guidance)
    if sampler.bundle.family != "flux":
        raise SystemExit(f"error: bundle {bundle} holds a {sampler.bundle.family} model; this tool compares FLUX")
    held, calib = captions(src, args)
    seeds = [BENCH_SEED0 + k for k in range(1 if args.quick else args.seeds)]
    steps, rows_n = args.steps, len(held)
    cond = sampler.encode(held)  # l2p's own text encoders, (B, T, D)
    pipe = load_flux(src)
    runner = FluxRunner(pipe, cond["encoder_hidden_states"].shape[1], sampler.rt.h * pipe.vae_scale_factor,
                        sampler.rt.w * pipe.vae_scale_factor, steps, args.guidance)
    noise = {s: sampler.rt.noise(s, rows_n) for s in seeds}  # (B, S, 4C) per seed, exactly l2p's

    ratios = None
    if args.magcache:
        if calib is None:
            raise SystemExit("error: MagCache needs calibration captions: give --calib-captions FILE "
                             "(or --magcache '')")
        print(f"MagCache calibration mode on {len(calib)} training captions, seed 0 ...")
        ratios = magcache_ratios(runner, sampler.rt.noise(0, len(calib)), runner.encode(calib))
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    dmethods = cache_methods(split(args.taylorseer), split(args.fbc), split(args.magcache), steps, ratios)
    ts = {m.label: tuple(m.settings["computed"]) for m in dmethods
          if m.label.startswith("TaylorSeer") and m.settings["lite"] and m.settings["order"] == 1}
    lmethods = l2p_entries(sampler, steps, [int(x) for x in split(args.budgets)], split(args.presets),
                           split(args.predictors), ts)

    dcond = runner.encode(held)
    first = noise[seeds[0]][:1]  # untimed warm-up of both sides (engine sessions, first-call allocations)
    sampler.sample({k: v[:1] for k, v in cond.items()}, seeds[0], steps, initial=first, decode=False)
    runner.run(first, (dcond[0][:1], dcond[1][:1]))
    runs: dict[str, dict[str, list[Any]]] = {}
    jobs = [(s, lab, fc) for s in seeds for lab, fc in lmethods]  # seeds outer: load that comes and goes hits all
    for s, lab, fc in tqdm(jobs, desc="l2p runs", file=sys.stderr):
        res = sampler.sample(cond, s, steps, initial=noise[s], forecaster=fc, decode=False)
        _record(runs, lab, res.final, res.seconds)
    djobs = [(s, m) for s in seeds for m in [None, *dmethods]]
    for s, m in tqdm(djobs, desc="diffusers runs", file=sys.stderr):
        final, sec, calls = runner.run(noise[s], dcond, None if m is None else m.config)
        _record(runs, "diffusers full" if m is None else f"diffusers {m.label}", final, sec, calls)
    rows = score(runs, sampler, runner, cond, seeds, dict(lmethods), [c for _ in seeds for c in held])
    settings = {m.label: m.settings for m in dmethods}
    return {"model": str(src), "bundle": str(sampler.bundle.root), "bundle_hash": sampler.bundle.hash,
            "steps": steps, "seeds": seeds, "captions": held, "magcache_ratios": ratios,
            "diffusers_settings": settings, "rows": rows}


def _record(runs: dict[str, dict[str, list[Any]]], label: str, final: np.ndarray, seconds: float,
            calls: list[int] | None = None) -> None:
    r = runs.setdefault(label, {"finals": [], "seconds": [], "calls": []})
    r["finals"].append(final)
    r["seconds"].append(seconds)
    if calls is not None:
        r["calls"].append(calls)


def score(runs: dict[str, dict[str, list[Any]]], sampler: Sampler, runner: FluxRunner, cond: dict[str, np.ndarray],
          seeds: list[int], fcs: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """One table row per method: calls, FLOPs, PSNR against ``runs["diffusers full"]``, checker, seconds."""
    steps, batch = runner.steps, len(labels) // len(seeds)
    full_call = runs["diffusers full"]["calls"][0][0]  # every call of the full run costs the same
    bench = Bench(sampler, cond, steps, seeds, log=lambda s: None)
    ref = np.concatenate(runs["diffusers full"]["finals"])  # (N, S, 4C), seed-major
    ref_img = runner.decode(ref)
    checker = _checker(sampler)
    rows = []
    for name, r in tqdm(runs.items(), desc="scoring", file=sys.stderr):
        finals = np.concatenate(r["finals"])
        if r["calls"]:  # a diffusers run: its counted FLOPs
            img = runner.decode(finals)
            full = float(np.mean([sum(c >= 0.999 * full_call for c in cs) for cs in r["calls"]]))
            equiv = float(np.mean([sum(cs) / full_call for cs in r["calls"]]))
        else:  # an l2p run: FLOPs from the ONNX graphs
            img = to_uint8(sampler.decode_float(finals))
            fc = fcs[name]
            full = float(steps if fc is None else len(fc.table.computed))
            equiv = steps / bench.flops_reduction(fc)
        rows.append({"method": name, "calls": full, "equiv_calls": equiv, "flops_reduction": steps / equiv,
                     "latent_psnr_db": psnr_db(finals, ref), "psnr_db": image_metrics(img, ref_img)[0],
                     "accepted": None if checker is None else sum(checker(i, c) for i, c in zip(img, labels)),
                     "images": len(labels), "seconds_per_image": float(np.mean(r["seconds"])) / batch,
                     "max_abs_diff": float(np.abs(finals - ref).max())})
    return rows


def _checker(sampler: Sampler) -> Any:
    """``(uint8 image, caption) -> accepted`` for bundles of the built-in model, else ``None``."""
    from l2p.models import builtin_model_of

    if builtin_model_of(sampler.bundle.manifest) is None:
        return None
    from l2p.tinymodel.checker import check

    return lambda img, cap: bool(check(img, cap).ok)


def format_table(report: dict[str, Any]) -> str:
    head = (f"{'method':40s} {'calls':>6s} {'equiv':>6s} {'FLOPs red.':>10s} {'latent dB':>9s} {'image dB':>8s} "
            f"{'accept':>7s} {'s/img':>6s}")
    lines = [f"{report['steps']} steps, {len(report['captions'])} held-out captions x seeds {report['seeds']}; "
             "PSNR against diffusers' full-compute run", head, "-" * len(head)]
    for r in report["rows"]:
        acc = "n/a" if r["accepted"] is None else f"{r['accepted']}/{r['images']}"
        lines.append(f"{r['method']:40s} {r['calls']:6.1f} {r['equiv_calls']:6.2f} {r['flops_reduction']:9.2f}x "
                     f"{r['latent_psnr_db']:9.2f} {r['psnr_db']:8.2f} {acc:>7s} {r['seconds_per_image']:6.3f}")
    return "\n".join([*lines, FOOTER])


def full_match(report: dict[str, Any]) -> dict[str, Any]:
    """The row of l2p's full-compute run (its PSNR is against diffusers' full run: same noise, fp32)."""
    return next(r for r in report["rows"] if r["method"].startswith("l2p full"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-flux", help="FLUX pipeline folder or built-in name (default: tiny-flux)")
    p.add_argument("--bundle", required=True, help="its l2p bundle (exported here if the folder has none)")
    p.add_argument("--predictors", default="", help="l2p:NAME predictors of the bundle, comma-separated (m10,m7)")
    p.add_argument("--presets", default="taylorseer2,fora", help="l2p presets on the interval schedule")
    p.add_argument("--budgets", default="10,7", help="full steps of the l2p presets' rows")
    p.add_argument("--taylorseer", default="3:7:1:lite,3:7:2:lite,2:10:1:lite,2:10:2:lite,3:7:1:attn",
                   help="diffusers TaylorSeer settings WARMUP:INTERVAL:ORDER[:lite|:attn]")
    p.add_argument("--fbc", default="0.1,0.2,0.5", help="diffusers FirstBlockCache thresholds")
    p.add_argument("--magcache", default="0.06:3:0.2,1:20:0.06,3:20:0.06",
                   help="diffusers MagCache settings THRESHOLD:MAX_SKIP:RETENTION ('' for none)")
    p.add_argument("--captions", help="held-out captions file, one per line (default: the model folder's)")
    p.add_argument("--calib-captions",
                   help="MagCache calibration captions file (default: the tiny model's training captions)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seeds", type=int, default=4, help="seeds 1000..1000+N-1 per caption")
    p.add_argument("--guidance", type=float, default=3.5, help="FLUX guidance embedding (models that have one)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch and ONNX Runtime threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 captions x 1 seed")
    p.add_argument("--json", type=Path, help="also write the report here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    report = measure(a)
    print(format_table(report))
    row = full_match(report)
    match = row["latent_psnr_db"]
    print(f"l2p full compute vs. diffusers full compute: {match:.2f} dB latent PSNR (99: the metric's cap), "
          f"max |difference| {row['max_abs_diff']:.2e} "
          f"({'ok' if match >= FULL_MATCH_DB else 'BELOW'} the {FULL_MATCH_DB:.0f} dB expected of fp32)")
    if a.json:
        write_json(a.json, report)
        print(json.dumps({"json": str(a.json)}))
    return 0 if match >= FULL_MATCH_DB else 1


if __name__ == "__main__":
    raise SystemExit(main())
