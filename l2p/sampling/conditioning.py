"""Conditioning arrays: loaded from ``COND.npz`` or produced by the text encoders.

Arrays are named after the transformer's forward arguments (``encoder_hidden_states`` ``[R, T, D]``,
``pooled_projections`` ``[R, D]``); the first axis holds one row per condition. The negative rows
of classifier-free guidance, where given, are the same arrays prefixed ``negative_``
(``negative_encoder_hidden_states``...), one per condition row.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..atomic import load_npz
from ..errors import InputError
from ..limits import check_bound
from ..spec import Dim, IOSpec

#: prefix of the negative (unconditional) rows' arrays of classifier-free guidance
NEGATIVE = "negative_"


def check_conditioning(cond: Mapping[str, np.ndarray], spec: IOSpec, names: list[str],
                       source: str) -> dict[str, np.ndarray]:
    """Validate names, dtypes, shapes and values against the transformer spec; float32 out.

    ``negative_<name>`` arrays (classifier-free guidance), when any is given, are checked the same
    way, as a whole set with as many rows as the conditional arrays.
    """
    pos = {k: v for k, v in cond.items() if not k.startswith(NEGATIVE)}
    neg = {k[len(NEGATIVE):]: v for k, v in cond.items() if k.startswith(NEGATIVE)}
    out = _check_set(pos, spec, names, source, "")
    if neg:
        negative = _check_set(neg, spec, names, source, NEGATIVE)
        rows, nrows = len(next(iter(out.values()))), len(next(iter(negative.values())))
        if nrows != rows:
            raise InputError(f"{source}: the negative arrays have {nrows} rows, the conditional ones {rows}; "
                             "give one negative row per condition")
        out.update({NEGATIVE + k: v for k, v in negative.items()})
    return out


def _check_set(cond: Mapping[str, np.ndarray], spec: IOSpec, names: list[str], source: str,
               prefix: str) -> dict[str, np.ndarray]:
    """One set of arrays (the conditional ones, or the negative ones named ``prefix + name``)."""
    missing = [prefix + n for n in names if n not in cond]
    extra = [prefix + n for n in cond if n not in names]
    expected = "; ".join(f"{prefix}{n}: [rows, {', '.join(str(d) for d in spec.input(n).shape[1:])}]"
                         for n in names)
    if missing or extra:
        raise InputError(f"{source}: missing arrays {missing}, unexpected arrays {extra}; expected {expected}")
    rows = None
    out: dict[str, np.ndarray] = {}
    dims: dict[str, int] = {}
    for n in names:
        a = np.asarray(cond[n])
        want = spec.input(n).shape
        if a.dtype.kind != "f":
            raise InputError(f"{source}: array '{prefix}{n}' has dtype {a.dtype}, expected a float array ({expected})")
        ok = a.ndim == len(want)
        for got, w in zip(a.shape[1:], want[1:]):
            if isinstance(w, int):
                ok = ok and got == w
            else:
                ok = ok and dims.setdefault(w, got) == got and got >= 1
        if not ok:
            raise InputError(f"{source}: array '{prefix}{n}' has shape {list(a.shape)}; expected {expected}")
        check_rows(prefix + n, a.shape, want, source)
        if rows is None:
            rows = a.shape[0]
        elif a.shape[0] != rows:
            raise InputError(f"{source}: arrays disagree on the number of rows ({rows} vs {a.shape[0]} in "
                             f"'{prefix}{n}')")
        if not np.isfinite(a).all():
            raise InputError(f"{source}: array '{prefix}{n}' contains NaN or Inf values")
        out[n] = np.ascontiguousarray(a, dtype=np.float32)
    if not rows:
        raise InputError(f"{source}: the conditioning holds no rows")
    return out


def check_rows(name: str, shape: tuple[int, ...], want: tuple[Dim, ...], source: str) -> None:
    """Refuse more rows than ``cond_rows`` and symbolic dims (text tokens) over ``cond_tokens``
    (:data:`l2p.limits.BOUNDS`): one batch holds every row."""
    fix = "split the conditioning into several files (or sample one row with --index)"
    if shape and shape[0]:  # no rows at all: check_conditioning says so
        check_bound("cond_rows", shape[0], f"{source}: rows of array '{name}'", fix, error=InputError)
    for got, w in zip(shape[1:], want[1:]):
        if isinstance(w, str):
            check_bound("cond_tokens", got, f"{source}: dim '{w}' of array '{name}'", "use shorter sequences",
                        error=InputError)


def load_conditioning(path: str | Path, spec: IOSpec, names: list[str]) -> dict[str, np.ndarray]:
    """Read and validate ``COND.npz`` (never unpickles; rows and token counts are checked from the
    array headers, before the arrays are read)."""
    path = Path(path)
    source = f"conditioning {path.name}"

    def header(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        base = name[len(NEGATIVE):] if name.startswith(NEGATIVE) else name
        if base in names and len(shape) == len(spec.input(base).shape):
            check_rows(name, shape, spec.input(base).shape, source)

    try:
        cond = load_npz(path, check=header)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"conditioning file '{path}' does not exist") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"conditioning file '{path}' is not a readable .npz of plain arrays ({e})") from None
    return check_conditioning(cond, spec, names, source)
