"""Model class name -> export adapter, and the list of what is supported."""

from __future__ import annotations

import importlib

from ..errors import UnsupportedModelError
from .base import FamilyAdapter

#: diffusers transformer class -> (module, adapter class). Only tested families are listed.
ADAPTERS: dict[str, tuple[str, str]] = {
    "FluxTransformer2DModel": ("l2p.export.flux", "FluxAdapter"),
    "SD3Transformer2DModel": ("l2p.export.sd3", "SD3Adapter"),
    "DiTTransformer2DModel": ("l2p.export.dit", "DiTAdapter"),
    "PixArtTransformer2DModel": ("l2p.export.pixart", "PixArtAdapter"),
    "QwenImageTransformer2DModel": ("l2p.export.qwenimage", "QwenImageAdapter"),
}


def adapter_class(model_class: str) -> type[FamilyAdapter]:
    """The adapter for a diffusers transformer class name."""
    if model_class not in ADAPTERS:
        raise UnsupportedModelError(
            f"model class '{model_class}' is not supported; l2p exports {sorted(ADAPTERS)}"
        )
    module, name = ADAPTERS[model_class]
    cls: type[FamilyAdapter] = getattr(importlib.import_module(module), name)
    return cls
