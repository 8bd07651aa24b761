"""I/O of an engine described once, as data.

A frozen :class:`IOSpec` lists the inputs and outputs of one graph as :class:`TensorSpec`
(name, dtype, shape with symbolic dims such as ``"batch"``). It is saved next to each ONNX
file; export arguments, TensorRT profiles, sample inputs and runtime feed checks derive from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .errors import InputError
from .limits import BOUNDS, within

Dim = Union[int, str]

#: dtypes an IOSpec may name (numpy names; "bfloat16" is carried as a string only).
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "bool")


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: ``dtype`` is a numpy dtype name, ``shape`` mixes ints and dim names."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"tensor '{self.name}': unknown dtype '{self.dtype}', expected one of {DTYPES}")
        object.__setattr__(self, "shape", tuple(self.shape))

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def concrete(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with every symbolic dim replaced from ``dims``."""
        try:
            return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.shape)
        except KeyError as e:
            raise InputError(f"tensor '{self.name}': no value for dim {e}; have {dict(dims)}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        """From :meth:`to_dict`'s form; ranks and fixed dims are checked against :data:`l2p.limits.BOUNDS`."""
        _only_keys(d, {"name", "dtype", "shape"}, "tensor spec")
        name, shape = str(d["name"]), d["shape"]
        if not isinstance(shape, list) or not within("spec_rank", len(shape)):
            raise InputError(f"tensor spec '{name[:64]}': shape must be a list of at most "
                             f"{int(BOUNDS['spec_rank'].hi)} dims, got {str(shape)[:64]}")
        for dim in shape:
            ok = within("spec_dim", dim) if isinstance(dim, int) else isinstance(dim, str) and 0 < len(dim) <= 64
            if not ok or isinstance(dim, bool):
                raise InputError(f"tensor spec '{name[:64]}': dim {str(dim)[:64]!r} is neither a size in "
                                 f"0..{int(BOUNDS['spec_dim'].hi)} nor a dim name")
        return cls(name, str(d["dtype"]), tuple(shape))


@dataclass(frozen=True)
class IOSpec:
    """Inputs and outputs of one graph, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def output(self, name: str) -> TensorSpec:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(name)


    def describe(self) -> str:
        return "; ".join(t.describe() for t in self.inputs)

    def check_feed(self, feed: Mapping[str, Any], what: str = "engine") -> dict[str, int]:
        """Check names, dtypes, ranks and consistent dims of ``feed``; return the dim values.

        Raises :class:`InputError` naming what was received and what is expected.
        """
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise InputError(
                f"{what}: inputs do not match; missing {missing}, unexpected {extra}; "
                f"expected {self.describe()}"
            )
        dims: dict[str, int] = {}
        for t in self.inputs:
            a = feed[t.name]
            dtype = str(getattr(a, "dtype", type(a).__name__))
            if dtype != t.dtype:
                raise InputError(f"{what}: input '{t.name}' has dtype {dtype}, expected {t.describe()}")
            shape = tuple(int(s) for s in a.shape)
            if len(shape) != len(t.shape):
                raise InputError(
                    f"{what}: input '{t.name}' has shape {list(shape)}, expected {t.describe()}"
                )
            for got, want in zip(shape, t.shape):
                if isinstance(want, int):
                    ok = got == want
                else:
                    ok = dims.setdefault(want, got) == got
                if not ok:
                    raise InputError(
                        f"{what}: input '{t.name}' has shape {list(shape)}, expected {t.describe()} "
                        f"with {dict(dims)}"
                    )
        return dims

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IOSpec:
        _only_keys(d, {"inputs", "outputs"}, "io spec")
        if len(d["inputs"]) + len(d["outputs"]) > BOUNDS["spec_tensors"].hi:
            raise InputError(f"io spec: {len(d['inputs']) + len(d['outputs'])} tensors; at most "
                             f"{int(BOUNDS['spec_tensors'].hi)} are supported")
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
        )

    def sample_inputs(self, dims: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs of the right shapes (floats ~N(0,1), ints zero)."""
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        for t in self.inputs:
            shape = t.concrete(dims)
            if t.dtype.startswith("float"):
                out[t.name] = rng.standard_normal(shape).astype(t.dtype)
            else:
                out[t.name] = np.zeros(shape, dtype=t.dtype)
        return out


def _only_keys(d: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(d) - allowed
    if unknown:
        raise InputError(f"{what}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
