"""``run.json``: what a sampling run needs to be reproduced and explained.

Besides the settings (bundle and its hash, method, steps, seed and the seed of each image's
starting noise, conditioning, images per prompt, the classifier-free guidance scale and forecast
mode, and how many transformer calls and evaluations the run made: under guidance each computed
step evaluates both branches, in one call or two; a batch the engine does not take whole runs in
chunks, one call each) it records the
versions of l2p, ONNX Runtime, numpy and Python, the engine thread count, the image size, for
``l2p:NAME`` runs the predictor (name, sha256 of its ``predictor.json`` and coefficients,
schedule, K, tap, calibration score), and for bundles of a built-in model the caption checker's
verdict on every image (:mod:`l2p.tinymodel.checker`). Torch-free.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .models import builtin_model_of
from .sampling.pipeline import SampleResult, Sampler
from .sampling.settings import Method, RunSettings
from .versions import versions


def predictor_record(bundle: Bundle, settings: RunSettings) -> dict[str, Any] | None:
    """The calibrated predictor an ``l2p[:NAME]`` run used (``None`` for other methods)."""
    from .predictor.artifact import fingerprint, load_predictor
    from .sampling.methods import expectation

    method = Method.parse(settings.method)
    if method.kind != "l2p":
        return None
    folder = bundle.predictors_dir / method.name
    pred = load_predictor(folder, expect=expectation(bundle, settings.steps, settings=settings))
    return {"name": pred.name, **fingerprint(folder), "tap": pred.tap, "K": pred.K, "steps": pred.num_steps,
            "full_steps": len(pred.schedule), "schedule": list(pred.schedule),
            "calibration_psnr_db": pred.fit_stats.get("calibration_psnr_db"),
            "calibration_metric": pred.fit_stats.get("calibration_metric"), "cfg_scale": pred.cfg_scale,
            "cfg_forecast": pred.cfg_forecast}


def checker_verdicts(bundle: Bundle, images: np.ndarray | None,
                     prompts: Sequence[str]) -> list[dict[str, Any]] | None:
    """For a bundle of a built-in model sampled from prompts: the caption checker's verdict per
    image (``images`` uint8 ``(B, H, W, 3)``, one prompt each); ``None`` otherwise."""
    if builtin_model_of(bundle.manifest) is None or images is None or not images.size or len(prompts) != len(images):
        return None
    from .tinymodel.checker import check

    out = []
    for image, prompt in zip(images, prompts):
        r = check(image, prompt)
        out.append({"prompt": prompt, "ok": r.ok, "reason": r.reason, "colour": r.colour, "shape": r.shape,
                    "position": r.position})
    return out


def run_record(sampler: Sampler, settings: RunSettings, res: SampleResult, *, prompts: Sequence[str],
               images: Sequence[Path], threads: int | None, seeds: Sequence[int] | None = None,
               **fields: Any) -> dict[str, Any]:
    """The ``run.json`` of one ``l2p sample`` run.

    Args:
        prompts: the prompt of each image (empty for a COND.npz run).
        seeds: the seed of each image's starting noise (image ``k`` of a run from ``--seed S``:
            ``S + k``; ``--index`` runs: their images' seeds in the whole run); ``None`` when the
            noise came from a file (``--initial-latents``).
        images: the image files written.
        threads: the engines' intra-op thread count (``None`` where the backend has none).
        fields: the CLI's own fields (backend, device, conditioning file, ...), recorded as given.
    """
    shape = None if res.images is None or not res.images.size else list(res.images.shape[1:3])
    scale = sampler.cfg_scale_of(settings)
    return {
        "bundle": str(Path(sampler.bundle.root).resolve()), "bundle_hash": sampler.bundle.hash,
        "method": settings.method, "steps": settings.steps, "full_steps": res.loop.computed_steps,
        "seed": settings.seed, "seeds": None if seeds is None else [int(x) for x in seeds],
        "guidance": settings.guidance, "cfg_scale": scale,
        "cfg_forecast": settings.cfg_forecast if scale > 1 else None, "rows": int(res.final.shape[0]), **fields,
        "prompts": list(prompts), "versions": versions(), "threads": threads, "image_size": shape,
        "latent_shape": list(res.final.shape[1:]), "predictor": predictor_record(sampler.bundle, settings),
        "checker": checker_verdicts(sampler.bundle, res.images, prompts),
        "timings": {"denoise_s": res.seconds, "per_step_s": [s.seconds for s in res.loop.steps]},
        "computed_steps": [s.index for s in res.loop.steps if s.computed],
        "transformer_calls": res.loop.transformer_calls, "transformer_evaluations": res.loop.transformer_evaluations,
        "images": [p.name for p in images], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
