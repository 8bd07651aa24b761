"""The predictor as one small ONNX graph for all steps, coefficients baked in as constants.

The host keeps the last ``K`` computed features in a ring buffer (slot order arbitrary) and
tells the graph which row to use (``step``) and the newest-first rank of each slot (``perm``).

Inputs (``F...`` = the feature shape, e.g. ``("batch", "seq", C)``)::

    history         float [K, F...]   ring buffer of computed features F(s)
    latent_history  float [K, F...]   ring buffer of the latents x(s) fed at those steps  } only when
    latent          float [F...]      the current latent x[i]                              } uses_latents
    step            int64 [1]         i, the row of the coefficient table
    perm            int64 [K]         perm[slot] = j: the slot holds the j-th newest computed feature

Output::

    feature         float [F...]      sum_slot W[i, perm[slot]] * history[slot]  (+ latent terms)

The coefficient row is gathered into slot order (``c = Gather(W[step], perm)``) and applied as
one ``MatMul`` ``[1, K] x [K, M]`` over a reshaped view of the buffer (``M`` = feature size):
no gathered copy of the history is made. Slots not filled yet must hold finite values (zeros)
and have a ``perm`` rank whose weight is zero (any rank >= the number of computed steps so
far); ``0 * NaN`` would be NaN.

Coefficients are computed in float64 (:class:`CoefficientTable`) and stored here as float32
initializers; the sum is computed in float32. float16 I/O is cast to float32 inside the graph.

Torch-free.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InputError
from ..spec import IOSpec, TensorSpec
from .table import CoefficientTable

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17 (older runtimes / TensorRT parse it)

HISTORY = "history"
LATENT_HISTORY = "latent_history"
LATENT = "latent"
STEP = "step"
PERM = "perm"
OUTPUT = "feature"

_IO_DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def predictor_io_spec(
    table: CoefficientTable, feature_spec: TensorSpec, latent_spec: TensorSpec | None = None
) -> IOSpec:
    """The I/O of the predictor graph for ``table`` (see the module docstring).

    Args:
        table: the coefficients (only ``K`` and ``uses_latents`` matter here).
        feature_spec: one tapped feature, e.g. ``TensorSpec("output", "float32", ("batch", "seq", 64))``;
            dtype float32 or float16. Its name is not used.
        latent_spec: one latent; required when ``table.uses_latents`` (ignored otherwise) and
            then of the same shape and dtype as the feature (the terms are added).

    Raises:
        InputError: for an unsupported dtype, a missing or incompatible latent spec.
    """
    _check_specs(table, feature_spec, latent_spec)
    fshape = tuple(feature_spec.shape)
    dt = feature_spec.dtype
    inputs = [TensorSpec(HISTORY, dt, (table.K, *fshape))]
    if table.uses_latents:
        inputs += [TensorSpec(LATENT_HISTORY, dt, (table.K, *fshape)), TensorSpec(LATENT, dt, fshape)]
    inputs += [TensorSpec(STEP, "int64", (1,)), TensorSpec(PERM, "int64", (table.K,))]
    return IOSpec(tuple(inputs), (TensorSpec(OUTPUT, dt, fshape),))


def build_predictor_graph(
    table: CoefficientTable,
    feature_spec: TensorSpec,
    latent_spec: TensorSpec | None = None,
    name: str = "l2p_predictor",
) -> onnx.ModelProto:
    """Build the checked ONNX model (opset 17) of the predictor for ``table``.

    Args: as :func:`predictor_io_spec`; ``name`` is the graph name.

    Returns:
        an ``onnx.ModelProto`` with ``W``, ``U``, ``V`` as float32 initializers; symbolic dims
        of ``feature_spec`` stay symbolic, fixed dims stay fixed.
    """
    spec = predictor_io_spec(table, feature_spec, latent_spec)
    K = table.K
    io_type = _IO_DTYPES[feature_spec.dtype]
    f32 = feature_spec.dtype == "float32"

    inits = [
        numpy_helper.from_array(table.W.astype(np.float32), "W"),  # [N, K]
        numpy_helper.from_array(np.array([K, -1], np.int64), "flat_shape"),  # -> [K, M]
        numpy_helper.from_array(np.array([1, -1], np.int64), "row_shape"),  # -> [1, M]
    ]
    nodes = [
        helper.make_node("Shape", [HISTORY], ["feature_shape"], start=1),  # [F...] as int64
        *_coefficient_row("W", "c_feat"),  # [1, K] in slot order
        *_flat_history(HISTORY, "hist2d", f32),  # [K, M]
        helper.make_node("MatMul", ["c_feat", "hist2d"], ["acc_feat"]),  # [1, K] x [K, M] -> [1, M]
    ]
    acc = "acc_feat"
    if table.uses_latents:
        inits += [
            numpy_helper.from_array(table.U.astype(np.float32), "U"),  # [N, K]
            numpy_helper.from_array(table.V.astype(np.float32), "V"),  # [N]
        ]
        cur = LATENT if f32 else "latent_f32"
        if not f32:
            nodes.append(helper.make_node("Cast", [LATENT], [cur], to=TensorProto.FLOAT))
        nodes += [
            *_coefficient_row("U", "c_lat"),  # [1, K]
            *_flat_history(LATENT_HISTORY, "lat2d", f32),  # [K, M]
            helper.make_node("MatMul", ["c_lat", "lat2d"], ["acc_lat"]),  # [1, M]
            helper.make_node("Gather", ["V", STEP], ["v"], axis=0),  # [1]
            helper.make_node("Reshape", [cur, "row_shape"], ["latent_row"]),  # [F...] -> [1, M]
            helper.make_node("Mul", ["latent_row", "v"], ["acc_cur"]),  # [1, M]
            helper.make_node("Add", ["acc_feat", "acc_lat"], ["acc_hist"]),
            helper.make_node("Add", ["acc_hist", "acc_cur"], ["acc_all"]),
        ]
        acc = "acc_all"
    out = OUTPUT if f32 else "feature_f32"
    nodes.append(helper.make_node("Reshape", [acc, "feature_shape"], [out]))  # [1, M] -> [F...]
    if not f32:
        nodes.append(helper.make_node("Cast", [out], [OUTPUT], to=io_type))

    graph = helper.make_graph(
        nodes,
        name,
        [_value_info(t, io_type) for t in spec.inputs],
        [_value_info(t, io_type) for t in spec.outputs],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="l2p",
        doc_string="L2P linear feature predictor: coefficients fitted in float64, stored as float32 constants",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        "l2p.num_steps": str(table.num_steps),
        "l2p.K": str(K),
        "l2p.computed": ",".join(str(s) for s in table.computed),
        "l2p.uses_latents": str(table.uses_latents).lower(),
        "l2p.coefficient_dtype": "float64 fit, float32 in graph",
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def _coefficient_row(table_name: str, out: str) -> list[onnx.NodeProto]:
    """``out = table[step][:, perm]``: the step's row reordered into ring-slot order, [1, K]."""
    return [
        helper.make_node("Gather", [table_name, STEP], [f"{out}_row"], axis=0),  # [N, K] -> [1, K]
        helper.make_node("Gather", [f"{out}_row", PERM], [out], axis=1),  # [1, K] -> [1, K]
    ]


def _flat_history(name: str, out: str, f32: bool) -> list[onnx.NodeProto]:
    """``out`` = ``name`` viewed as [K, M] (cast to float32 first for float16 I/O)."""
    nodes = []
    src = name
    if not f32:
        src = f"{name}_f32"
        nodes.append(helper.make_node("Cast", [name], [src], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Reshape", [src, "flat_shape"], [out]))  # [K, F...] -> [K, M]
    return nodes


def _value_info(t: TensorSpec, io_type: int) -> onnx.ValueInfoProto:
    elem = TensorProto.INT64 if t.dtype == "int64" else io_type
    return helper.make_tensor_value_info(t.name, elem, list(t.shape))


def _check_specs(table: CoefficientTable, feature_spec: TensorSpec, latent_spec: TensorSpec | None) -> None:
    if feature_spec.dtype not in _IO_DTYPES:
        raise InputError(
            f"predictor graph: feature {feature_spec.describe()} has dtype {feature_spec.dtype}; "
            f"supported: {sorted(_IO_DTYPES)} (cast on the host)"
        )
    if len(feature_spec.shape) < 1:
        raise InputError(f"predictor graph: feature {feature_spec.describe()} is a scalar; expected rank >= 1")
    if not table.uses_latents:
        return
    if latent_spec is None:
        raise InputError(
            "predictor graph: this coefficient table uses latents (U/V); pass latent_spec "
            f"(a TensorSpec of the latent, same shape as the feature {feature_spec.describe()})"
        )
    if tuple(latent_spec.shape) != tuple(feature_spec.shape) or latent_spec.dtype != feature_spec.dtype:
        raise InputError(
            f"predictor graph: latent {latent_spec.describe()} must have the shape and dtype of the "
            f"feature {feature_spec.describe()} (the latent terms are added to the feature terms)"
        )
