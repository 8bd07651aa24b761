"""L2P under classifier-free guidance: forecast the guided output, or each branch?

    python tools/cfg_study.py [--bundle SD3_BUNDLE | --out out/cfg_study] [--steps 50] [--budgets 10,7]
                              [--scale 7] [--cross 4,10] [--rows 4] [--calib-seeds 2] [--bench-seeds 2]

Without ``--bundle`` it exports a tiny random-weight SD3 transformer (``SD3Transformer2DModel``,
2 layers, latent 16x16) to ``OUT/bundle`` and makes random conditioning: ``--rows`` calibration
rows and as many held-out rows, each with its own negative rows (``negative_*`` arrays). With
``--bundle`` (a guided bundle, e.g. tiny-sd3) give ``--calib COND.npz --heldout COND.npz``.

For each budget M of ``--steps`` and each forecast mode (``guided``: one history of the combined
output; ``branches``: both branches' histories, combined after) it calibrates an L2P predictor at
``--scale`` on the calibration rows (seeds 0..S-1), then on the held-out rows with seeds 1000..
measures the final-latent PSNR against full compute (same scale) of: the predictor, and the fixed
formulas TaylorSeer-2 and FORA in the same mode. Then the cross-scale check: each predictor
calibrated at ``--scale`` sampling at each ``--cross`` scale, next to a predictor calibrated at
that scale (is a branch predictor valid at other scales?). Prints two tables; ``OUT/cfg_study.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from l2p.atomic import load_npz, write_json
from l2p.calibration.calibrate import CalibrationConfig, Calibrator
from l2p.metrics import psnr_db
from l2p.sampling.methods import forecaster_from_table, preset_forecaster
from l2p.sampling.pipeline import Sampler

BENCH_SEED0 = 1000
SD3 = dict(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16,
           num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=16,
           pos_embed_max_size=16)


def tiny_sd3(out: Path, rows: int) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Export the tiny random SD3 (weights perturbed: random init zeroes the adaLN-zero paths) and
    make calibration / held-out conditioning with negatives."""
    import torch
    from diffusers import SD3Transformer2DModel

    from l2p.export.exporter import export_bundle

    torch.manual_seed(0)
    model = SD3Transformer2DModel(**SD3).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(out / "src" / "transformer"))
    bundle = export_bundle(str(out / "src"), out / "bundle", latent_size=(16, 16), log=lambda s: None)
    rng = np.random.default_rng(0)

    def cond() -> dict[str, np.ndarray]:
        text, pooled = rng.standard_normal((rows, 8, 32)), rng.standard_normal((rows, 16))
        neg_text, neg_pooled = 0.3 * rng.standard_normal((rows, 8, 32)), 0.3 * rng.standard_normal((rows, 16))
        return {k: v.astype(np.float32) for k, v in (
            ("encoder_hidden_states", text), ("pooled_projections", pooled),
            ("negative_encoder_hidden_states", neg_text), ("negative_pooled_projections", neg_pooled))}
    return bundle, cond(), cond()


def finals(sampler: Sampler, cond: dict[str, np.ndarray], steps: int, seeds: range, fc: object = None) -> np.ndarray:
    return np.concatenate([sampler.sample(cond, s, steps, forecaster=fc, decode=False).final  # type: ignore[arg-type]
                           for s in seeds])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path)
    p.add_argument("--calib", type=Path)
    p.add_argument("--heldout", type=Path)
    p.add_argument("--out", type=Path, default=Path("out/cfg_study"))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budgets", default="10,7")
    p.add_argument("--scale", type=float, default=7.0)
    p.add_argument("--cross", default="4,10", help="scales to sample the --scale predictors at ('' : none)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--calib-seeds", type=int, default=2)
    p.add_argument("--bench-seeds", type=int, default=2)
    p.add_argument("--threads", type=int)
    p.add_argument("--fast", action="store_true", help="interval schedule, K 3-4, no refit/closed loop")
    a = p.parse_args()
    t0 = time.time()
    if a.bundle:
        bundle, calib, held = a.bundle, dict(load_npz(a.calib)), dict(load_npz(a.heldout))
    else:
        bundle, calib, held = tiny_sd3(a.out, a.rows)
    budgets = [int(b) for b in a.budgets.split(",")]
    seeds = range(BENCH_SEED0, BENCH_SEED0 + a.bench_seeds)
    extra = dict(schedule="interval", Ks=(3, 4), refit=0, closed_loop=0) if a.fast else {}
    samplers: dict[tuple[float, str], Sampler] = {}

    def sampler(scale: float, mode: str) -> Sampler:
        if (scale, mode) not in samplers:
            samplers[(scale, mode)] = Sampler(bundle, threads=a.threads, cfg_scale=scale, cfg_forecast=mode)
        return samplers[(scale, mode)]

    def calibrate(scale: float, mode: str, m: int) -> object:
        name = f"cfg{scale:g}-{mode}-{m}"
        cfg = CalibrationConfig(steps=a.steps, full_steps=m, name=name, seeds=a.calib_seeds, **extra)
        return Calibrator(sampler(scale, mode), calib, cfg, log=lambda s: None).run()

    cross_scales = [float(g) for g in a.cross.split(",") if g.strip()]
    refs = {g: finals(sampler(g, "guided"), held, a.steps, seeds) for g in [a.scale, *cross_scales]}
    rows, cross = [], []
    for m in budgets:
        for mode in ("guided", "branches"):
            s = sampler(a.scale, mode)
            pred = calibrate(a.scale, mode, m)
            row = {"budget": f"{m}/{a.steps}", "mode": mode,
                   "l2p": psnr_db(finals(s, held, a.steps, seeds, forecaster_from_table(s.bundle, pred.table, "output",
                                                                                         "l2p")), refs[a.scale])}
            for preset in ("taylorseer2", "fora"):
                fc = preset_forecaster(s.bundle, preset, a.steps, m)
                row[preset] = psnr_db(finals(s, held, a.steps, seeds, fc), refs[a.scale])
            rows.append(row)
            print(f"  {row}", flush=True)
            for g in cross_scales:
                sg = sampler(g, mode)
                moved = psnr_db(finals(sg, held, a.steps, seeds, forecaster_from_table(
                    sg.bundle, pred.table, "output", "l2p")), refs[g])
                own = calibrate(g, mode, m)
                native = psnr_db(finals(sg, held, a.steps, seeds, forecaster_from_table(
                    sg.bundle, own.table, "output", "l2p")), refs[g])
                cross.append({"budget": f"{m}/{a.steps}", "mode": mode, "calibrated_at": a.scale, "sampled_at": g,
                              "l2p_moved": moved, "l2p_native": native})
                print(f"  {cross[-1]}", flush=True)
    print(f"\nL2P under CFG (scale {a.scale:g}), final-latent PSNR vs. full compute on held-out rows, dB")
    print(f"{'budget':8s} {'forecast':9s} {'l2p':>7s} {'taylorseer2':>12s} {'fora':>7s}")
    for r in rows:
        print(f"{r['budget']:8s} {r['mode']:9s} {r['l2p']:7.2f} {r['taylorseer2']:12.2f} {r['fora']:7.2f}")
    print(f"\nacross scales: predictor calibrated at {a.scale:g} sampling at another scale vs. one calibrated there")
    print(f"{'budget':8s} {'forecast':9s} {'sampled at':>10s} {'moved':>7s} {'native':>7s}")
    for c in cross:
        print(f"{c['budget']:8s} {c['mode']:9s} {c['sampled_at']:10g} {c['l2p_moved']:7.2f} {c['l2p_native']:7.2f}")
    print(f"({time.time() - t0:.0f} s)")
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "cfg_study.json", {"bundle": str(bundle), "steps": a.steps, "scale": a.scale,
                                          "fast": a.fast, "rows": rows, "cross": cross})


if __name__ == "__main__":
    main()
