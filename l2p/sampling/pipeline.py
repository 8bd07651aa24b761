"""Text-to-image with the bundle's engines only: tokenize, encode, denoise, decode. Torch-free."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, open_bundle
from ..engine.base import Engine
from ..engine.device_array import get_xp
from ..engine.registry import device_backends, open_engine
from ..errors import InputError, NumericalError
from ..models import builtin_model_of, check_builtin_prompts
from ..limits import check_bound
from .conditioning import NEGATIVE, check_conditioning, load_conditioning
from .families import runtime_for
from .batching import BatchPlan, cut, merge_loops, run_in_chunks, transformer_plan
from .families.base import FamilyRuntime
from .guidance import CFG, effective_cfg_scale, split_conditioning
from .loop import Capture, Forecaster, LoopResult, denoise
from .methods import EngineFactory, make_forecaster
from .schedulers import make_scheduler
from .settings import DEFAULT_CFG_FORECAST, RunSettings, check_cfg_forecast, check_cfg_scale, check_guidance
from .text import check_text, load_tokenizers


@dataclass
class SampleResult:
    """One sampling run of a batch of conditions."""

    initial: np.ndarray  # packed starting noise, float32
    final: np.ndarray  # packed final latent, float32
    loop: LoopResult
    seconds: float
    images: np.ndarray | None = None  # (B, H, W, 3) uint8


class Sampler:
    """Samples from a bundle, on the CPU or with the whole denoising loop on a GPU.

    The bundle is opened (and every file's sha256 verified) once, here; open one sampler per
    bundle and hand it to whatever runs on it (:class:`~l2p.calibration.calibrate.Calibrator`,
    :func:`~l2p.bench.run_bench`). Engines and forecasters are made on first use and kept.

    Args:
        bundle: a bundle folder or an opened :class:`Bundle`.
        backend: engine backend name (``onnxruntime``, ``onnxruntime-cuda``, ``tensorrt``...).
        threads: CPU threads per engine (default: all cores).
        guidance_scale: FLUX guidance-embedding value of :meth:`sample` runs (ignored by models
            without one); :meth:`run` takes it from its :class:`RunSettings`.
        device: ``cpu`` (numpy loop, host engines) or ``cuda``/``cuda:N`` (cupy loop: latents,
            history and predictor I/O stay on the GPU; backend ``tensorrt``, ``onnxruntime-cuda``
            or ``onnxruntime-tensorrt``). Predictor and head graphs run on ONNX Runtime's CUDA
            provider there (in-memory graphs, no TensorRT plan needed).
        use_cuda_graph: capture and replay one CUDA graph per input shape (backend ``tensorrt``).
        cfg_scale, cfg_forecast: classifier-free guidance of :meth:`sample` runs (see
            :class:`RunSettings`; ``None`` = the family's diffusers default); :meth:`run` takes them
            from its :class:`RunSettings`.

    Attributes:
        fuse_branches: run both CFG branches in one engine call at batch ``2B`` where the engine
            and the inputs allow it (default); ``False``: always two calls.
    """

    def __init__(self, bundle: str | os.PathLike[str] | Bundle, backend: str = "onnxruntime",
                 threads: int | None = None, guidance_scale: float = 3.5, verify: bool = True,
                 device: str = "cpu", use_cuda_graph: bool = False, cfg_scale: float | None = None,
                 cfg_forecast: str = DEFAULT_CFG_FORECAST) -> None:
        self.guidance_scale = check_guidance(guidance_scale)
        self.cfg_scale = check_cfg_scale(cfg_scale)
        self.cfg_forecast = check_cfg_forecast(cfg_forecast)
        self.fuse_branches = True
        if use_cuda_graph and backend != "tensorrt":
            raise InputError(f"CUDA graphs need --backend tensorrt, not {backend}")
        if device.lower() != "cpu" and backend not in device_backends():
            raise InputError(f"--device {device} needs a GPU backend ({', '.join(sorted(device_backends()))}); "
                             f"{backend} runs on the CPU: use --device cpu")
        self.xp = get_xp(device)  # numpy, or cupy (MissingDependencyError naming l2p[gpu] without it)
        self.on_device = self.xp is not np
        self.device_id = int(device.partition(":")[2] or 0)
        self.use_cuda_graph = use_cuda_graph
        self.bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle, verify=verify)
        effective_cfg_scale(self.bundle.family, self.cfg_scale)  # FLUX refuses a CFG scale before any work
        self.backend = backend
        self.threads = threads
        self.rt = runtime_for(self.bundle, guidance_scale=self.guidance_scale)
        self._runtimes = {self.guidance_scale: self.rt}
        self._engines: dict[str, Engine] = {}
        self._tokenizers: dict[str, Any] | None = None
        self._forecasters: dict[RunSettings, Forecaster | None] = {}

    def engine(self, graph: str) -> Engine:
        """The engine for ``graph`` (created on first use; a device engine when sampling on a GPU)."""
        if graph not in self._engines:
            opts: dict[str, Any] = {"threads": self.threads} if self.backend.startswith("onnxruntime") else {}
            if self.use_cuda_graph:
                opts["use_cuda_graph"] = True
            if self.backend == "tensorrt":
                opts["bundle"] = self.bundle  # its plan cache and graph hashes, without reopening it
            elif self.backend.startswith("onnxruntime") and not self.on_device:
                opts["spinning"] = graph == "transformer"  # only the transformer's idle workers spin
            device = f"cuda:{self.device_id}" if self.on_device else "cpu"
            self._engines[graph] = open_engine(self.backend, self.bundle.onnx_path(graph), self.bundle.spec(graph),
                                               name=graph, device=device, **opts)
        return self._engines[graph]

    def _aux_engine(self, source: str | os.PathLike[str] | bytes, spec: Any, name: str) -> Engine:
        """Predictor/head engines on the GPU: ONNX Runtime's CUDA provider with device I/O."""
        return open_engine("onnxruntime-cuda", source, spec, name=name, device=f"cuda:{self.device_id}",
                           threads=self.threads)

    # conditioning ---------------------------------------------------------------------------
    def encode(self, prompts: list[str], negative_prompt: str | None = None) -> dict[str, np.ndarray]:
        """Conditioning rows for ``prompts`` through the bundle's text encoders; with a
        ``negative_prompt`` (CFG: diffusers' default is ``""``) also its rows, one per prompt, as
        the ``negative_*`` arrays, encoded by the same encoders."""
        if not prompts or any(not isinstance(p, str) for p in prompts):
            raise InputError("give at least one prompt text")
        for i, p in enumerate(prompts):
            check_text(p, f"prompt {i}")
        check_bound("cond_rows", len(prompts), "the number of prompts", "sample or calibrate in several runs",
                    error=InputError)
        for i, p in enumerate(prompts):
            check_bound("prompt_chars", len(p), f"the length of prompt {i} in characters", "shorten it",
                        error=InputError)
        builtin = builtin_model_of(self.bundle.manifest)
        if builtin is not None:  # its few words: say so instead of a blank image or "too many tokens"
            check_builtin_prompts(builtin, prompts)
        if self._tokenizers is None:
            self._tokenizers = load_tokenizers(self.bundle.root, self.bundle.manifest.get("tokenizers", {}))
        def run(graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return run_in_chunks(self.engine(graph), feed)  # in batches the engine takes

        cond = self.rt.encode(prompts, run, self._tokenizers)
        if negative_prompt is not None:
            check_text(negative_prompt, "the negative prompt")
            neg = self.rt.encode([negative_prompt] * len(prompts), run, self._tokenizers)
            cond.update({NEGATIVE + k: v for k, v in neg.items()})
        return self.check_conditioning(cond, "text encoders")

    def encode_for_runs(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """:meth:`encode` for this sampler's own runs: with diffusers' default negative prompt ``""``
        when they are guided (:attr:`run_cfg_scale` above 1)."""
        return self.encode(prompts, "" if self.run_cfg_scale > 1 else None)

    def load_conditioning(self, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        return load_conditioning(path, self.bundle.spec("transformer"), self.rt.cond_names)

    def check_conditioning(self, cond: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        return check_conditioning(cond, self.bundle.spec("transformer"), self.rt.cond_names, source)

    # sampling -------------------------------------------------------------------------------
    def forecaster(self, settings: RunSettings) -> Forecaster | None:
        """The forecaster of ``settings.method`` for its step counts (made once, then reused)."""
        key = replace(settings, seed=0)  # the seed does not change the forecaster
        if key not in self._forecasters:
            make: EngineFactory | None = self._aux_engine if self.on_device else None
            self._forecasters[key] = make_forecaster(self.bundle, settings, self.threads, make)
        return self._forecasters[key]

    def sample(self, cond: dict[str, np.ndarray], seed: int, steps: int, method: str = "full",
               full_steps: int | None = None, initial: np.ndarray | None = None,
               capture: Capture | None = None, decode: bool = True, progress: Any = None,
               forecaster: Forecaster | None = None, shadow: bool = False) -> SampleResult:
        """:meth:`run` with ``RunSettings(steps, seed, method, full_steps)`` and this sampler's guidance
        and classifier-free guidance."""
        settings = RunSettings(steps=steps, seed=seed, method=method, full_steps=full_steps,
                               guidance=self.guidance_scale, cfg_scale=self.cfg_scale,
                               cfg_forecast=self.cfg_forecast)
        return self.run(cond, settings, initial=initial, capture=capture, decode=decode, progress=progress,
                        forecaster=forecaster, shadow=shadow)

    def run(self, cond: dict[str, np.ndarray], settings: RunSettings, initial: np.ndarray | None = None,
            capture: Capture | None = None, decode: bool = True, progress: Any = None,
            forecaster: Forecaster | None = None, shadow: bool = False) -> SampleResult:
        """Denoise one batch (all rows of ``cond``) from ``settings.seed`` or the given ``initial`` latents.

        Image ``k`` (row ``k``) starts from the noise of seed ``settings.seed + k``
        (:meth:`~l2p.sampling.families.base.FamilyRuntime.noise`), so it equals that row sampled
        alone with that seed. ``forecaster`` overrides ``settings.method`` (calibration passes
        in-memory predictors; on a GPU its engines must be device engines). Noise is drawn on the
        host, so a seed gives the same starting latents on every device; only the final latents
        come back from a GPU.

        The rows go through the transformer as one batch when its engine takes it, else in
        consecutive chunks of the largest batch it takes (:meth:`batch_plan`; ``progress(i)`` is then
        called after every step of every chunk); with a ``capture`` always as one batch.

        Under classifier-free guidance (``settings.cfg_scale``, or the family's default, above 1)
        ``cond`` holds the negative rows too (``negative_*`` arrays; DiT uses its null class).
        """
        rt, static, neg_static, batch = self._inputs(cond, settings)
        if initial is None:
            initial = rt.noise(settings.seed, batch)
        else:
            want = rt.latent_shape(batch)
            if tuple(initial.shape) != want or initial.dtype != np.float32 or not np.isfinite(initial).all():
                raise InputError(
                    f"initial latents have shape {list(initial.shape)} dtype {initial.dtype}; expected finite "
                    f"float32 {list(want)} (packed as the transformer takes it)"
                )
        if forecaster is None:
            forecaster = self.forecaster(settings)
        engine = self.engine("transformer")
        plan = self._plan(rt, static, neg_static, batch, chunk=capture is None)
        parts = []
        t0 = time.perf_counter()
        for rows in plan.slices:
            scheduler = make_scheduler(self.bundle.scheduler_config())  # a fresh one per chunk
            cfg = None if neg_static is None else CFG(self.cfg_scale_of(settings), settings.cfg_forecast,
                                                      cut(neg_static, engine.spec, rows), plan.fused)
            with self.xp.cuda.Device(self.device_id) if self.on_device else nullcontext():
                parts.append(denoise(rt, scheduler, engine, initial[rows].copy(),
                                     cut(static, engine.spec, rows), settings.steps, forecaster, capture=capture,
                                     progress=progress, shadow=shadow, xp=self.xp, cfg=cfg))
        loop = merge_loops(parts)
        seconds = time.perf_counter() - t0
        res = SampleResult(initial, loop.latents, loop, seconds)
        if decode:
            res.images = self.decode(loop.latents)
        return res

    def batch_plan(self, cond: dict[str, np.ndarray], settings: RunSettings) -> BatchPlan:
        """How :meth:`run` sends the rows of ``cond`` through the transformer engine: one batch,
        or consecutive chunks of the largest batch its engine takes (under guidance, both branches
        in one ``2b`` call where the profile and the negative inputs allow it)."""
        rt, static, neg_static, batch = self._inputs(cond, settings)
        return self._plan(rt, static, neg_static, batch)

    def _inputs(self, cond: dict[str, np.ndarray], settings: RunSettings
                ) -> tuple[FamilyRuntime, dict[str, np.ndarray], dict[str, np.ndarray] | None, int]:
        """The runtime of ``settings``, the static inputs of the conditional and (guided) negative
        rows, and the number of rows."""
        rt = self._runtime(settings.guidance)
        pos, negative = split_conditioning(rt, cond, self.cfg_scale_of(settings) > 1)
        rows = int(next(iter(pos.values())).shape[0])
        return rt, rt.static_inputs(pos), None if negative is None else rt.static_inputs(negative), rows

    def _plan(self, rt: FamilyRuntime, static: dict[str, np.ndarray], neg_static: dict[str, np.ndarray] | None,
              batch: int, chunk: bool = True) -> BatchPlan:
        return transformer_plan(self.engine("transformer"), rt, static, neg_static, batch, self.fuse_branches, chunk)

    @property
    def run_cfg_scale(self) -> float:
        """The classifier-free guidance scale of this sampler's own runs (its ``cfg_scale``, else
        the family's default; 1.0: none)."""
        return self.cfg_scale_of(RunSettings(cfg_scale=self.cfg_scale))

    def cfg_scale_of(self, settings: RunSettings) -> float:
        """The classifier-free guidance scale a run of ``settings`` uses (1.0: none)."""
        return effective_cfg_scale(self.bundle.family, settings.cfg_scale)

    def _runtime(self, guidance: float) -> FamilyRuntime:
        """The family runtime that feeds ``guidance`` (one per value, made on first use)."""
        if guidance not in self._runtimes:
            self._runtimes[guidance] = runtime_for(self.bundle, guidance_scale=guidance)
        return self._runtimes[guidance]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Packed latents -> ``(B, H, W, 3)`` uint8 images (VAE decoder, or the latent itself)."""
        image = self.decode_float(latents)
        return np.zeros((0,), np.uint8) if image is None else to_uint8(image)

    def decode_float(self, latents: np.ndarray) -> np.ndarray | None:
        """Packed latents -> ``(B, H, W, 3)`` float32 images in [0, 1] before 8-bit rounding
        (VAE decoder, or the latent itself when it has <= 4 channels); ``None`` when neither."""
        spatial = self.rt.to_vae_latent(latents)  # (B, C, h, w)
        if self.bundle.has("vae_decoder"):
            image = run_in_chunks(self.engine("vae_decoder"), {"latent": np.ascontiguousarray(spatial)})["image"]
            if not np.isfinite(image).all():  # NaN would become a black image
                raise NumericalError("the vae_decoder engine produced NaN/Inf; stopping instead of writing a broken "
                                     "image (try an fp32 bundle: l2p export ... --precision fp32, or another backend)")
            image = np.clip(image / 2 + 0.5, 0, 1)  # (B, 3, H, W)
        elif spatial.shape[1] <= 4:
            lo = spatial.min(axis=(1, 2, 3), keepdims=True)
            hi = spatial.max(axis=(1, 2, 3), keepdims=True)
            image = (spatial[:, :3] - lo) / np.maximum(hi - lo, 1e-8)
            if image.shape[1] < 3:
                image = np.concatenate([image, np.repeat(image[:, -1:], 3 - image.shape[1], 1)], 1)
        else:
            return None
        return np.ascontiguousarray(image.transpose(0, 2, 3, 1), dtype=np.float32)  # (B, H, W, 3)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8 (rounded), same shape."""
    return (image * 255).round().astype(np.uint8)


def save_images(images: np.ndarray, out: Path, prefix: str = "image") -> list[Path]:
    """Write ``(B, H, W, 3)`` uint8 images as PNG files (atomically)."""
    from PIL import Image

    from ..atomic import atomic_open

    paths = []
    for b, img in enumerate(images):
        p = out / f"{prefix}_{b:03d}.png"
        with atomic_open(p, "wb") as f:
            Image.fromarray(img).save(f, format="PNG")
        paths.append(p)
    return paths
