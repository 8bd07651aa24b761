"""ONNX Runtime session options, set deliberately for every engine l2p creates.

Each ``InferenceSession`` owns an intra-op thread pool of ``threads - 1`` workers (the calling
thread is the other one). By default ONNX Runtime lets those workers *spin* (busy-wait) for a
while after the work runs out, so that the next operator starts without a wake-up; measured
here, a worker burns 30-40 ms of CPU after each ``run``. That is right for the one big engine
(the transformer: its operators follow each other back to back), and wrong for any other engine
that runs between its calls: the spinning workers then take cores away from the transformer's
next step (issue 13: the computed steps of a cached run were ~35 % slower than those of a full
run). So the small engines of a run (the predictor head, encoders) are created with
``spinning=False``; the CPU sampling loop applies the predictor in numpy and makes no pool for it
at all (:class:`l2p.predictor.host.HostPredictor`).

The options::

    graph_optimization_level  ORT_ENABLE_ALL (constant folding, fusions, layout transforms)
    intra_op_num_threads      --threads, else $L2P_THREADS, else all cores
    inter_op_num_threads      1, execution_mode ORT_SEQUENTIAL (no second pool)
    enable_cpu_mem_arena      on (buffers are reused across runs: no allocation per step)
    enable_mem_pattern        on (fixed shapes within a run: one planned block)
    session.intra_op.allow_spinning   "1" for the transformer, "0" for small engines
    session.inter_op.allow_spinning   "0" (no inter-op pool runs)
    use_deterministic_compute on (reproducible results)
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InputError, missing_extra

MAX_THREADS_PER_CORE = 4  # --threads above this many per core is refused
INTRA_SPIN = "session.intra_op.allow_spinning"
INTER_SPIN = "session.inter_op.allow_spinning"


def import_ort() -> Any:
    """The ``onnxruntime`` module, or a clear error naming the extra to install."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_extra("onnxruntime", "gpu", "the onnxruntime backend") from None
    return ort


def resolve_threads(threads: int | None = None) -> int:
    """The intra-op thread count: ``threads``, else ``$L2P_THREADS``, else all cores; range-checked."""
    cores = os.cpu_count() or 1
    if threads is None:
        env = os.environ.get("L2P_THREADS", "0").strip()
        if not env.isdigit():
            raise InputError(f"L2P_THREADS={env!r} is not a thread count; set a positive integer or unset it")
        threads = int(env) or cores
    limit = MAX_THREADS_PER_CORE * cores
    if not 1 <= threads <= limit:  # onnxruntime would start them all: thousands exhaust the memory
        raise InputError(f"--threads {threads} is out of range; use 1..{limit} ({cores} cores here)")
    return threads


def session_options(threads: int | None = None, deterministic: bool = True, spinning: bool = True) -> Any:
    """``onnxruntime.SessionOptions`` as listed in the module docstring.

    Args:
        threads: intra-op threads (see :func:`resolve_threads`).
        deterministic: ``use_deterministic_compute``.
        spinning: whether idle intra-op workers busy-wait for the next operator (the big engine of
            a run) or sleep at once (engines that run between the big engine's calls).
    """
    ort = import_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = resolve_threads(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = True
    so.add_session_config_entry(INTRA_SPIN, "1" if spinning else "0")
    so.add_session_config_entry(INTER_SPIN, "0")
    if deterministic:
        so.use_deterministic_compute = True
    return so
