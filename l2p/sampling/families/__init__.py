"""Runtime families, looked up by the bundle's ``family`` name in :data:`l2p.families.FAMILIES`."""

from __future__ import annotations

from typing import Any

from ...bundle import Bundle
from ...families import family
from .base import FamilyRuntime


def runtime_for(bundle: Bundle, **options: Any) -> FamilyRuntime:
    """The runtime family for an opened bundle (``options``: family settings such as ``guidance_scale``).

    Raises:
        UnsupportedModelError: the bundle's family is not one l2p has.
        ArtifactError: the manifest's latent record does not fit the family (re-export the bundle).
    """
    return family(bundle.family).runtime_class()(bundle, **options)
