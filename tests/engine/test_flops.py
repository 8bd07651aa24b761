"""FLOP counting from ONNX shapes: hand-computed counts for small graphs and the predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from l2p.engine.flops import count_flops, flop_breakdown
from l2p.errors import InputError
from l2p.predictor.graph import build_predictor_graph
from l2p.predictor.presets import preset
from l2p.predictor.schedule import interval_schedule
from l2p.predictor.table import CoefficientTable
from l2p.spec import TensorSpec

B, S, C, D = 2, 7, 16, 24


def model_of(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def linear_model(bias: bool) -> onnx.ModelProto:
    """y = x @ W (+ b): x [batch, seq, C], W [C, D]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((C, D)).astype(np.float32), "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw" if bias else "y"])]
    if bias:
        inits.append(numpy_helper.from_array(np.zeros(D, np.float32), "b"))
        nodes.append(helper.make_node("Add", ["xw", "b"], ["y"]))
    return model_of(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", D])],
        inits,
    )


def test_matmul() -> None:
    dims = {"batch": B, "seq": S}
    assert count_flops(linear_model(False), dims) == 2 * B * S * C * D
    assert flop_breakdown(linear_model(True), dims) == {"MatMul": 2 * B * S * C * D, "Add": B * S * D}


def test_external_data_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(linear_model(True), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    assert (tmp_path / "m.onnx.data").exists()
    assert count_flops(path, {"batch": B, "seq": S}) == 2 * B * S * C * D + B * S * D
    (tmp_path / "m.onnx.data").unlink()  # only shapes matter
    assert count_flops(str(path), {"batch": 1, "seq": 1}) == 2 * C * D + D


def test_attention_einsum_gemm_conv() -> None:
    H, Dh = 3, 8
    nodes = [
        helper.make_node("Einsum", ["q", "k"], ["s"], equation="bhsd,bhtd->bhst"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),  # [b,h,s,t] x [b,h,t,d]
    ]
    qkv = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", H, "seq", Dh]) for n in "qkv"]
    m = model_of(nodes, qkv, [helper.make_tensor_value_info("o", TensorProto.FLOAT, ["batch", H, "seq", Dh])])
    got = flop_breakdown(m, {"batch": B, "seq": S})
    assert got == {"Einsum": 2 * B * H * S * S * Dh, "Softmax": B * H * S * S, "MatMul": 2 * B * H * S * S * Dh}

    gemm = model_of(
        [helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", D])],
        [numpy_helper.from_array(np.zeros((D, C), np.float32), "w"),
         numpy_helper.from_array(np.zeros(D, np.float32), "c")],
    )
    assert count_flops(gemm, {"n": 5}) == 2 * 5 * C * D + 5 * D

    conv = model_of(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.zeros(4, np.float32), "b")],
    )
    assert count_flops(conv, {"batch": 2}) == 2 * (2 * 4 * 8 * 8) * 27 + 2 * 4 * 8 * 8


def test_einsum_predictor_form() -> None:
    K = 3
    m = model_of(
        [helper.make_node("Einsum", ["c", "h"], ["y"], equation="k,kbsc->bsc")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [K]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [K, "batch", "seq", C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", C])],
    )
    assert count_flops(m, {"batch": B, "seq": S}) == 2 * K * B * S * C


def test_predictor_graph() -> None:
    n = 20
    sched = interval_schedule(n, 6, 2)
    table = preset("taylorseer2", sched, n)
    spec = TensorSpec("output", "float32", ("batch", "seq", C))
    K, M = table.K, B * S * C
    assert count_flops(build_predictor_graph(table, spec), {"batch": B, "seq": S}) == 2 * K * M
    # with latents: two [1,K]x[K,M] products, V * x and two adds
    lat = CoefficientTable(table.W, table.W, np.zeros(n), sched, K, True)
    got = count_flops(build_predictor_graph(lat, spec, spec), {"batch": B, "seq": S})
    assert got == 2 * 2 * K * M + 3 * M


def test_missing_dims() -> None:
    with pytest.raises(InputError, match=r"\['seq'\]"):
        count_flops(linear_model(False), {"batch": 1})
