"""One request of the model ``l2p``: its arrays -> a validated :class:`Job` -> one sampling run.

:func:`run_job` is the only place the server calls the sampling API; a request's result is what
``l2p sample`` gives for the same inputs and seed (one condition row, batch 1), whatever else
Triton batched with it, because every job is its own sampling run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..sampling.pipeline import Sampler
from ..sampling.settings import RunSettings
from ..sampling.conditioning import NEGATIVE
from .contract import Interface

DEFAULT_STEPS = 50  # as ``l2p sample``


@dataclass(frozen=True)
class Defaults:
    """What a request that omits an option gets (the repository's settings)."""

    steps: int = DEFAULT_STEPS
    method: str = "full"
    full_steps: int | None = None


@dataclass(frozen=True)
class Job:
    """One validated request: exactly one of ``prompt`` / ``cond`` is set.

    ``cfg_scale`` ``None`` is the family's default; ``cond`` holds the ``negative_<name>`` arrays
    the request sent next to the conditional ones.
    """

    seed: int
    steps: int
    method: str
    full_steps: int | None
    prompt: str | None = None
    cond: dict[str, np.ndarray] | None = None  # name -> float32 (1, ...)
    cfg_scale: float | None = None
    negative_prompt: str = ""


def _one(name: str, a: np.ndarray) -> Any:
    """The single value of a ``[1, 1]`` option tensor."""
    if a.size != 1:
        raise InputError(f"input '{name}' has shape {list(a.shape)}; expected [1, 1] (one value per request)")
    return a.reshape(-1)[0]


def _text(name: str, a: np.ndarray) -> str:
    v = _one(name, a)
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"input '{name}' is not UTF-8 text") from None
    return str(v)


def _int(name: str, a: np.ndarray) -> int:
    return int(_one(name, a))


def parse_job(arrays: Mapping[str, np.ndarray | None], iface: Interface, defaults: Defaults) -> Job:
    """Validate one request's input arrays (``None`` for an input the request omitted).

    Raises :class:`~l2p.errors.InputError` with the message ``l2p sample`` gives for the same
    mistake (steps out of range, unknown method...) where the CLI has one.
    """
    for name, a in arrays.items():
        if a is not None and (a.ndim == 0 or a.shape[0] != 1):
            raise InputError(f"input '{name}' has shape {list(a.shape)}: send one image per request (batch "
                             "dimension 1); Triton batches concurrent requests itself")
    seed = arrays.get("seed")
    if seed is None:
        raise InputError("input 'seed' (INT64, shape [1, 1]) is required")
    scale_in = arrays.get("cfg_scale")
    cfg_scale = None if scale_in is None else float(_one("cfg_scale", scale_in))
    method_in = arrays.get("method")
    method = defaults.method if method_in is None else _text("method", method_in)
    steps_in, full_in = arrays.get("steps"), arrays.get("full_steps")
    steps = defaults.steps if steps_in is None else _int("steps", steps_in)
    # the repository's budget belongs to its method: a request naming a method brings its own
    full_steps = _int("full_steps", full_in) if full_in is not None else \
        (defaults.full_steps if method_in is None else None)
    job_seed = _int("seed", seed)
    # the CLI's checks and messages
    RunSettings(steps=steps, seed=job_seed, method=method, full_steps=full_steps, cfg_scale=cfg_scale)
    if iface.takes_prompts:
        prompt, negative = arrays.get("prompt"), arrays.get("negative_prompt")
        if prompt is None:
            raise InputError("input 'prompt' (BYTES, shape [1, 1]) is required: this bundle has text encoders")
        return Job(job_seed, steps, method, full_steps, prompt=_text("prompt", prompt), cfg_scale=cfg_scale,
                   negative_prompt="" if negative is None else _text("negative_prompt", negative))
    missing = [n for n in iface.cond_names if arrays.get(n) is None]
    if missing:
        raise InputError(f"inputs {missing} are required: this bundle takes conditioning arrays "
                         f"{list(iface.cond_names)} (FP32, leading batch dimension 1)")
    names = [*iface.cond_names, *(NEGATIVE + n for n in iface.cond_names)]
    cond = {n: arrays[n] for n in names if arrays.get(n) is not None}
    return Job(job_seed, steps, method, full_steps, cond=cond, cfg_scale=cfg_scale)  # type: ignore[arg-type]


def run_job(sampler: Sampler, job: Job, image: bool) -> dict[str, np.ndarray]:
    """Sample one job: ``latents`` float32 ``(1, L, C)`` and, with ``image``, uint8 ``(1, H, W, 3)``."""
    settings = RunSettings(steps=job.steps, seed=job.seed, method=job.method, full_steps=job.full_steps,
                           guidance=sampler.guidance_scale, cfg_scale=job.cfg_scale,
                           cfg_forecast=sampler.cfg_forecast)
    if job.prompt is not None:
        guided = sampler.cfg_scale_of(settings) > 1
        cond = sampler.encode([job.prompt], job.negative_prompt if guided else None)
    else:
        assert job.cond is not None
        cond = sampler.check_conditioning(job.cond, "request")
    res = sampler.run(cond, settings, decode=image)
    out = {"latents": np.ascontiguousarray(res.final, dtype=np.float32)}
    if image:
        assert res.images is not None
        out["image"] = np.ascontiguousarray(res.images, dtype=np.uint8)
    return out
