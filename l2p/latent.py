"""What a family's runtime needs to know about the latent, as a frozen, versioned record.

The exporter writes ``LatentSpec.to_dict()`` into the bundle manifest (``manifest["latent"]``);
the family's torch-free runtime reads it back with ``from_dict``. A family that needs more
(RoPE axes, class count...) subclasses :class:`LatentSpec` next to its runtime, e.g.
:class:`l2p.sampling.families.flux.FluxLatent`. ``from_dict`` rejects unknown and missing keys,
wrong types and other format versions, so a manifest never carries a key nobody reads.

Torch-free.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from .errors import InputError
from .limits import check_bound

#: version of the ``manifest["latent"]`` record; bump it when a field changes meaning or goes away
LATENT_FORMAT_VERSION = 1
#: what the transformer's ``sample`` output is: a flow-matching velocity, or epsilon (plus the
#: learned-variance channels DiT and PixArt append, which the runtime drops)
PREDICTIONS = ("flow", "epsilon", "epsilon+learned_sigma")

#: fields of a latent record (of any family) -> their row in :data:`l2p.limits.BOUNDS` (each item
#: of a tuple field is checked); a family that adds a size field adds its row here
FIELD_BOUNDS = {
    "channels": "latent_channels", "height": "latent_side", "width": "latent_side",
    "vae_scale_factor": "vae_scale_factor", "patch_size": "patch_size", "num_classes": "num_classes",
    "rope_axes_dim": "rope_axis", "rope_theta": "rope_theta",
}

L = TypeVar("L", bound="LatentSpec")


@dataclass(frozen=True, kw_only=True)
class LatentSpec:
    """The VAE latent grid and the prediction type of a bundle's transformer.

    Attributes:
        channels: VAE latent channels ``C`` (before any 2x2 packing).
        height: VAE latent height ``h``.
        width: VAE latent width ``w``.
        prediction: one of :data:`PREDICTIONS`.
        vae_scale_factor: image pixels per latent pixel, when the bundle has a VAE decoder.
    """

    channels: int
    height: int
    width: int
    prediction: str
    vae_scale_factor: int | None = None

    def __post_init__(self) -> None:
        """Check every field against its annotation (JSON lists become tuples, ints floats where a
        float is expected), then the values."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, _typed(f"{type(self).__name__}.{f.name}", getattr(self, f.name),
                                                    hints[f.name]))
        for f in fields(self):  # sizes are read from untrusted manifests: bounded before any allocation
            bound, v = FIELD_BOUNDS.get(f.name), getattr(self, f.name)
            if isinstance(v, tuple):
                check_bound("list_items", len(v), f"the length of {type(self).__name__}.{f.name}",
                            "re-export the bundle", error=InputError)
            for item in (v if isinstance(v, tuple) else (v,)) if bound and v is not None else ():
                check_bound(bound, item, f"{type(self).__name__}.{f.name}", "re-export the bundle",
                            integer=isinstance(item, int), error=InputError)
        check_bound("latent_elements", self.channels * self.height * self.width,
                    f"{type(self).__name__} channels x height x width", "re-export the bundle", error=InputError)
        if self.prediction not in PREDICTIONS:
            raise InputError(f"{type(self).__name__}: prediction must be one of {list(PREDICTIONS)}, "
                             f"got {self.prediction!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"version": LATENT_FORMAT_VERSION, field: value...}`` (tuples as lists)."""
        out: dict[str, Any] = {"version": LATENT_FORMAT_VERSION}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls: type[L], data: Mapping[str, Any]) -> L:
        """Read a record written by :meth:`to_dict` of the same class.

        Raises:
            InputError: another format version, a missing or unknown key, or a value of the wrong type.
        """
        what = cls.__name__
        if not isinstance(data, Mapping):
            raise InputError(f"{what}: expected a JSON object, got {type(data).__name__}")
        if data.get("version") != LATENT_FORMAT_VERSION:
            raise InputError(f"{what}: format version {data.get('version')!r} is not supported "
                             f"(this l2p reads version {LATENT_FORMAT_VERSION})")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known) - {"version"})
        if unknown:
            raise InputError(f"{what}: unknown keys {unknown} (it has {sorted(known)})")
        missing = sorted(n for n, f in known.items() if n not in data and f.default is MISSING)
        if missing:
            raise InputError(f"{what}: missing keys {missing}")
        return cls(**{n: data[n] for n in known if n in data})


def _typed(what: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (int, float, bool, str, ``X | None``,
    ``tuple[X, ...]``); JSON lists become tuples, ints become floats where a float is expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only Optional[X] is used
        return _typed(what, value, inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{what}: expected a list, got {value!r}")
        return tuple(_typed(f"{what}[{i}]", v, args[0]) for i, v in enumerate(value))
    ok = {bool: isinstance(value, bool), str: isinstance(value, str),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool)}
    if hint not in ok:
        raise TypeError(f"{what}: LatentSpec fields support int, float, bool, str, X | None and "
                        f"tuple[X, ...], not {hint!r}")
    if not ok[hint]:
        raise InputError(f"{what}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")
    return float(value) if hint is float else value
