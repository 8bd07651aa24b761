"""Count the FLOPs of an ONNX graph from its shapes (no weights needed, no runtime).

The symbolic input dims (``"batch"``, ``"seq"``, ...) are fixed to the given values, then
``onnx.shape_inference`` (with data propagation) gives every tensor a static shape. Counted:

- ``MatMul``: ``2 * numel(Y) * K`` (``K`` = the contracted dim), batched/broadcast forms included.
- ``Gemm``: ``2 * numel(Y) * K``, plus ``numel(Y)`` for the bias ``C``.
- ``Conv``: ``2 * numel(Y) * (C_in / group) * prod(kernel)``, plus ``numel(Y)`` for a bias.
- ``ConvTranspose``: ``2 * numel(X) * (C_out / group) * prod(kernel)``, plus ``numel(Y)`` for a bias.
- ``Einsum`` with ``n >= 2`` operands: ``n * prod(size of every index)`` (``n - 1`` multiplies and
  one add per index combination; ``2 * prod`` for the usual two-operand contraction). One operand:
  ``numel(X)`` if it sums an index, else 0 (a transpose).
- Elementwise arithmetic (:data:`ELEMENTWISE`: Add, Mul, Exp, Gelu, ...): 1 FLOP per output element.
- Normalisations, softmax and reductions (:data:`PER_INPUT`): 1 FLOP per input element (a lower
  bound; they are small next to the matrix products).
- Everything else (Reshape, Transpose, Gather, Cast, Concat, Shape, comparisons, ...): 0.

Model-local functions are inlined first; nodes inside control-flow subgraphs (If/Loop/Scan) are
not counted. Graphs with external data are loaded without it (only shapes matter).

Torch-free.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import onnx
from onnx import shape_inference

from ..errors import InputError

#: 1 FLOP per output element
ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Sigmoid", "Erf",
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "HardSigmoid", "HardSwish", "Softplus",
    "Softsign", "Neg", "Abs", "Sin", "Cos", "Max", "Min", "Sum", "Mean", "Clip", "Mish", "PRelu",
})
#: 1 FLOP per element of the first input
PER_INPUT = frozenset({
    "Softmax", "LogSoftmax", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
    "BatchNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "ReduceMean", "ReduceSum",
    "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp",
})
MATRIX_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"})


def count_flops(
    model: str | os.PathLike[str] | onnx.ModelProto, dims: Mapping[str, int], strict: bool = True
) -> int:
    """Total FLOPs of one run of ``model`` with the symbolic dims set to ``dims``.

    Args:
        model: an ``.onnx`` path (external data is not read) or a ``ModelProto`` (not modified).
        dims: a value for every symbolic dim of the graph inputs, e.g. ``{"batch": 1, "seq": 4096}``.
        strict: raise when a counted node's shapes cannot be inferred (else count it as 0).

    Raises:
        InputError: for a symbolic input dim missing from ``dims`` or (strict) an unknown shape.
    """
    return sum(flop_breakdown(model, dims, strict).values())


def flop_breakdown(
    model: str | os.PathLike[str] | onnx.ModelProto, dims: Mapping[str, int], strict: bool = True
) -> dict[str, int]:
    """FLOPs per op type (only op types with non-zero counts); see :func:`count_flops`."""
    m = _load(model)
    _fix_input_dims(m, dims)
    m = shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    shapes = _static_shapes(m)
    out: dict[str, int] = {}
    for node in m.graph.node:
        if node.domain not in ("", "ai.onnx", "com.microsoft"):
            continue
        if node.op_type not in MATRIX_OPS | ELEMENTWISE | PER_INPUT:
            continue
        try:
            flops = _node_flops(node, shapes)
        except _UnknownShape as e:
            if strict:
                raise InputError(
                    f"count_flops: cannot infer the shape of '{e}' used by {node.op_type} node "
                    f"'{node.name}'; give every symbolic dim in dims (got {dict(dims)}) or pass strict=False"
                ) from None
            flops = 0
        if flops:
            out[node.op_type] = out.get(node.op_type, 0) + flops
    return out


class _UnknownShape(Exception):
    pass


def _load(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
    else:
        m = onnx.load(os.fspath(model), load_external_data=False)
    if len(m.functions):
        from onnx import inliner

        m = inliner.inline_local_functions(m)
    return m


def _fix_input_dims(m: onnx.ModelProto, dims: Mapping[str, int]) -> None:
    """Replace symbolic dims of graph inputs/outputs by values; drop stale value_info."""
    inits = {t.name for t in m.graph.initializer}
    missing: list[str] = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                if d.dim_param in dims:
                    d.dim_value = int(dims[d.dim_param])
                elif d.dim_param not in missing:
                    missing.append(d.dim_param)
    if missing:
        raise InputError(
            f"count_flops: no value for the symbolic input dims {missing} (got {dict(dims)}); "
            "pass a value for each, e.g. dims={'batch': 1, ...}"
        )
    for vi in m.graph.output:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in dims:
                d.dim_value = int(dims[d.dim_param])
    del m.graph.value_info[:]


def _static_shapes(m: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in m.graph.initializer}
    for vi in (*m.graph.input, *m.graph.value_info, *m.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        ds = tt.shape.dim
        if all(d.HasField("dim_value") for d in ds):
            shapes[vi.name] = tuple(d.dim_value for d in ds)
    for node in m.graph.node:  # Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(a.t.dims)
    return shapes


def _shape(shapes: Mapping[str, tuple[int, ...]], name: str) -> tuple[int, ...]:
    if name not in shapes:
        raise _UnknownShape(name)
    return shapes[name]


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def _node_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int:
    op = node.op_type
    has_bias = len(node.input) > 2 and node.input[2] != ""
    if op in ELEMENTWISE:
        return _numel(_shape(shapes, node.output[0]))
    if op in PER_INPUT:
        return _numel(_shape(shapes, node.input[0]))
    if op == "MatMul":
        a = _shape(shapes, node.input[0])
        return 2 * _numel(_shape(shapes, node.output[0])) * a[-1]
    if op == "Gemm":
        a, y = _shape(shapes, node.input[0]), _numel(_shape(shapes, node.output[0]))
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2 * y * k + (y if has_bias else 0)
    if op == "Conv":
        w, y = _shape(shapes, node.input[1]), _numel(_shape(shapes, node.output[0]))
        return 2 * y * _numel(w[1:]) + (y if has_bias else 0)
    if op == "ConvTranspose":
        x, w = _numel(_shape(shapes, node.input[0])), _shape(shapes, node.input[1])
        y = _numel(_shape(shapes, node.output[0]))
        return 2 * x * _numel(w[1:]) + (y if has_bias else 0)
    if op == "Einsum":
        return _einsum_flops(node, shapes)
    return 0


def _einsum_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int:
    eq = ""
    for a in node.attribute:
        if a.name == "equation":
            eq = onnx.helper.get_attribute_value(a).decode().replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    ellipsis: list[int] = []  # broadcast ellipsis dims, right-aligned
    for term, name in zip(terms, node.input):
        shape = _shape(shapes, name)
        letters = term.replace("...", "")
        if "..." in term:
            start = term.index("...")
            n_ell = len(shape) - len(letters)
            ell = list(shape[start:start + n_ell])
            shape = shape[:start] + shape[start + n_ell:]
            if len(ell) > len(ellipsis):
                ellipsis = [1] * (len(ell) - len(ellipsis)) + ellipsis
            for pos, v in enumerate(ell):
                idx = len(ellipsis) - len(ell) + pos
                ellipsis[idx] = max(ellipsis[idx], v)
        for letter, v in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), v)
    combos = math.prod(sizes.values()) * math.prod(ellipsis)
    if len(terms) >= 2:
        return len(terms) * combos
    if rhs or "->" in eq:
        summed = set(terms[0].replace("...", "")) - set(rhs)
    else:  # implicit output: letters that appear once are kept
        summed = set()
    return _numel(_shape(shapes, node.input[0])) if summed else 0
