#!/usr/bin/env python
"""The exported transformer on ONNX Runtime CUDA vs. PyTorch eager, and the device-resident loop.

    python tools/gpu_ort_check.py --work /tmp/l2p-gpu/work --out $OUT        # on the lent GPU machine
    python tools/gpu_ort_check.py --dry-run --work /tmp/gpu-dry               # here: CPU, tiny, fp32

Run by ``tools/gpu_ort_check.sh run`` (which installs onnxruntime-gpu first). What it does:

1. builds a random-weight FLUX.1-dev-shaped transformer (FLUX.1-dev's widths: 24 heads x 128,
   text 4096, pooled 768, guidance; depth ``--layers``/``--single-layers``, 19/38 for the full model)
   and exports it with ``l2p export --precision bf16`` (fp32 with ``--dry-run``);
2. times one transformer step, PyTorch eager (bf16, CUDA) against the exported graph on ONNX
   Runtime's CUDA provider with device I/O (``OrtEngine.run_device`` on a cuda device), same inputs;
3. runs ``l2p sample --device cuda --backend onnxruntime-cuda`` (the CLI, one full and one
   ``taylorseer2`` run, run.json kept), then times the device-resident loop in the same process with
   :func:`l2p.timing.interleaved`: full compute against taylorseer2 at ``--budget`` full steps;
4. writes ``OUT/gpu_ort_check.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_model(folder: Path, layers: int, single: int, tiny: bool) -> Path:
    """A random FLUX.1-dev-shaped transformer folder (``tiny``: a few-MB stand-in for dry runs)."""
    import torch
    from diffusers import FluxTransformer2DModel

    if not (folder / "transformer" / "config.json").is_file():
        torch.manual_seed(0)
        shape = (dict(attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
                      axes_dims_rope=(4, 6, 6)) if tiny else
                 dict(attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                      pooled_projection_dim=768, axes_dims_rope=(16, 56, 56)))
        model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=layers, num_single_layers=single,
                                       guidance_embeds=True, **shape)
        model.to(torch.float32 if tiny else torch.bfloat16).save_pretrained(str(folder / "transformer"))
    return folder


def step_ms(fn: Any, sync: Any, repeats: int = 10) -> float:
    """Median milliseconds of ``fn()`` after 3 warm-ups, synchronised with ``sync()``."""
    times = []
    for n in range(repeats + 3):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        if n >= 3:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/l2p-gpu/work"))
    p.add_argument("--out", type=Path, default=None, help="where the JSON and run records go (default: --work)")
    p.add_argument("--layers", type=int, default=2, help="double-stream blocks (FLUX.1-dev: 19)")
    p.add_argument("--single-layers", type=int, default=4, help="single-stream blocks (FLUX.1-dev: 38)")
    p.add_argument("--size", type=int, default=512, help="image side in pixels (multiple of 16)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budget", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, fp32: checks this script here")
    a = p.parse_args()
    import torch

    from l2p.bundle import open_bundle
    from l2p.export.exporter import export_bundle
    from l2p.export.flux import FluxAdapter
    from l2p.sampling.rope import flux_image_ids, flux_text_ids
    from l2p.sampling.pipeline import Sampler
    from l2p.timing import interleaved

    out = a.out or a.work
    out.mkdir(parents=True, exist_ok=True)
    dry = a.dry_run
    device, backend, prec = ("cpu", "onnxruntime", "fp32") if dry else ("cuda", "onnxruntime-cuda", "bf16")
    latent = (a.size // 8, a.size // 8)
    folder = make_model(a.work / "model", a.layers, a.single_layers, dry)
    bundle_dir = export_bundle(str(folder), a.work / f"bundle-{prec}", latent_size=latent, precision=prec,
                               check=False, log=print)
    bundle = open_bundle(bundle_dir)
    txt = 16 if dry else 512

    # 1. one step: PyTorch eager vs. the exported graph on ONNX Runtime, same inputs
    from diffusers import FluxTransformer2DModel

    dtype = torch.float32 if dry else torch.bfloat16
    model = FluxTransformer2DModel.from_pretrained(str(folder / "transformer"), torch_dtype=dtype).to(device).eval()
    params = sum(q.numel() for q in model.parameters())
    adapter = FluxAdapter(model, latent)
    feed = adapter.sample_feed({"batch": 1, "txt_seq": txt})
    feed = {k: feed[k] for k in bundle.spec("transformer").input_names}
    sync = (lambda: None) if dry else torch.cuda.synchronize
    h, w = latent[0] // 2, latent[1] // 2
    targs = {k: torch.from_numpy(feed[k]).to(device, dtype) for k in
             ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "guidance")}
    targs["img_ids"] = torch.from_numpy(flux_image_ids(h, w)).to(device)
    targs["txt_ids"] = torch.from_numpy(flux_text_ids(txt)).to(device)

    def eager() -> Any:
        with torch.inference_mode():
            return model(**targs, return_dict=False)[0]

    eager_ms = step_ms(eager, sync)
    sampler = Sampler(bundle, backend=backend, device=device)
    engine = sampler.engine("transformer")
    if dry:
        ort_ms = step_ms(lambda: engine.run(feed, check=False), sync)
    else:
        import cupy as cp

        dfeed = {k: cp.asarray(v) for k, v in feed.items()}
        ort_ms = step_ms(lambda: engine.run_device(dfeed, check=False), cp.cuda.Device().synchronize)
    del model
    print(f"{params / 1e9:.2f}B params, {(a.size // 16) ** 2} image + {txt} text tokens: PyTorch eager "
          f"{prec} {eager_ms:.2f} ms/step, ONNX Runtime {backend} {ort_ms:.2f} ms/step (ratio {eager_ms / ort_ms:.2f})")

    # 2. the CLI, as a user runs it, then the loop timed in-process (interleaved rounds)
    cond = {k: feed[k] for k in sampler.rt.cond_names}
    np.savez(a.work / "cond.npz", **cond)
    cli = [sys.executable, "-m", "l2p.cli", "sample", str(bundle_dir), "--conditioning", str(a.work / "cond.npz"),
           "--steps", str(a.steps), "--device", device, "--backend", backend]
    rcs = {}
    for method in ("full", "taylorseer2"):
        extra = ["--method", method] + (["--full-steps", str(a.budget)] if method != "full" else [])
        rcs[method] = subprocess.run(cli + extra + ["--out", str(out / f"sample-{method}")]).returncode
    tasks = {m: (lambda m=m: sampler.sample(cond, 0, a.steps, method=m, full_steps=None if m == "full" else a.budget,
                                            decode=False).seconds) for m in ("full", "taylorseer2")}
    times = interleaved(tasks, repeats=a.repeats, warmup=1)
    speed = times["taylorseer2"].ratio_to(times["full"])
    report = {"params": params, "size": a.size, "layers": [a.layers, a.single_layers], "precision": prec,
              "eager_step_ms": eager_ms, "ort_step_ms": ort_ms, "eager_over_ort": eager_ms / ort_ms,
              "cli_returncodes": rcs, "loop_full_s": times["full"].median,
              "loop_cached_s": times["taylorseer2"].median, "speedup": speed.median,
              "speedup_range": [speed.low, speed.high], "steps": a.steps, "budget": a.budget}
    print(f"loop: full {report['loop_full_s']:.3f} s, taylorseer2 {a.budget}/{a.steps} "
          f"{report['loop_cached_s']:.3f} s: {speed.median:.2f}x ({speed.low:.2f}-{speed.high:.2f}) at "
          f"{a.steps / a.budget:.1f}x fewer transformer steps; CLI exit codes {rcs}")
    (out / "gpu_ort_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
