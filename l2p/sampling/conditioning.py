"""Conditioning arrays: loaded from ``COND.npz`` or produced by the text encoders.

Arrays are named after the transformer's forward arguments (``encoder_hidden_states`` ``[R, T, D]``,
``pooled_projections`` ``[R, D]``); the first axis holds one row per condition.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..atomic import load_npz
from ..errors import InputError
from ..spec import IOSpec


def check_conditioning(cond: Mapping[str, np.ndarray], spec: IOSpec, names: list[str],
                       source: str) -> dict[str, np.ndarray]:
    """Validate names, dtypes, shapes and values against the transformer spec; float32 out."""
    missing = [n for n in names if n not in cond]
    extra = [n for n in cond if n not in names]
    expected = "; ".join(f"{n}: [rows, {', '.join(str(d) for d in spec.input(n).shape[1:])}]" for n in names)
    if missing or extra:
        raise InputError(f"{source}: missing arrays {missing}, unexpected arrays {extra}; expected {expected}")
    rows = None
    out: dict[str, np.ndarray] = {}
    dims: dict[str, int] = {}
    for n in names:
        a = np.asarray(cond[n])
        want = spec.input(n).shape
        if a.dtype.kind != "f":
            raise InputError(f"{source}: array '{n}' has dtype {a.dtype}, expected a float array ({expected})")
        ok = a.ndim == len(want)
        for got, w in zip(a.shape[1:], want[1:]):
            if isinstance(w, int):
                ok = ok and got == w
            else:
                ok = ok and dims.setdefault(w, got) == got and got >= 1
        if not ok:
            raise InputError(f"{source}: array '{n}' has shape {list(a.shape)}; expected {expected}")
        if rows is None:
            rows = a.shape[0]
        elif a.shape[0] != rows:
            raise InputError(f"{source}: arrays disagree on the number of rows ({rows} vs {a.shape[0]} in '{n}')")
        if not np.isfinite(a).all():
            raise InputError(f"{source}: array '{n}' contains NaN or Inf values")
        out[n] = np.ascontiguousarray(a, dtype=np.float32)
    if not rows:
        raise InputError(f"{source}: the conditioning holds no rows")
    return out


def load_conditioning(path: str | Path, spec: IOSpec, names: list[str]) -> dict[str, np.ndarray]:
    """Read and validate ``COND.npz`` (never unpickles)."""
    path = Path(path)
    try:
        cond = load_npz(path)
    except FileNotFoundError:
        raise InputError(f"conditioning file '{path}' does not exist") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"conditioning file '{path}' is not a readable .npz of plain arrays ({e})") from None
    return check_conditioning(cond, spec, names, f"conditioning {path.name}")
