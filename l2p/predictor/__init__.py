"""Torch-free predictors: coefficient tables, schedules, fixed-formula presets, the baked ONNX
graph and the on-disk artifact.

The linear form (see :mod:`l2p.predictor.table`): on a predicted step ``i``::

    F_hat[i] = sum_j W[i, j] F(s_j) + sum_j U[i, j] x(s_j) + V[i] x[i]      (s_0 newest)
"""

from .artifact import Predictor, load_predictor, remake_hint, save_predictor
from .graph import build_predictor_graph, predictor_io_spec
from .presets import PRESETS, fora, lagrange, preset, taylorseer
from .schedule import (
    Schedule,
    fixed_interval_schedule,
    interval_schedule,
    power_schedule,
    schedule_from_list,
    validate_schedule,
)
from .table import CoefficientTable

__all__ = [
    "PRESETS",
    "CoefficientTable",
    "Predictor",
    "Schedule",
    "build_predictor_graph",
    "fixed_interval_schedule",
    "fora",
    "interval_schedule",
    "lagrange",
    "load_predictor",
    "power_schedule",
    "predictor_io_spec",
    "preset",
    "remake_hint",
    "save_predictor",
    "schedule_from_list",
    "taylorseer",
    "validate_schedule",
]
