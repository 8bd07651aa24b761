"""``tools/gpu_loop_bench.py``'s stand-in predictor must do what the predictor ONNX graph does.

The GPU benchmark applies coefficient tables with array ops instead of the ONNX graph (no
onnxruntime-gpu or TensorRT there); checked here against ONNX Runtime running the real graph,
over every forecast step of a schedule and a scrambled ring buffer.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from l2p.engine.onnxruntime_backend import OrtEngine
from l2p.predictor.graph import build_predictor_graph, predictor_io_spec
from l2p.predictor.presets import preset
from l2p.predictor.schedule import interval_schedule
from l2p.sampling.history import forecast_index_inputs
from l2p.spec import TensorSpec

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_loop_bench.py"


def _tool():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_loop_bench", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_loop_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("method", ["taylorseer2", "lagrange2", "fora"])
def test_table_predictor_matches_onnx_graph(method: str) -> None:
    tool = _tool()
    steps, shape = 20, (1, 6, 64)
    table = preset(method, interval_schedule(steps, 6), steps)
    fspec = TensorSpec("output", "float32", shape)
    ref = OrtEngine(build_predictor_graph(table, fspec).SerializeToString(), predictor_io_spec(table, fspec),
                    name="ref", threads=1)
    ours = tool.TablePredictor(table, shape, np)
    rng = np.random.default_rng(0)
    history = rng.standard_normal((table.K, *shape)).astype(np.float32)  # (K, 1, 6, 64)
    feeds = forecast_index_inputs([table.is_computed(i) for i in range(steps)], table.K)
    assert feeds
    for i, idx in feeds.items():
        feed = {"history": history, **idx}
        np.testing.assert_allclose(ours.run_device(feed)["feature"], ref.run(feed)["feature"], rtol=1e-5, atol=1e-6)
