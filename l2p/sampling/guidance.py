"""Classifier-free guidance (CFG): the negative rows, the scale, and both branches of a step.

The guided families' diffusers pipelines (SD3, PixArt, DiT, Qwen-Image) run the transformer on
the negative (unconditional) and the conditional input and hand the scheduler their combination
``uncond + g * (cond - uncond)`` (Qwen-Image also rescales it, see
:meth:`~l2p.sampling.families.qwenimage.QwenImageRuntime.cfg_combine`). Here:

- :func:`effective_cfg_scale`: the scale a run uses (the family's diffusers default lives in
  :attr:`l2p.families.Family.cfg_scale`; FLUX.1 has no CFG and refuses a scale other than 1);
- :func:`split_conditioning`: the conditional rows and the negative ones (``negative_<input>``
  arrays, or the family's null condition), with the one-line error naming missing arrays;
- :class:`Branches`: the transformer on one computed step, both branches in one call at batch
  ``2B`` (``[uncond; cond]``) when the engine takes it and the two inputs agree in every
  non-batch dimension, otherwise two calls.

Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..engine.base import Engine
from ..errors import InputError
from ..families import family
from .conditioning import NEGATIVE
from .families.base import FamilyRuntime


def effective_cfg_scale(family_name: str, requested: float | None) -> float:
    """The CFG scale of a run: ``requested``, or the family's diffusers default when ``None``;
    1.0 (off) for families without CFG.

    Raises:
        InputError: a scale other than 1 for a family without classifier-free guidance (FLUX.1).
    """
    default = family(family_name).cfg_scale
    if default is None:
        if requested not in (None, 1.0):
            raise InputError(f"--cfg-scale {requested:g}: {family_name} bundles have no classifier-free guidance "
                             "(FLUX.1 embeds its guidance: use --guidance); drop --cfg-scale or give 1")
        return 1.0
    return default if requested is None else float(requested)


@dataclass(frozen=True)
class CFG:
    """The guidance of one run (only made when the scale is above 1).

    Attributes:
        scale: the CFG scale ``g`` (> 1).
        forecast: ``guided`` (cached methods forecast the combined output, ``B`` rows) or
            ``branches`` (they forecast both branches, ``2B`` rows ``[uncond; cond]``).
        negative: the negative branch's static inputs (``rt.static_inputs`` of the negative rows).
        fused: run both branches in one engine call at batch ``2B``.
    """

    scale: float
    forecast: str
    negative: Mapping[str, Any]
    fused: bool = True

    @property
    def branches(self) -> bool:
        return self.forecast == "branches"


def split_conditioning(rt: FamilyRuntime, cond: Mapping[str, np.ndarray],
                       guided: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """``cond`` -> (conditional rows, negative rows or ``None`` when not ``guided``).

    The negative rows are the ``negative_<name>`` arrays, or the family's own null condition
    (DiT's null class) where it has one.

    Raises:
        InputError: guided, and some ``negative_<name>`` arrays are missing (named in the message).
    """
    pos = {k: v for k, v in cond.items() if not k.startswith(NEGATIVE)}
    if not guided:
        return pos, None
    given = {k[len(NEGATIVE):]: v for k, v in cond.items() if k.startswith(NEGATIVE)}
    if given:
        missing = [NEGATIVE + n for n in rt.cond_names if n not in given]
    else:
        own = rt.negative_conditioning(pos)
        if own is not None:
            return pos, own
        missing = [NEGATIVE + n for n in rt.cond_names]
    if missing:
        raise InputError(f"classifier-free guidance needs the negative conditioning arrays {missing} (one row per "
                         "condition, shaped like the conditional ones); add them to COND.npz, or give --cfg-scale 1")
    rows = {len(v) for v in pos.values()} | {len(given[n]) for n in rt.cond_names}
    if len(rows) != 1:
        raise InputError(f"the negative conditioning arrays need one row per condition; got row counts {sorted(rows)}")
    return pos, {n: given[n] for n in rt.cond_names}


def fusable(engine: Engine, static: Mapping[str, np.ndarray], negative: Mapping[str, np.ndarray],
            step: Mapping[str, Any]) -> bool:
    """Whether one call at batch ``2B`` can run both branches: every static input with a leading
    ``batch`` dim agrees with its negative in the other dims, every other static input is equal in
    both, and the engine takes the doubled shapes (a TensorRT plan's profile may not).

    ``step``: one step's inputs at batch ``B`` (host arrays; only their shapes are read).
    """
    spec = engine.spec
    shapes: dict[str, tuple[int, ...]] = {}
    for name, a in static.items():
        b = negative[name]
        if spec.input(name).shape[:1] == ("batch",):
            if a.shape[1:] != b.shape[1:]:
                return False
            shapes[name] = (a.shape[0] + b.shape[0], *a.shape[1:])
        elif a.shape != b.shape or not np.array_equal(a, b):
            return False
    for name, a in step.items():
        shapes[name] = (2 * a.shape[0], *a.shape[1:]) if spec.input(name).shape[:1] == ("batch",) else a.shape
    return engine.accepts(shapes)


#: runs an engine on a feed: (engine, feed, check) -> outputs (host or device arrays)
RunEngine = Callable[[Engine, dict[str, Any], bool], dict[str, Any]]


class Branches:
    """The transformer on one computed step, as the denoising loop sees it.

    Without guidance: one call on the conditional rows. With a :class:`CFG`: the negative and the
    conditional branch (one ``2B`` call or two ``B`` calls); :meth:`outputs` returns what the
    feature history holds: the combined ``sample`` (``guided``) or every output as ``[uncond;
    cond]`` along the batch (``branches``), and :meth:`model_output` turns that (or its forecast)
    into what the scheduler consumes.

    Args:
        rt: the family runtime.
        engine: the transformer engine.
        static: conditional static inputs, in ``xp``.
        cfg: the guidance, its ``negative`` in ``xp``; ``None`` = unguided.
        latents: the starting latents ``(B, ...)`` in ``xp`` (only the shape is read).
        timesteps: the scheduler's timesteps.
        xp: the array namespace (numpy or cupy).
    """

    def __init__(self, rt: FamilyRuntime, engine: Engine, static: Mapping[str, Any], cfg: CFG | None,
                 latents: Any, timesteps: Sequence[float], xp: ModuleType = np) -> None:
        self.rt, self.engine, self.static, self.cfg, self.xp = rt, engine, dict(static), cfg, xp
        self.rows = int(latents.shape[0])
        #: engine calls per computed step, and transformer evaluations (branches) per computed step
        self.calls, self.evaluations = (1, 1) if cfg is None else ((1, 2) if cfg.fused else (2, 2))
        self.timestep_in = rt.timestep_inputs(latents, timesteps, xp)  # per step, batch B
        self.fused_static: dict[str, Any] = {}
        self.fused_timestep_in: list[dict[str, Any]] = []
        if cfg is not None and cfg.fused:
            batched = {n for n in static if engine.spec.input(n).shape[:1] == ("batch",)}
            self.fused_static = {n: xp.concatenate([cfg.negative[n], a]) if n in batched else a
                                 for n, a in self.static.items()}  # (2B, ...): [uncond; cond]
            self.fused_timestep_in = rt.timestep_inputs(xp.concatenate([latents, latents]), timesteps, xp)

    def step_inputs(self, latents: Any, i: int, t: float) -> dict[str, Any]:
        """Step ``i``'s inputs at batch ``B``: the latents and the uploaded timestep."""
        return {**self.rt.step_inputs(latents, t), **self.timestep_in[i]}

    def history_latents(self, latents: Any) -> Any:
        """The latents that sit beside the forecast feature: ``[latents; latents]`` for ``branches``."""
        if self.cfg is not None and self.cfg.branches:
            return self.xp.concatenate([latents, latents])
        return latents

    def outputs(self, latents: Any, i: int, t: float, check: bool, run: RunEngine) -> dict[str, Any]:
        """The transformer's outputs on step ``i`` (see the class docstring for their layout)."""
        step_in = self.step_inputs(latents, i, t)
        if self.cfg is None:
            return run(self.engine, {**self.static, **step_in}, check)
        xp, cfg = self.xp, self.cfg
        if cfg.fused:
            lat2 = xp.concatenate([latents, latents])  # (2B, ...)
            out = run(self.engine, {**self.fused_static, **self.rt.step_inputs(lat2, t),
                                    **self.fused_timestep_in[i]}, check)
            if cfg.branches:
                return out
            neg, pos = {k: v[: self.rows] for k, v in out.items()}, {k: v[self.rows:] for k, v in out.items()}
        else:
            neg = run(self.engine, {**cfg.negative, **step_in}, check)
            pos = run(self.engine, {**self.static, **step_in}, check)
            if cfg.branches:
                return {k: xp.concatenate([neg[k], pos[k]]) for k in pos}
        return {"sample": self.rt.cfg_combine(neg["sample"], pos["sample"], cfg.scale)}

    def model_output(self, out: Mapping[str, Any]) -> Any:
        """What the scheduler consumes, from :meth:`outputs` (or a forecast of its ``sample``)."""
        model_out = self.rt.model_output(out)
        if self.cfg is None or not self.cfg.branches:
            return model_out
        return self.rt.cfg_combine(model_out[: self.rows], model_out[self.rows:], self.cfg.scale)
