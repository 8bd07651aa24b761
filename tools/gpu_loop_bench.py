#!/usr/bin/env python
"""How much the cached sampling loop costs on a GPU: latency speed-up vs. FLOPs reduction.

    python tools/gpu_loop_bench.py --config flux-dev --size 512 --budgets 10,7      # on a CUDA machine
    python tools/gpu_loop_bench.py --config tiny --device cpu                       # dry run, no GPU

What runs: l2p's own denoising loop (``l2p.sampling.loop.denoise``) on cupy arrays, so latents,
the history ring buffer and the predictor's inputs and outputs stay on the device. For lack of
TensorRT and onnxruntime-gpu on the machines this was written for, two stand-ins fill the
engine slots: the transformer is diffusers' ``FluxTransformer2DModel`` (random weights, PyTorch
eager, bf16 by default) behind the ``Engine`` interface (cupy <-> torch through DLPack, no
copies), and the predictor applies the coefficient table with two cupy kernels, the same
arithmetic as the predictor ONNX graph (``sum_slot W[step, perm[slot]] * history[slot]``).

Prints, per method and budget: computed steps, FLOPs reduction (transformer FLOPs from torch's
FLOP counter, predictor 2·K·M per forecast step), wall time per run (device synchronised), the
speed-up over full compute, speed-up / FLOPs reduction, and what one forecast step costs (the
run's time minus its computed steps at the full run's per-step rate). Runs are interleaved over
``--repeats`` rounds and each round's speed-up is taken against that round's full run (medians
reported): a GPU's clock drifts by 10-20% between minutes. Also the PyTorch eager step time. ``--json FILE`` writes the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2p.engine.base import Engine  # noqa: E402
from l2p.predictor.presets import preset  # noqa: E402
from l2p.predictor.schedule import interval_schedule  # noqa: E402
from l2p.predictor.table import CoefficientTable  # noqa: E402
from l2p.sampling.families.base import FamilyRuntime  # noqa: E402
from l2p.sampling.loop import Forecaster, denoise  # noqa: E402
from l2p.sampling.schedulers.flow_match import FlowMatchEulerDiscreteScheduler  # noqa: E402
from l2p.spec import IOSpec, TensorSpec  # noqa: E402

# FluxTransformer2DModel shapes: (double blocks, single blocks, heads, head dim, text dim, rope axes)
CONFIGS = {
    "tiny": (2, 4, 4, 32, 64, (4, 14, 14)),  # the shipped tiny-flux shape
    "medium": (4, 8, 8, 64, 512, (8, 28, 28)),  # ~71M: small enough that launch overhead shows
    "flux-dev": (19, 38, 24, 128, 4096, (16, 56, 56)),  # FLUX.1-dev's shape, ~12B
}


class PackedRuntime(FamilyRuntime):
    """FLUX's packed latents ``(B, S, 64)`` and timestep ``t / 1000``; conditioning lives in the engine."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.tokens, 64)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        scheduler.set_timesteps(steps)

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}

    def step_inputs(self, latents: Any, t: float) -> dict[str, Any]:
        return {"hidden_states": latents, "timestep": np.full((latents.shape[0],), t / 1000, np.float32)}

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        raise NotImplementedError("no VAE in this benchmark")

    def encode(self, prompts: list[str], run: Any, tokenizers: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError("no text encoders in this benchmark")


class TorchFlux(Engine):
    """The transformer stand-in: a random-weight FluxTransformer2DModel, fed zero-copy from ``xp``."""

    backend = "torch"

    def __init__(self, model: Any, cond: dict[str, Any], dtype: Any, xp: ModuleType) -> None:
        lat = TensorSpec("hidden_states", "float32", ("batch", "seq", 64))
        super().__init__("transformer", IOSpec((lat, TensorSpec("timestep", "float32", ("batch",))),
                                               (TensorSpec("sample", "float32", ("batch", "seq", 64)),)))
        self.model, self.cond, self.dtype, self.xp = model, cond, dtype, xp

    def _call(self, feed: Mapping[str, Any]) -> Any:
        import torch

        x = torch.from_dlpack(feed["hidden_states"]).to(self.dtype)
        t = torch.from_dlpack(feed["timestep"]).to(self.dtype)
        with torch.inference_mode():
            out = self.model(hidden_states=x, timestep=t, return_dict=False, **self.cond)[0]
        return out.float().contiguous()

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"sample": self._call({k: np.ascontiguousarray(v) for k, v in feed.items()}).numpy()}

    def run_device(self, feed: Mapping[str, Any], check: bool = True) -> dict[str, Any]:
        return {"sample": self.xp.from_dlpack(self._call(feed))}


class TablePredictor(Engine):
    """The predictor on ``xp``: ``feature = W[step][perm] . history`` (two kernels, no host sync)."""

    backend = "array"

    def __init__(self, table: CoefficientTable, feature_shape: tuple[int, ...], xp: ModuleType) -> None:
        f = TensorSpec("feature", "float32", feature_shape)
        super().__init__("predictor", IOSpec((TensorSpec("history", "float32", (table.K, *feature_shape)),
                                              TensorSpec("step", "int64", (1,)),
                                              TensorSpec("perm", "int64", (table.K,))), (f,)))
        self.W, self.xp = xp.asarray(table.W.astype(np.float32)), xp  # (N, K), uploaded once

    def _apply(self, feed: Mapping[str, Any]) -> Any:
        xp = self.xp
        c = xp.take(self.W[feed["step"][0]], feed["perm"])  # (K,) slot order; the index stays on the device
        hist = feed["history"]  # (K, *feature)
        return (c @ hist.reshape(hist.shape[0], -1)).reshape(hist.shape[1:])

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"feature": self._apply(feed)}

    def run_device(self, feed: Mapping[str, Any], check: bool = True) -> dict[str, Any]:
        return {"feature": self._apply(feed)}


def build(config: str, size: int, dtype: Any, device: str) -> tuple[Any, dict[str, Any], int, int]:
    """The model on ``device`` and its fixed conditioning; returns ``(model, cond, tokens, params)``."""
    import torch
    from diffusers import FluxTransformer2DModel

    layers, single, heads, hdim, text, axes = CONFIGS[config]
    torch.manual_seed(0)
    with torch.device(device):
        model = FluxTransformer2DModel(num_layers=layers, num_single_layers=single, attention_head_dim=hdim,
                                       num_attention_heads=heads, joint_attention_dim=text,
                                       pooled_projection_dim=768 if config == "flux-dev" else text,
                                       guidance_embeds=config == "flux-dev", axes_dims_rope=axes)
    model = model.to(dtype).eval()
    side = size // 16  # 8x VAE, then 2x2 packing
    tokens, txt = side * side, 512 if config == "flux-dev" else 16
    ids = torch.zeros(side, side, 3, device=device)
    ids[..., 1] += torch.arange(side, device=device)[:, None]
    ids[..., 2] += torch.arange(side, device=device)[None, :]
    cond = {"encoder_hidden_states": torch.randn(1, txt, text, device=device, dtype=dtype),
            "pooled_projections": torch.randn(1, model.config.pooled_projection_dim, device=device, dtype=dtype),
            "img_ids": ids.reshape(tokens, 3), "txt_ids": torch.zeros(txt, 3, device=device)}
    if config == "flux-dev":
        cond["guidance"] = torch.full((1,), 3.5, device=device, dtype=dtype)
    return model, cond, tokens, sum(p.numel() for p in model.parameters())


def step_flops(engine: TorchFlux, x: Any, t: Any) -> float:
    """FLOPs of one transformer forward, from torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        engine.run_device({"hidden_states": x, "timestep": t})
    return float(fc.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="flux-dev")
    p.add_argument("--size", type=int, default=512, help="image side in pixels (multiple of 16)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--budgets", default="10,7")
    p.add_argument("--methods", default="taylorseer2,lagrange2", help="coefficient tables to time (presets)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.size % 16 or a.size < 16:
        p.error("--size must be a positive multiple of 16 (8x VAE, then 2x2 packing)")
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    if a.device == "cuda":
        import cupy as xp

        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, (lambda: None)
    t0 = time.perf_counter()
    model, cond, tokens, params = build(a.config, a.size, dtype, a.device)
    engine = TorchFlux(model, cond, dtype, xp)
    rt = PackedRuntime(tokens)
    x0 = rt.noise(0)
    print(f"{a.config}: {params / 1e6:.1f}M parameters, {tokens} image tokens, {a.dtype}, built in "
          f"{time.perf_counter() - t0:.1f} s on {torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu'}")
    xd, td = xp.asarray(x0), xp.asarray(np.full((1,), 0.5, np.float32))
    f_full = step_flops(engine, xd, td)
    step_ms = []
    for _ in range(10 + 3):  # PyTorch eager step, 3 warm-ups
        sync()
        s = time.perf_counter()
        engine.run_device({"hidden_states": xd, "timestep": td})
        sync()
        step_ms.append((time.perf_counter() - s) * 1e3)
    eager_ms = statistics.median(step_ms[3:])
    print(f"PyTorch eager step: {eager_ms:.2f} ms (median of 10); {f_full / 1e12:.2f} TFLOP/step "
          f"= {f_full / eager_ms / 1e9:.0f} TFLOP/s")

    def run_once(fc: Forecaster | None) -> float:
        sync()
        s = time.perf_counter()
        denoise(rt, FlowMatchEulerDiscreteScheduler(shift=3.0), engine, x0, {}, a.steps, fc, xp=xp)
        return time.perf_counter() - s  # denoise ends with the copy of the final latents: synchronised

    M = tokens * 64
    cases: list[tuple[str, int, Forecaster | None, float]] = [("full", a.steps, None, 1.0)]
    for budget in (int(b) for b in a.budgets.split(",")):
        for meth in a.methods.split(","):
            table = preset(meth, interval_schedule(a.steps, budget), a.steps)
            fc = Forecaster(table, TablePredictor(table, (1, tokens, 64), xp), "output", None)
            flops = a.steps * f_full / (budget * f_full + (a.steps - budget) * 2 * table.K * M)
            cases.append((meth, budget, fc, flops))
    # interleaved: every repeat runs every case once, so a drifting GPU clock hits all of them alike;
    # the first round is a warm-up
    times: list[list[float]] = [[] for _ in cases]
    for r in range(a.repeats + 1):
        for n, (_, _, fc, _) in enumerate(cases):
            secs = run_once(fc)
            if r:
                times[n].append(secs)
    rows = []
    for (meth, budget, _, flops), ts in zip(cases, times):
        speedups = [f / c for f, c in zip(times[0], ts)]  # per round, against that round's full run
        # what a forecast step costs beyond nothing: the run minus its computed steps at the full run's rate
        over = [(c - budget * f / a.steps) / max(a.steps - budget, 1) * 1e3 for f, c in zip(times[0], ts)]
        rows.append({"method": meth, "full_steps": budget, "flops_reduction": flops,
                     "seconds": statistics.median(ts), "speedup": statistics.median(speedups),
                     "forecast_step_ms": statistics.median(over) if budget < a.steps else 0.0})
    print(f"\n{'method':12s} {'full':>4s} {'FLOPs red.':>10s} {'s/run':>8s} {'speed-up':>8s} {'ratio':>6s} "
          f"{'ms/forecast step':>16s}")
    for r in rows:
        r["ratio"] = r["speedup"] / r["flops_reduction"]
        print(f"{r['method']:12s} {r['full_steps']:4d} {r['flops_reduction']:9.2f}x {r['seconds']:8.3f} "
              f"{r['speedup']:7.2f}x {r['ratio']:6.3f} {r['forecast_step_ms']:16.3f}")
    if a.json:
        a.json.write_text(json.dumps({"config": a.config, "size": a.size, "dtype": a.dtype, "params": params,
                                      "eager_step_ms": eager_ms, "step_flops": f_full, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
