"""The numpy predictor of the CPU loop (``HostPredictor``) against the baked predictor graph run
by ONNX Runtime: equal to float32 rounding, for every forecast step, ring order, dtype and form."""

from __future__ import annotations

import numpy as np
import pytest

from l2p.engine.onnxruntime_backend import OrtEngine
from l2p.errors import InputError
from l2p.predictor.graph import build_predictor_graph, predictor_io_spec
from l2p.predictor.host import HostPredictor, is_predictor_spec
from l2p.spec import IOSpec, TensorSpec

from .test_graph import C, N, random_table


@pytest.mark.parametrize("K,uses_latents,dtype", [(3, False, "float32"), (4, True, "float32"),
                                                   (2, False, "float16"), (3, True, "float16")])
def test_numpy_predictor_equals_the_onnx_graph(K: int, uses_latents: bool, dtype: str) -> None:
    table = random_table(K, uses_latents, seed=K)
    fspec = TensorSpec("output", dtype, ("batch", "seq", C))
    lspec = TensorSpec("latent", dtype, ("batch", "seq", C)) if uses_latents else None
    model = build_predictor_graph(table, fspec, lspec).SerializeToString()
    spec = predictor_io_spec(table, fspec, lspec)
    ort_engine = OrtEngine(model, spec, name="graph", threads=1)
    host = HostPredictor(model, spec, name="numpy")
    rng = np.random.default_rng(K)
    checked = 0
    for i in range(N):
        if i in table.computed:
            continue
        perm = rng.permutation(K).astype(np.int64)  # any ring order
        feed = {"history": (3 * rng.standard_normal((K, 2, 5, C))).astype(dtype),
                "step": np.array([i], np.int64), "perm": perm}
        if uses_latents:
            feed["latent_history"] = rng.standard_normal((K, 2, 5, C)).astype(dtype)
            feed["latent"] = rng.standard_normal((2, 5, C)).astype(dtype)
        want = ort_engine.run(feed)["feature"]
        got = host.run(feed)["feature"]
        assert got.dtype == want.dtype == np.dtype(dtype) and got.shape == want.shape
        # float32 sums may round differently (FMA vs. multiply then add): bound by a few ulp of
        # the sum of |terms|, the terms taken with the graph's float32 constants
        terms = np.abs(table.W[i].astype(np.float32)[perm][:, None, None, None] * feed["history"].astype(np.float32))
        scale = terms.sum(0)
        if uses_latents:
            u = np.abs(table.U[i].astype(np.float32)[perm][:, None, None, None])
            scale = scale + (u * np.abs(feed["latent_history"].astype(np.float32))).sum(0)
            scale = scale + abs(np.float32(table.V[i])) * np.abs(feed["latent"].astype(np.float32))
        ulp = np.finfo(np.float32 if dtype == "float32" else np.float16).eps
        tol = 4 * K * np.finfo(np.float32).eps * scale + (ulp * np.abs(want.astype(np.float32)))
        err = np.abs(got.astype(np.float32) - want.astype(np.float32))
        assert (err <= tol).all(), f"step {i}: max error {err.max()} above the float32 rounding bound"
        checked += 1
    assert checked == N - len(table.computed)


def test_only_predictor_graphs_are_taken() -> None:
    table = random_table(3, False)
    fspec = TensorSpec("output", "float32", ("batch", "seq", C))
    spec = predictor_io_spec(table, fspec)
    assert is_predictor_spec(spec)
    other = IOSpec((TensorSpec("x", "float32", (2,)),), (TensorSpec("y", "float32", (2,)),))
    assert not is_predictor_spec(other)
    model = build_predictor_graph(table, fspec).SerializeToString()
    wrong_k = predictor_io_spec(random_table(4, False), fspec)
    with pytest.raises(InputError, match="not an l2p predictor with K=4"):
        HostPredictor(model, wrong_k)
