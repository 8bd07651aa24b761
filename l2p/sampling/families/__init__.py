"""Runtime families by bundle ``family`` name."""

from __future__ import annotations

import importlib
from typing import Any

from ...bundle import Bundle
from ...errors import UnsupportedModelError
from .base import FamilyRuntime

RUNTIMES: dict[str, tuple[str, str]] = {
    "flux": ("l2p.sampling.families.flux", "FluxRuntime"),
    "sd3": ("l2p.sampling.families.sd3", "SD3Runtime"),
    "dit": ("l2p.sampling.families.dit", "DiTRuntime"),
    "pixart": ("l2p.sampling.families.pixart", "PixArtRuntime"),
    "qwenimage": ("l2p.sampling.families.qwenimage", "QwenImageRuntime"),
}


def runtime_for(bundle: Bundle, **options: Any) -> FamilyRuntime:
    """The runtime family for an opened bundle."""
    fam = bundle.family
    if fam not in RUNTIMES:
        raise UnsupportedModelError(f"bundle family '{fam}' has no runtime; supported: {sorted(RUNTIMES)}")
    module, name = RUNTIMES[fam]
    cls = getattr(importlib.import_module(module), name)
    rt: FamilyRuntime = cls(bundle, **options)
    return rt
