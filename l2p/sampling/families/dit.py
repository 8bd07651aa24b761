"""DiT runtime: class-conditional, spatial latents ``(B, C, H, W)``, epsilon (+ learned sigma).

Feeds the graph as ``DiTPipeline`` feeds the transformer. The condition is ``class_labels``
``(B,)``: ImageNet class ids (``num_classes`` is the unconditional id); float arrays from
``COND.npz`` are accepted and rounded, since conditioning files hold float arrays. Under
classifier-free guidance the negative branch is the null class ``num_classes`` (1000 for
DiT-XL-2, what ``DiTPipeline`` feeds), unless ``negative_class_labels`` are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...bundle import Bundle
from ...errors import InputError
from ...latent import LatentSpec
from .base import needs_conditioning
from .spatial import EpsilonSpatialRuntime


@dataclass(frozen=True, kw_only=True)
class DiTLatent(LatentSpec):
    """DiT's latent record: the number of classes (the class id ``num_classes`` is unconditional)."""

    num_classes: int


class DiTRuntime(EpsilonSpatialRuntime):
    cond_names = ["class_labels"]
    latent_type = DiTLatent
    latent: DiTLatent

    def __init__(self, bundle: Bundle, **_options: Any) -> None:
        super().__init__(bundle)
        self.num_classes = self.latent.num_classes

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels = np.asarray(cond["class_labels"])
        ids = np.rint(labels).astype(np.int64).reshape(-1)  # (B,)
        if labels.ndim != 1 or not np.array_equal(ids, labels) or ids.min() < 0 or ids.max() > self.num_classes:
            raise InputError(f"class_labels must be a 1-D array of integer class ids in 0..{self.num_classes} "
                             f"({self.num_classes} = unconditional); got {labels!r}")
        return {"class_labels": ids}

    def negative_conditioning(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The null class for every row: ``DiTPipeline``'s ``class_null``."""
        rows = np.asarray(cond["class_labels"]).shape[0]
        return {"class_labels": np.full((rows,), self.num_classes, np.float32)}

    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raise needs_conditioning("dit", self.cond_names)
