"""Per-step latency of the exported FLUX transformer: ONNX Runtime CPU vs. PyTorch eager.

    python tools/bench_step.py [--configs tiny,small,medium] [--threads 2] [--batch 1] [--repeats 20]
                               [--fused] [--profile]

Builds random-weight FLUX configs, exports each to a bundle (cached under --work), and prints a
table of median milliseconds per transformer step (range over the rounds) for both runtimes on the
same inputs, the runs interleaved (``l2p.timing``) so that load on the machine hits both alike.
``--fused`` adds the graph after ONNX Runtime's transformer optimizer (``model_type="mmdit"``:
RMSNorm -> SimplifiedLayerNormalization, tanh-GELU -> FastGelu; contrib operators, so ONNX Runtime
only, no TensorRT) and checks it against PyTorch. ``--profile`` prints ONNX Runtime's per-operator
profile of one config's step (the share of each operator type).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def wall(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` as an :func:`l2p.timing.interleaved` task timed from outside (its result dropped)."""
    def task() -> None:
        fn()
    return task


def fused_graph(path: Path, heads: int, hidden: int) -> Path:
    """The graph through ONNX Runtime's transformer optimizer (``mmdit`` fusions), saved next to it."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    out = path.with_name("model.fused.onnx")
    if not out.exists():
        m = optimize_model(str(path), model_type="mmdit", num_heads=heads, hidden_size=hidden, opt_level=0,
                           use_gpu=False, optimization_options=FusionOptions("mmdit"))
        m.save_model_to_file(str(out), use_external_data_format=False)
    return out


def profile(path: Path, feed: dict[str, np.ndarray], threads: int, runs: int = 5) -> str:
    """ONNX Runtime's profiler over ``runs`` steps: milliseconds per step by operator type."""
    import collections
    import json
    import tempfile

    import onnxruntime as ort

    from l2p.engine.ort_options import session_options

    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    lines = [f"{'operator':28s} {'ms/step':>8s} {'share':>6s}"]
    for op, us in per_op.most_common(12):
        lines.append(f"{op:28s} {us / runs / 1e3:8.2f} {100 * us / total:5.1f}%")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,small,medium")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1, help="rows per step (e.g. 2 conditioning rows)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--fused", action="store_true", help="also time ONNX Runtime's mmdit-fused graph")
    p.add_argument("--profile", action="store_true", help="print ONNX Runtime's operator profile per config")
    p.add_argument("--work", type=Path, default=Path("out/bench_step"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from diffusers import FluxTransformer2DModel

    from l2p.bundle import open_bundle
    from l2p.engine.onnxruntime_backend import OrtEngine
    from l2p.export.exporter import export_bundle
    from l2p.export.flux import FluxAdapter
    from l2p.timing import interleaved

    rows = []
    for name in a.configs.split(","):
        kw, latent, txt = CONFIGS[name]
        folder = make(name, a.work)
        bundle = export_bundle(str(folder), a.work / f"bundle-{name}", latent_size=latent, log=lambda s: None)
        b = open_bundle(bundle)
        model = FluxTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()
        adapter = FluxAdapter(model, latent)
        feed = adapter.sample_feed({"batch": a.batch, "txt_seq": txt})
        feed = {k: feed[k] for k in b.spec("transformer").input_names}
        path, spec = b.onnx_path("transformer"), b.spec("transformer")
        engines = {"ort": OrtEngine(path, spec, threads=a.threads)}
        if a.fused:
            heads, hdim = kw["num_attention_heads"], kw["attention_head_dim"]
            engines["fused"] = OrtEngine(fused_graph(path, heads, heads * hdim), spec, threads=a.threads)
        with torch.inference_mode():
            ref = adapter.reference(feed)["sample"]
        errs = {k: float(np.abs(e.run(feed)["sample"] - ref).max() / np.abs(ref).max()) for k, e in engines.items()}
        tasks = {k: wall(lambda e=e: e.run(feed, check=False)) for k, e in engines.items()}
        tasks["torch"] = wall(lambda: torch.inference_mode()(adapter.reference)(feed))
        times = interleaved(tasks, repeats=a.repeats, warmup=2)
        params = sum(q.numel() for q in model.parameters()) / 1e6
        tokens = (latent[0] // 2) * (latent[1] // 2)
        rows.append((name, params, tokens, txt, times, errs))
        if a.profile:
            print(f"ONNX Runtime profile, {name}:\n{profile(path, feed, a.threads)}")
    ms = lambda st: f"{st.median * 1e3:8.2f} ({st.low * 1e3:.1f}-{st.high * 1e3:.1f})"  # noqa: E731
    print(f"{'config':8s} {'params M':>8s} {'img tok':>7s} {'txt tok':>7s} {'ORT CPU ms (range)':>24s} "
          f"{'PyTorch ms (range)':>24s} {'ratio':>6s}"
          + (f" {'fused ms (range)':>24s} {'ratio':>6s}" if a.fused else ""))
    for name, params, tokens, txt, t, errs in rows:
        line = (f"{name:8s} {params:8.2f} {tokens:7d} {txt:7d} {ms(t['ort']):>24s} {ms(t['torch']):>24s} "
                f"{t['torch'].median / t['ort'].median:5.2f}x")
        if a.fused:
            line += f" {ms(t['fused']):>24s} {t['torch'].median / t['fused'].median:5.2f}x"
        print(line + "   max rel. error vs PyTorch: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    print(f"(median of {a.repeats} interleaved rounds, batch {a.batch}, {a.threads} threads; "
          "ratio = PyTorch / ORT: above 1, ONNX Runtime is faster)")


if __name__ == "__main__":
    main()
