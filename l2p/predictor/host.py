"""The baked predictor graph applied with numpy: the CPU sampling loop's predictor engine.

A forecast is ``K`` multiply-adds over the history slots (see :mod:`l2p.predictor.graph`). On the
CPU, running that as an ONNX Runtime session costs more than the arithmetic: the session brings
its own intra-op thread pool, whose workers spin after every call and take cores from the
transformer's next step (issue 13). :class:`HostPredictor` reads the float32 constants baked into
the predictor graph and evaluates the same sum in numpy on the calling thread: no session, no
threads. It equals the graph's output to float32 rounding (a test checks it against ONNX
Runtime). On a GPU the baked graph itself runs (``run_device``), next to the device history.

Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..engine.base import Engine
from ..errors import InputError
from ..spec import IOSpec
from .graph import HISTORY, LATENT, LATENT_HISTORY, OUTPUT, PERM, STEP


def is_predictor_spec(spec: IOSpec) -> bool:
    """Whether ``spec`` is the I/O of a predictor graph (:func:`~l2p.predictor.graph.predictor_io_spec`)."""
    return spec.output_names == [OUTPUT] and {HISTORY, STEP, PERM} <= set(spec.input_names)


class HostPredictor(Engine):
    """A predictor graph evaluated in numpy on the host (same I/O as the graph).

    Args:
        source: the predictor ``.onnx`` file or its serialized bytes (as built by
            :func:`~l2p.predictor.graph.build_predictor_graph`).
        spec: its I/O spec (:func:`~l2p.predictor.graph.predictor_io_spec`).
        name: used in messages.

    Raises:
        InputError: if ``source`` is not a predictor graph matching ``spec``.
    """

    backend = "numpy"

    def __init__(self, source: str | os.PathLike[str] | bytes, spec: IOSpec, name: str = "predictor") -> None:
        super().__init__(name, spec)
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(Path(source)))
        consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        W = consts.get("W")
        K = spec.input(HISTORY).shape[0] if is_predictor_spec(spec) else None
        if W is None or W.ndim != 2 or W.dtype != np.float32 or W.shape[1] != K:
            raise InputError(f"{name}: the graph is not an l2p predictor with K={K} history slots (no float32 "
                             "W [N, K] constant); rebuild it with l2p calibrate")
        self.W = W  # [N, K] float32, exactly the graph's constants
        self.uses_latents = LATENT in spec.input_names
        self.U = consts["U"] if self.uses_latents else None  # [N, K]
        self.V = consts["V"] if self.uses_latents else None  # [N]
        self.dtype = np.dtype(spec.output(OUTPUT).dtype)

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        step = int(np.asarray(feed[STEP]).reshape(-1)[0])
        perm = np.asarray(feed[PERM])  # (K,) newest-first rank of each slot
        out = _weighted_sum(self.W[step][perm], feed[HISTORY])  # coefficients in slot order
        if self.U is not None and self.V is not None:
            out += _weighted_sum(self.U[step][perm], feed[LATENT_HISTORY])
            out += np.multiply(feed[LATENT], self.V[step], dtype=np.float32)
        return {OUTPUT: out if self.dtype == np.float32 else out.astype(self.dtype)}


def _weighted_sum(c: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """``sum_k c[k] * slots[k]`` in float32: ``c`` ``(K,)`` float32, ``slots`` ``(K, *F)`` -> ``(*F)``."""
    out = np.multiply(slots[0], c[0], dtype=np.float32)
    for k in range(1, len(c)):
        out += np.multiply(slots[k], c[k], dtype=np.float32)
    return out
