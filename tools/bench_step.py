"""Per-step latency of the exported FLUX transformer: ONNX Runtime CPU vs. PyTorch eager.

    python tools/bench_step.py [--configs tiny,small,medium] [--threads 2] [--repeats 20]

Builds random-weight FLUX configs, exports each to a bundle (cached under --work), and prints a
table of median milliseconds per transformer step for both runtimes on the same inputs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

CONFIGS = {  # name: (transformer kwargs, latent size, text tokens)
    "tiny": (dict(num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=32, pooled_projection_dim=24, axes_dims_rope=(4, 6, 6)), (8, 8), 16),
    "small": (dict(num_layers=2, num_single_layers=4, attention_head_dim=32, num_attention_heads=4,
                   joint_attention_dim=128, pooled_projection_dim=64, axes_dims_rope=(8, 12, 12)), (32, 32), 32),
    "medium": (dict(num_layers=4, num_single_layers=8, attention_head_dim=64, num_attention_heads=6,
                    joint_attention_dim=256, pooled_projection_dim=128, axes_dims_rope=(16, 24, 24)), (32, 32), 64),
}


def make(name: str, work: Path) -> Path:
    from diffusers import FluxTransformer2DModel

    folder = work / f"model-{name}"
    if not (folder / "transformer" / "config.json").exists():
        torch.manual_seed(0)
        kw, _, _ = CONFIGS[name]
        FluxTransformer2DModel(patch_size=1, in_channels=64, guidance_embeds=True, **kw).save_pretrained(
            str(folder / "transformer"))
    return folder


def timeit(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,small,medium")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--work", type=Path, default=Path("out/bench_step"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from diffusers import FluxTransformer2DModel

    from l2p.bundle import open_bundle
    from l2p.engine.onnxruntime_backend import OrtEngine
    from l2p.export.exporter import export_bundle
    from l2p.export.flux import FluxAdapter

    rows = []
    for name in a.configs.split(","):
        _, latent, txt = CONFIGS[name]
        folder = make(name, a.work)
        bundle = export_bundle(str(folder), a.work / f"bundle-{name}", latent_size=latent, log=lambda s: None)
        b = open_bundle(bundle)
        model = FluxTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()
        adapter = FluxAdapter(model, latent)
        feed = adapter.sample_feed({"batch": 1, "txt_seq": txt})
        feed = {k: feed[k] for k in b.spec("transformer").input_names}
        engine = OrtEngine(b.onnx_path("transformer"), b.spec("transformer"), threads=a.threads)
        ort_ms = timeit(lambda: engine.run(feed, check=False), a.repeats)
        with torch.inference_mode():
            torch_ms = timeit(lambda: adapter.reference(feed), a.repeats)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        tokens = (latent[0] // 2) * (latent[1] // 2)
        rows.append((name, params, tokens, txt, ort_ms, torch_ms))
    print(f"{'config':8s} {'params M':>8s} {'img tok':>7s} {'txt tok':>7s} {'ORT CPU ms':>10s} "
          f"{'PyTorch ms':>10s} {'ratio':>6s}")
    for name, params, tokens, txt, o, t in rows:
        print(f"{name:8s} {params:8.2f} {tokens:7d} {txt:7d} {o:10.2f} {t:10.2f} {t / o:5.2f}x")
    print(f"(median of {a.repeats} runs, batch 1, {a.threads} threads; ratio = PyTorch / ORT)")


if __name__ == "__main__":
    main()
