"""The baked predictor graph run by ONNX Runtime against a plain numpy evaluation of the
linear form, with the host-side ring buffer rotated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from l2p.engine.onnxruntime_backend import OrtEngine
from l2p.errors import InputError
from l2p.predictor.graph import build_predictor_graph, predictor_io_spec
from l2p.predictor.presets import preset
from l2p.predictor.schedule import interval_schedule
from l2p.predictor.table import CoefficientTable
from l2p.spec import TensorSpec

N, C = 16, 8
SCHED = interval_schedule(N, 6, 2)  # (0, 1, 5, 8, 12, 15)


def random_table(K: int, uses_latents: bool, seed: int = 0) -> CoefficientTable:
    """A learned-looking table: random weights on every available history column."""
    rng = np.random.default_rng(seed)
    W, U, V = np.zeros((N, K)), np.zeros((N, K)), np.zeros(N)
    for i in range(N):
        if i in SCHED:
            continue
        h = min(K, sum(s < i for s in SCHED))
        W[i, :h] = rng.standard_normal(h)
        if uses_latents:
            U[i, :h] = rng.standard_normal(h)
            V[i] = rng.standard_normal()
    return CoefficientTable(W, U, V, SCHED, K, uses_latents)


def engine_for(table: CoefficientTable, tmp_path: Path, dtype: str = "float32") -> OrtEngine:
    fspec = TensorSpec("output", dtype, ("batch", "seq", C))
    lspec = TensorSpec("latent", dtype, ("batch", "seq", C)) if table.uses_latents else None
    model = build_predictor_graph(table, fspec, lspec)
    path = tmp_path / "predictor.onnx"
    onnx.save(model, path)
    return OrtEngine(path, predictor_io_spec(table, fspec, lspec), name="predictor", threads=1)


def run_trajectory(table: CoefficientTable, engine: OrtEngine, rotation: int, dtype: str = "float32") -> float:
    """Drive a whole run through a ring buffer; return the worst relative error vs. numpy."""
    B, S, K = 2, 5, table.K
    rng = np.random.default_rng(rotation)
    feats = rng.standard_normal((N, B, S, C))  # F(i) for every step (float64 truth)
    lats = rng.standard_normal((N, B, S, C))  # x(i)
    ring = np.zeros((K, B, S, C), dtype)
    lat_ring = np.zeros((K, B, S, C), dtype)
    written_at = [-1] * K  # write counter per slot, -1 = empty
    ptr, writes, worst = rotation % K, 0, 0.0
    for i in range(N):
        if i in table.computed:
            ring[ptr], lat_ring[ptr] = feats[i], lats[i]
            written_at[ptr], ptr, writes = writes, (ptr + 1) % K, writes + 1
            continue
        filled = [s for s in range(K) if written_at[s] >= 0]
        perm = np.empty(K, np.int64)
        for slot in filled:
            perm[slot] = writes - 1 - written_at[slot]  # 0 = newest
        for r, slot in enumerate(s for s in range(K) if written_at[s] < 0):
            perm[slot] = len(filled) + r  # empty slots get ranks with zero weight
        feed = {"history": ring, "step": np.array([i], np.int64), "perm": perm}
        if table.uses_latents:
            feed |= {"latent_history": lat_ring, "latent": lats[i].astype(dtype)}
        got = engine.run(feed)["feature"]
        # plain numpy evaluation of the linear form from the trajectory itself
        hist = [s for s in table.computed if s < i][::-1][:K]
        want = sum(table.W[i, j] * feats[s] for j, s in enumerate(hist))
        if table.uses_latents:
            want = want + sum(table.U[i, j] * lats[s] for j, s in enumerate(hist)) + table.V[i] * lats[i]
        if dtype == "float16":  # inputs were rounded to fp16 before the graph saw them
            want = sum(table.W[i, j] * feats[s].astype(dtype).astype(np.float64) for j, s in enumerate(hist))
        assert got.shape == (B, S, C) and got.dtype == np.dtype(dtype)
        worst = max(worst, float(np.linalg.norm(got - want) / np.linalg.norm(want)))
    return worst


@pytest.mark.parametrize("K", [1, 2, 3, 4])
@pytest.mark.parametrize("rotation", [0, 1, 3])
def test_matches_numpy_without_latents(K: int, rotation: int, tmp_path: Path) -> None:
    table = random_table(K, uses_latents=False, seed=K)
    assert run_trajectory(table, engine_for(table, tmp_path), rotation) <= 1e-6


@pytest.mark.parametrize("rotation", [0, 2])
def test_matches_numpy_with_latents(rotation: int, tmp_path: Path) -> None:
    table = random_table(3, uses_latents=True, seed=7)
    assert run_trajectory(table, engine_for(table, tmp_path), rotation) <= 1e-6


def test_preset_table_and_float16_io(tmp_path: Path) -> None:
    table = preset("taylorseer2", SCHED, N)
    assert run_trajectory(table, engine_for(table, tmp_path), 1) <= 1e-6
    assert run_trajectory(table, engine_for(table, tmp_path, "float16"), 1, "float16") <= 2e-3


def test_graph_structure() -> None:
    table = random_table(3, uses_latents=True)
    model = build_predictor_graph(table, TensorSpec("o", "float32", ("batch", "seq", C)),
                                  TensorSpec("x", "float32", ("batch", "seq", C)))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, ref in (("W", table.W), ("U", table.U), ("V", table.V)):
        assert inits[name].dtype == np.float32
        np.testing.assert_array_equal(inits[name], ref.astype(np.float32))
    hist = next(i for i in model.graph.input if i.name == "history")
    dims = [d.dim_param or d.dim_value for d in hist.type.tensor_type.shape.dim]
    assert dims == [3, "batch", "seq", C]
    assert [i.name for i in model.graph.input] == ["history", "latent_history", "latent", "step", "perm"]
    assert [o.name for o in model.graph.output] == ["feature"]


def test_shape_errors_come_from_the_spec(tmp_path: Path) -> None:
    table = random_table(2, uses_latents=False)
    engine = engine_for(table, tmp_path)
    good = {"history": np.zeros((2, 1, 3, C), np.float32), "step": np.array([3], np.int64),
            "perm": np.array([0, 1], np.int64)}
    engine.run(good)
    for key, bad, words in [
        ("history", np.zeros((2, 1, 3, C + 1), np.float32), "shape"),
        ("history", np.zeros((3, 1, 3, C), np.float32), "shape"),
        ("history", np.zeros((2, 1, 3, C), np.float64), "dtype"),
        ("perm", np.array([0, 1, 2], np.int64), "shape"),
        ("step", np.array([3], np.int32), "dtype"),
    ]:
        with pytest.raises(InputError, match=words):
            engine.run({**good, key: bad})


def test_spec_errors() -> None:
    lat = random_table(2, uses_latents=True)
    fspec = TensorSpec("o", "float32", ("batch", "seq", C))
    with pytest.raises(InputError, match="latent_spec"):
        predictor_io_spec(lat, fspec)
    with pytest.raises(InputError, match="same shape|shape and dtype"):
        predictor_io_spec(lat, fspec, TensorSpec("x", "float32", ("batch", "seq", C + 1)))
    with pytest.raises(InputError, match="dtype"):
        predictor_io_spec(lat, TensorSpec("o", "float64", ("batch", "seq", C)))
    spec = predictor_io_spec(random_table(2, False), fspec, TensorSpec("x", "float32", ("batch", "seq", C)))
    assert spec.input_names == ["history", "step", "perm"]  # latent spec ignored without U/V
