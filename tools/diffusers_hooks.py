"""PyTorch side of ``tools/diffusers_caches.py``: diffusers' own cache hooks on a FLUX pipeline,
with the transformer FLOPs that really ran counted per call.

- :class:`FlopMeter` counts, per transformer call, the FLOPs of every ``nn.Linear`` that ran
  (``2 * in * out`` per token row) and of every attention core that ran (``4 * B * L^2 * inner``:
  ``Q K^T`` and ``softmax(.) V`` over the joint sequence of ``L`` tokens). These are the FLOPs
  ``torch.utils.flop_counter`` counts for the same ops (mm/addmm/sdpa; elementwise work is not
  counted). A block or attention module that a cache hook skips calls none of its Linear
  layers, so what is skipped is not counted.
- :func:`cache_methods` turns the tool's ``--taylorseer``/``--fbc``/``--magcache`` settings into
  diffusers configs (``TaylorSeerCacheConfig``, ``FirstBlockCacheConfig``, ``MagCacheConfig``).
- :func:`magcache_ratios` runs MagCache's calibration mode and returns its printed ratios.
"""

from __future__ import annotations

import ast
import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


class FlopMeter:
    """Transformer FLOPs per call (see the module docstring); ``calls`` is a list, one entry per
    ``transformer(...)`` call since the last :meth:`reset`.

    Counting wraps the ``forward`` of every ``nn.Linear`` and attention module, so create the
    meter *before* enabling a cache: diffusers' hooks then wrap these wrappers, and a module whose
    computation a hook skips (or replaces by a forecast) is not counted. (A PyTorch forward hook
    would fire on every ``__call__``, skipped or not.)
    """

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.calls: list[int] = []
        self._attn: list[int] = [0, 0, 0]  # attention module being run: batch, query tokens, inner dim
        self._wrapped: list[torch.nn.Module] = []
        self._handle = transformer.register_forward_pre_hook(lambda m, a: self.calls.append(0))
        for mod in transformer.modules():
            if isinstance(mod, torch.nn.Linear):
                self._wrap(mod, self._linear)
            if isinstance(getattr(mod, "to_q", None), torch.nn.Linear):  # an attention module
                self._wrap(mod, self._attention)

    def _wrap(self, mod: torch.nn.Module, count: Any) -> None:
        inner = mod.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            return count(mod, inner, args, kwargs)

        mod.forward = forward  # an instance attribute over the class's method; diffusers' hooks wrap it in turn
        self._wrapped.append(mod)

    def _add(self, flops: int) -> None:
        if self.calls:  # work outside a transformer call (none in FLUX) is not counted
            self.calls[-1] += flops

    def _linear(self, mod: torch.nn.Linear, inner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = inner(*args, **kwargs)
        rows = out.numel() // mod.out_features
        self._add(2 * rows * mod.in_features * mod.out_features)
        if mod is getattr(self._owner, "to_q", None) or mod is getattr(self._owner, "add_q_proj", None):
            self._attn = [out.shape[0], self._attn[1] + out.shape[-2], mod.out_features]  # (B, L, inner)
        return out

    _owner: Any = None  # the attention module whose forward is running

    def _attention(self, mod: torch.nn.Module, inner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        outer, self._owner, self._attn = self._owner, mod, [0, 0, 0]
        try:
            out = inner(*args, **kwargs)
        finally:
            b, seq, dim = self._attn
            self._owner = outer
        self._add(4 * b * seq * seq * dim)  # joint attention over image (+ text) tokens: Q K^T and A V
        return out

    def reset(self) -> None:
        self.calls = []

    def remove(self) -> None:
        self._handle.remove()
        for mod in self._wrapped:
            del mod.forward


@dataclass
class CacheMethod:
    """One diffusers configuration to run: its table label and config (``None``: full compute)."""

    label: str
    config: Any = None
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def taylorseer_steps(steps: int, warmup: int, interval: int) -> tuple[int, ...]:
    """The steps diffusers' ``TaylorSeerCacheHook`` computes: ``i < warmup`` or
    ``(i - warmup - 1) % interval == 0`` (``_measure_should_compute`` in ``hooks/taylorseer_cache.py``)."""
    return tuple(i for i in range(steps) if i < warmup or (i - warmup - 1) % interval == 0)


def cache_methods(taylorseer: list[str], fbc: list[str], magcache: list[str], steps: int,
                  mag_ratios: list[float] | None) -> list[CacheMethod]:
    """diffusers configs from the CLI settings.

    ``taylorseer``: ``WARMUP:INTERVAL:ORDER[:lite]`` (``lite``: the output-level variant, blocks
    skipped and ``proj_out`` forecast; else diffusers' default, every attention module forecast
    and the rest of each block computed); ``fbc``: thresholds; ``magcache``:
    ``THRESHOLD:MAX_SKIP:RETENTION``. Taylor factors are kept in float32 (diffusers' default is bf16).
    """
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    out = []
    for s in taylorseer:
        parts = s.split(":")
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in ("lite", "attn")):
            raise SystemExit(f"error: --taylorseer {s!r}: expected WARMUP:INTERVAL:ORDER[:lite|:attn], e.g. 3:7:1:lite")
        w, n, o = (int(x) for x in parts[:3])
        lite = len(parts) == 4 and parts[3] == "lite"
        cfg = TaylorSeerCacheConfig(cache_interval=n, disable_cache_before_step=w, max_order=o,
                                    taylor_factors_dtype=torch.float32, use_lite_mode=lite)
        computed = taylorseer_steps(steps, w, n)
        out.append(CacheMethod(f"TaylorSeer{o} {'lite' if lite else 'attn'} w{w}/n{n}", cfg,
                               settings={"warmup": w, "interval": n, "order": o, "lite": lite,
                                         "computed": list(computed)}))
    for s in fbc:
        out.append(CacheMethod(f"FirstBlockCache {float(s):g}", FirstBlockCacheConfig(threshold=float(s)),
                               settings={"threshold": float(s)}))
    for s in magcache:
        parts = s.split(":")
        if len(parts) != 3:
            raise SystemExit(f"error: --magcache {s!r}: expected THRESHOLD:MAX_SKIP:RETENTION, e.g. 0.06:3:0.2")
        thr, k, ret = float(parts[0]), int(parts[1]), float(parts[2])
        assert mag_ratios is not None, "MagCache needs calibrated ratios"
        cfg = MagCacheConfig(threshold=thr, max_skip_steps=k, retention_ratio=ret, num_inference_steps=steps,
                             mag_ratios=list(mag_ratios))
        out.append(CacheMethod(f"MagCache {thr:g} K{k} r{ret:g}", cfg,
                               settings={"threshold": thr, "max_skip_steps": k, "retention_ratio": ret}))
    return out


def load_flux(path: Path) -> Any:
    """``FluxPipeline.from_pretrained(path)`` in fp32 on the CPU (offline), progress bar off."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class FluxRunner:
    """Runs one FLUX pipeline from given packed noise, with or without a cache, counting FLOPs."""

    def __init__(self, pipe: Any, max_sequence_length: int, height: int, width: int, steps: int,
                 guidance: float) -> None:
        self.pipe, self.steps, self.guidance = pipe, steps, guidance
        self.height, self.width, self.max_sequence_length = height, width, max_sequence_length
        self.meter = FlopMeter(pipe.transformer)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """diffusers' own text encoders: ``(B, T, D)`` T5 and ``(B, D')`` pooled CLIP embeddings."""
        with torch.no_grad():
            embeds, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None,
                                                        max_sequence_length=self.max_sequence_length)
        return embeds, pooled

    def run(self, noise: np.ndarray, cond: tuple[torch.Tensor, torch.Tensor],
            config: Any = None) -> tuple[np.ndarray, float, list[int]]:
        """Denoise ``noise`` (packed ``(B, S, 4C)`` float32) for the :meth:`encode` output ``cond``
        with the cache ``config`` (``None``: full compute). Returns the packed final latents
        ``(B, S, 4C)``, the seconds of the pipeline call and the FLOPs of every transformer call."""
        tr = self.pipe.transformer
        if config is not None:
            tr.enable_cache(config)
        self.meter.reset()
        try:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = self.pipe(prompt_embeds=cond[0], pooled_prompt_embeds=cond[1],
                                latents=torch.from_numpy(noise), num_inference_steps=self.steps,
                                guidance_scale=self.guidance, height=self.height, width=self.width,
                                output_type="latent").images
            seconds = time.perf_counter() - t0
        finally:
            if config is not None:
                tr.disable_cache()
        return out.float().numpy(), seconds, list(self.meter.calls)

    def decode(self, packed: np.ndarray) -> np.ndarray:
        """Packed latents -> ``(B, H, W, 3)`` uint8, as ``FluxPipeline`` decodes (rounded like l2p's images)."""
        pipe = self.pipe
        with torch.no_grad():
            lat = pipe._unpack_latents(torch.from_numpy(packed), self.height, self.width, pipe.vae_scale_factor)
            lat = lat / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor  # (B, C, h, w)
            image = pipe.vae.decode(lat, return_dict=False)[0]
            image = pipe.image_processor.postprocess(image, output_type="np")  # (B, H, W, 3) in [0, 1]
        return (np.asarray(image) * 255).round().astype(np.uint8)


def magcache_ratios(runner: FluxRunner, noise: np.ndarray, cond: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    """MagCache's calibration mode (``MagCacheConfig(calibrate=True)``) on the conditions ``cond``:
    the ratios it prints at the end of the run (its documented way to hand them over)."""
    from diffusers import MagCacheConfig

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        runner.run(noise, cond, MagCacheConfig(calibrate=True, num_inference_steps=runner.steps))
    lines = buf.getvalue().splitlines()
    found = [ast.literal_eval(line) for line in lines if line.startswith("[") and line.endswith("]")]
    if len(found) != 1 or len(found[0]) != runner.steps:
        raise RuntimeError(f"MagCache calibration printed no ratios list of {runner.steps} values: {buf.getvalue()!r}")
    return [float(x) for x in found[0]]
