"""Torch-free runtime side of a model family: how to feed its transformer graph."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import numpy as np

from ...bundle import Bundle
from ...errors import ArtifactError, InputError
from ...latent import LatentSpec

L = TypeVar("L", bound=LatentSpec)


def read_latent(bundle: Bundle, latent_type: type[L]) -> L:
    """The bundle's ``manifest["latent"]`` as ``latent_type``.

    Raises:
        ArtifactError: the record is missing, of another format version, or does not fit the family.
    """
    try:
        return latent_type.from_dict(bundle.manifest.get("latent"))
    except InputError as e:
        raise ArtifactError(f"bundle {bundle.root}: its latent record does not fit the {bundle.family} runtime "
                            f"({e}); re-export the bundle with this version of l2p") from None


def needs_conditioning(family: str, names: list[str]) -> InputError:
    """The error for ``encode`` in a family whose text encoders l2p does not export."""
    return InputError(f"this family ({family}) needs --conditioning COND.npz (arrays {', '.join(names)}); "
                      "l2p does not export its text encoders")


class FamilyRuntime(ABC):
    """Feeds one family's transformer graph from latents, a timestep and conditioning.

    Reads the bundle's latent record as its :attr:`latent_type`; ``h``, ``w`` and ``channels``
    are the VAE latent grid.
    """

    #: conditioning arrays (graph input names) a condition row consists of
    cond_names: list[str] = []
    #: the family's latent record (``manifest["latent"]``), written by its export adapter
    latent_type: ClassVar[type[LatentSpec]] = LatentSpec
    #: the ``prediction`` values this runtime turns into what the scheduler consumes
    predictions: ClassVar[tuple[str, ...]] = ("flow",)

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.latent = read_latent(bundle, self.latent_type)
        if self.latent.prediction not in self.predictions:
            raise ArtifactError(f"bundle {bundle.root}: prediction '{self.latent.prediction}' is not one the "
                                f"{bundle.family} runtime handles ({list(self.predictions)}); re-export the bundle")
        self.h, self.w, self.channels = self.latent.height, self.latent.width, self.latent.channels

    @abstractmethod
    def latent_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of the latent as the transformer takes it (packed where the family packs)."""

    def noise(self, seed: int, batch: int = 1) -> np.ndarray:
        """Starting noise ``latent_shape(batch)`` float32: image ``k`` (``k = 0..batch-1``, in row
        order) is :meth:`image_noise` of seed ``seed + k``, so it starts from the noise it gets when
        sampled alone with seed ``seed + k`` (a batch of one is ``image_noise(seed)``)."""
        if batch < 1:
            return np.zeros(self.latent_shape(0), np.float32)
        return np.concatenate([self.image_noise(seed + k) for k in range(batch)])

    def image_noise(self, seed: int) -> np.ndarray:
        """One image's starting noise ``latent_shape(1)`` float32 from ``seed`` (numpy PCG64)."""
        return np.random.default_rng(seed).standard_normal(self.latent_shape(1), dtype=np.float32)

    @abstractmethod
    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        """Call ``scheduler.set_timesteps`` exactly as the family's diffusers pipeline does."""

    @abstractmethod
    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs that do not change over the steps (conditioning, RoPE...)."""

    @abstractmethod
    def step_inputs(self, latents: np.ndarray, t: float) -> dict[str, np.ndarray]:
        """Inputs that change per step: ``latents`` itself and host arrays that depend only on ``t``
        and the batch size (the timestep...); only ``latents.shape`` may be read."""

    def timestep_inputs(self, latents: Any, timesteps: Sequence[float], xp: ModuleType = np) -> list[dict[str, Any]]:
        """The latent-free part of :meth:`step_inputs` for every step, uploaded to ``xp`` once.

        Each input (e.g. ``timestep`` ``(B,)`` float32) is stacked over the steps, ``(steps, *shape)``,
        and uploaded with one ``xp.asarray``; returns per step ``{name: row view}`` (no latents).
        """
        rows = [{k: v for k, v in self.step_inputs(latents, float(t)).items() if v is not latents}
                for t in timesteps]
        stacked = {k: xp.asarray(np.stack([r[k] for r in rows])) for k in (rows[0] if rows else {})}
        return [{k: a[i] for k, a in stacked.items()} for i in range(len(rows))]

    def negative_conditioning(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The negative (unconditional) rows of classifier-free guidance when ``cond`` has no
        ``negative_*`` arrays: ``None`` (they must be given) except in families with a null
        condition of their own (DiT's null class)."""
        return None

    def cfg_combine(self, uncond: Any, cond: Any, scale: float) -> Any:
        """Classifier-free guidance of the two branches' outputs (same shape, host or device
        arrays): ``uncond + scale * (cond - uncond)``, as the diffusers pipelines compute it."""
        return uncond + scale * (cond - uncond)

    def model_output(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        """What the scheduler consumes, from the graph outputs."""
        return out["sample"]

    @abstractmethod
    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        """The latent as the VAE decoder takes it: ``(B, C, h, w)``."""

    @abstractmethod
    def encode(self, prompts: list[str], run: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]],
               tokenizers: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Conditioning rows for ``prompts`` via the bundle's text-encoder engines."""
