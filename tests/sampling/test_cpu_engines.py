"""The CPU engines of a sampling run, as created (issue 13): session options set deliberately,
and a cached run that adds no ONNX Runtime session or thread beyond the transformer's (the
predictor runs in numpy; a residual-tap head brings one non-spinning session). No timing here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from l2p.engine.onnxruntime_backend import OrtEngine
from l2p.predictor.host import HostPredictor
from l2p.predictor.schedule import interval_schedule
from l2p.predictor.table import CoefficientTable
from l2p.sampling.methods import forecaster_from_table, make_forecaster
from l2p.sampling.pipeline import Sampler


def _options(engine: OrtEngine) -> dict[str, object]:
    so = engine.session.get_session_options()
    return {"intra": so.intra_op_num_threads, "inter": so.inter_op_num_threads,
            "level": so.graph_optimization_level, "mode": so.execution_mode, "arena": so.enable_cpu_mem_arena,
            "pattern": so.enable_mem_pattern, "deterministic": so.use_deterministic_compute,
            "spin": so.get_session_config_entry("session.intra_op.allow_spinning"),
            "inter_spin": so.get_session_config_entry("session.inter_op.allow_spinning")}


def test_session_options_of_the_run_engines(flux_bundle: Path) -> None:
    s = Sampler(flux_bundle, threads=3)
    common = {"inter": 1, "level": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "mode": ort.ExecutionMode.ORT_SEQUENTIAL,
              "arena": True, "pattern": True, "deterministic": True, "inter_spin": "0", "intra": 3}
    transformer = s.engine("transformer")
    assert isinstance(transformer, OrtEngine) and _options(transformer) == {**common, "spin": "1"}
    table = CoefficientTable.zeros(12, 3, interval_schedule(12, 4))
    fc = forecaster_from_table(s.bundle, table, "residual", "p", threads=3)
    assert isinstance(fc.engine, HostPredictor)  # numpy: no session at all
    assert isinstance(fc.head, OrtEngine) and _options(fc.head) == {**common, "spin": "0"}
    preset = make_forecaster(s.bundle, "taylorseer2", 12, 4, threads=3)
    assert preset is not None and isinstance(preset.engine, HostPredictor) and preset.head is None


SCRIPT = """
import json, os, sys
import numpy as np
import onnxruntime as ort
from l2p.predictor.schedule import interval_schedule
from l2p.predictor.table import CoefficientTable
from l2p.sampling.methods import forecaster_from_table
from l2p.sampling.pipeline import Sampler

made = []
class Counting(ort.InferenceSession):
    def __init__(self, *a, **k):
        made.append(1)
        super().__init__(*a, **k)
ort.InferenceSession = Counting
tasks = lambda: len(os.listdir("/proc/self/task"))
cond = dict(np.load(sys.argv[2]))
s = Sampler(sys.argv[1], threads=int(sys.argv[3]))
s.sample(cond, 0, 12, decode=False)
after_full = (len(made), tasks())
s.sample(cond, 0, 12, method="taylorseer2", full_steps=4, decode=False)
s.sample(cond, 1, 12, method="fora", full_steps=4, decode=False)
after_presets = (len(made), tasks())
fc = forecaster_from_table(s.bundle, CoefficientTable.zeros(12, 3, interval_schedule(12, 4)), "residual", "p",
                           threads=int(sys.argv[3]))
s.sample(cond, 0, 12, forecaster=fc, decode=False)
after_head = (len(made), tasks())
print(json.dumps({"full": after_full, "presets": after_presets, "head": after_head}))
"""


def test_a_cached_run_adds_no_sessions_or_threads(flux_bundle: Path, flux_cond: dict[str, np.ndarray],
                                                   tmp_path: Path) -> None:
    np.savez(tmp_path / "cond.npz", **flux_cond)
    threads = 3
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(flux_bundle), str(tmp_path / "cond.npz"), str(threads)],
                         capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    sessions, tasks = got["full"]
    assert sessions == 1  # the transformer
    assert got["presets"] == [sessions, tasks]  # cached runs: no new session, no new thread
    # a residual-tap head: one session, whose pool has threads - 1 workers (the caller is the other)
    assert got["head"] == [sessions + 1, tasks + threads - 1]
