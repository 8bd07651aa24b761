"""TensorRT optimisation profiles from the IOSpec: dims given as ``name=value`` maps, global or per
graph, turned into min/opt/max shapes per input. Pure Python: no TensorRT, no GPU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Union

from ..errors import InputError
from ..spec import IOSpec

#: dims per symbolic name, or per graph (``{"transformer": {...}}``), or both (globals + overrides)
DimsArg = Union[Mapping[str, int], Mapping[str, Mapping[str, int]], None]


def parse_dims(text: str) -> dict[str, int]:
    """Parse ``"batch=1,img_seq=256"`` (CLI ``--min/--opt/--max/--dims``) into ``{"batch": 1, ...}``."""
    out: dict[str, int] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, sep, value = (p.strip() for p in item.partition("="))
        if not sep or not name.isidentifier() or not value.isdigit() or int(value) < 1:
            raise InputError(
                f"bad dims item '{item}' in '{text}'; expected NAME=POSITIVE_INT, e.g. batch=1,img_seq=256"
            )
        if name in out:
            raise InputError(f"dim '{name}' is given twice in '{text}'")
        out[name] = int(value)
    return out


class ProfileShape(NamedTuple):
    """min/opt/max shapes of one input in a TensorRT optimisation profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profiles_json(profiles: Sequence[ProfileShape]) -> list[list[Any]]:
    """``[[name, min, opt, max], ...]``: the canonical JSON form (plan keys, sidecars, messages)."""
    return [[p.name, list(p.min), list(p.opt), list(p.max)] for p in profiles]


def input_dim_names(spec: IOSpec) -> list[str]:
    """Symbolic dims that appear in the inputs, in order of first appearance."""
    names: list[str] = []
    for t in spec.inputs:
        names += [d for d in t.shape if isinstance(d, str) and d not in names]
    return names


def derive_profiles(
    spec: IOSpec, min_dims: Mapping[str, int], opt_dims: Mapping[str, int], max_dims: Mapping[str, int]
) -> list[ProfileShape]:
    """One ``(name, min_shape, opt_shape, max_shape)`` per input of ``spec``.

    Every symbolic input dim needs a value in all three maps with ``1 <= min <= opt <= max``;
    extra names are ignored (global dims serve several graphs). Raises :class:`InputError`.
    """
    names = input_dim_names(spec)
    for label, dims in (("--min", min_dims), ("--opt", opt_dims), ("--max", max_dims)):
        missing = [n for n in names if n not in dims]
        if missing:
            raise InputError(
                f"{label} has no value for dims {missing}; this graph's inputs need {names} "
                f"({spec.describe()}); e.g. {label} " + ",".join(f"{n}=..." for n in names)
            )
    for n in names:
        lo, mid, hi = int(min_dims[n]), int(opt_dims[n]), int(max_dims[n])
        if not 1 <= lo <= mid <= hi:
            raise InputError(f"dim '{n}': need 1 <= min <= opt <= max, got min={lo}, opt={mid}, max={hi}")
    return [
        ProfileShape(t.name, t.concrete(min_dims), t.concrete(opt_dims), t.concrete(max_dims))
        for t in spec.inputs
    ]


def dims_from_profiles(spec: IOSpec, profiles: Sequence[ProfileShape], which: str = "min") -> dict[str, int]:
    """Recover dim values (``which`` = min/opt/max) from a plan's profiles."""
    shapes = {p.name: getattr(p, which) for p in profiles}
    dims: dict[str, int] = {}
    for t in spec.inputs:
        for d, v in zip(t.shape, shapes.get(t.name, ())):
            if isinstance(d, str):
                dims.setdefault(d, int(v))
    return dims


def dims_for_graph(dims: DimsArg, graph: str) -> dict[str, int]:
    """Global dims overlaid with the per-graph entry ``dims[graph]`` when there is one."""
    if not dims:
        return {}
    out = {k: int(v) for k, v in dims.items() if not isinstance(v, Mapping)}
    sub = dims.get(graph)
    if isinstance(sub, Mapping):
        out.update({k: int(v) for k, v in sub.items()})
    return out


def fill_dims(
    min_d: dict[str, int], opt_d: dict[str, int], max_d: dict[str, int]
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Missing maps fall back to their neighbours: ``--opt`` alone gives a static profile."""
    opt = opt_d or max_d or min_d
    return (min_d or opt, opt, max_d or opt)
