"""Client side of the model ``l2p``: request arrays and ``tritonclient`` inputs (``pip install 'l2p[serve]'``).

A client needs neither this module nor l2p: it is the contract of :mod:`.contract` written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

#: numpy dtype of each option input
OPTION_DTYPES = {"steps": np.int32, "full_steps": np.int32, "cfg_scale": np.float32, "method": np.object_}


def request_arrays(seed: int, cond: Mapping[str, np.ndarray] | None = None, prompt: str | None = None,
                   negative_prompt: str | None = None, **options: Any) -> dict[str, np.ndarray]:
    """The arrays of one request: ``cond`` rows ``(B, ...)`` (normally B = 1; with guidance also the
    ``negative_*`` rows) or a ``prompt`` (and ``negative_prompt``), ``seed`` and options (``steps``,
    ``full_steps``, ``method``, ``cfg_scale``), each ``(B, 1)``."""
    arrays = {k: np.asarray(v) for k, v in (cond or {}).items()}
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if text is not None:
            arrays[name] = np.array([[text.encode()]], dtype=np.object_)
    n = next(iter(arrays.values())).shape[0] if arrays else 1  # Triton wants one batch size for all inputs
    arrays["seed"] = np.full((n, 1), seed, np.int64)
    for k, v in options.items():
        if k not in OPTION_DTYPES:
            raise ValueError(f"unknown option {k!r}; the model takes {sorted(OPTION_DTYPES)}")
        arrays[k] = np.full((n, 1), v.encode() if isinstance(v, str) else v, dtype=OPTION_DTYPES[k])
    return arrays


def infer_inputs(client_module: ModuleType, arrays: Mapping[str, np.ndarray]) -> list[Any]:
    """``InferInput`` objects of ``tritonclient.http`` or ``tritonclient.grpc``; wire types from the dtypes."""
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, a in arrays.items():
        i = client_module.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype))
        i.set_data_from_numpy(a)
        inputs.append(i)
    return inputs
