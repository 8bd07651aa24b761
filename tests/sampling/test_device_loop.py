"""The denoising loop on a device array namespace: no host round trips, same results as numpy.

CPU tests drive ``denoise(..., xp=FakeXP)`` (see ``fake_device.py``): every host<->device transfer
is logged and any implicit one raises. The reference is the numpy loop on the same host engines
(the loop's CPU path, whose results the calibration and FluxPipeline tests pin down); the
predictor's ``perm`` is checked against an independent ring-buffer model. GPU tests (marked
``gpu``, deselected by default) run cupy with real device engines against ONNX Runtime CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from l2p.engine.base import Engine
from l2p.engine.onnxruntime_backend import OrtEngine
from l2p.errors import InputError, NumericalError
from l2p.predictor.graph import build_predictor_graph, predictor_io_spec
from l2p.predictor.presets import preset
from l2p.predictor.schedule import interval_schedule
from l2p.predictor.table import CoefficientTable
from l2p.sampling.families.base import FamilyRuntime
from l2p.sampling.history import forecast_index_inputs
from l2p.sampling.guidance import CFG
from l2p.sampling.loop import Forecaster, LoopResult, StepView, denoise
from l2p.sampling.schedulers.flow_match import FlowMatchEulerDiscreteScheduler
from l2p.sampling.settings import RunSettings
from l2p.spec import IOSpec, TensorSpec

from .fake_device import DevArray, FakeDeviceEngine, FakeXP

B, S, C = 2, 6, 4
LAT = ("batch", S, C)


class ToyRuntime(FamilyRuntime):
    """A family without a bundle: latents (B, 6, 4), timestep = t / 1000 as FLUX."""

    cond_names = ["cond"]

    def __init__(self) -> None:
        pass

    def latent_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, S, C)

    def set_timesteps(self, scheduler: Any, steps: int) -> None:
        scheduler.set_timesteps(steps)

    def static_inputs(self, cond: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"cond": cond["cond"]}

    def step_inputs(self, latents: Any, t: float) -> dict[str, Any]:
        return {"hidden_states": latents, "timestep": np.full((latents.shape[0],), t, np.float32) / np.float32(1000)}

    def to_vae_latent(self, latents: np.ndarray) -> np.ndarray:
        return latents

    def encode(self, prompts: list[str], run: Any, tokenizers: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError


HEAD_SPEC = IOSpec((TensorSpec("residual", "float32", LAT), TensorSpec("timestep", "float32", ("batch",))),
                   (TensorSpec("sample", "float32", LAT),))


class ToyHead(Engine):
    backend = "numpy"

    def __init__(self) -> None:
        super().__init__("head", HEAD_SPEC)

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"sample": feed["residual"] * np.float32(0.5) + feed["timestep"][:, None, None]}


class ToyTransformer(Engine):
    """residual = tanh(x @ M + cond * timestep); sample = head(residual); NaN at ``nan_step``."""

    backend = "numpy"

    def __init__(self, nan_at: float | None = None, poison: float = float("nan")) -> None:
        spec = IOSpec((TensorSpec("hidden_states", "float32", LAT), TensorSpec("timestep", "float32", ("batch",)),
                       TensorSpec("cond", "float32", ("batch", C))),
                      (TensorSpec("sample", "float32", LAT), TensorSpec("residual", "float32", LAT)))
        super().__init__("transformer", spec)
        self.m = np.random.default_rng(1).standard_normal((C, C)).astype(np.float32) * np.float32(0.5)
        self.nan_at, self.poison = nan_at, np.float32(poison)

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ts = feed["timestep"]
        r = np.tanh(feed["hidden_states"] @ self.m + feed["cond"][:, None, :] * ts[:, None, None])
        if self.nan_at is not None and np.isclose(ts[0], np.float32(self.nan_at / 1000)):
            r = r * self.poison
        return {"sample": ToyHead()._run({"residual": r, "timestep": ts})["sample"], "residual": r}


class Poison(Engine):
    """A predictor whose output is multiplied by ``poison`` (NaN, or a huge factor) on forecast step ``step``."""

    backend = "numpy"

    def __init__(self, inner: Engine, step: int, poison: float = float("nan")) -> None:
        super().__init__(inner.name, inner.spec)
        self.inner, self.step, self.poison = inner, step, np.float32(poison)

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner.run(feed, check=False)
        return {"feature": out["feature"] * self.poison} if feed["step"][0] == self.step else out


def latent_table(steps: int, full: int) -> CoefficientTable:
    """TaylorSeer-2 weights plus small latent terms (an L2P-style table with uses_latents)."""
    base = preset("taylorseer2", interval_schedule(steps, full), steps)
    U, V = np.zeros_like(base.W), np.zeros(steps)
    for i in range(steps):
        if not base.is_computed(i):
            U[i, : min(len(base.history(i)), base.K)] = 0.05
            V[i] = -0.02
    return CoefficientTable(base.W, U, V, base.computed, base.K, True)


def forecaster(kind: str, steps: int, poison_step: int | None = None, poison: float = float("nan")) -> Forecaster | None:
    if kind == "full":
        return None
    table = latent_table(steps, 4) if kind == "latents+residual" else preset(kind, interval_schedule(steps, 4), steps)
    tap = "residual" if kind == "latents+residual" else "output"
    fspec = TensorSpec(tap, "float32", LAT)
    lat = TensorSpec("latent", "float32", LAT) if table.uses_latents else None
    model = build_predictor_graph(table, fspec, lat).SerializeToString()
    engine: Engine = OrtEngine(model, predictor_io_spec(table, fspec, lat), name=f"{kind} predictor", threads=1)
    if poison_step is not None:
        engine = Poison(engine, poison_step, poison)
    return Forecaster(table, engine, tap, ToyHead() if tap == "residual" else None)


def on_device(fc: Forecaster | None, log: list[tuple[str, Any]]) -> Forecaster | None:
    if fc is None:
        return None
    head = FakeDeviceEngine(fc.head, log) if fc.head is not None else None
    return Forecaster(fc.table, FakeDeviceEngine(fc.engine, log), fc.tap, head)


def inputs() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((B, S, C)).astype(np.float32), {"cond": rng.standard_normal((B, C)).astype(np.float32)}


def run_both(kind: str, steps: int = 10, shadow: bool = False, nan_at: float | None = None,
             poison_step: int | None = None, poison: float = float("nan")) -> tuple[Any, Any, list[tuple[str, Any]]]:
    """The numpy loop and the fake-device loop on the same engines; returns both outcomes + the log.
    ``nan_at`` (a timestep) / ``poison_step`` (a forecast step) multiply the transformer's / the
    predictor's output by ``poison`` there."""
    rt, (x0, cond), log = ToyRuntime(), inputs(), []
    fc = forecaster(kind, steps, poison_step, poison)
    outcomes = []
    for xp in (np, FakeXP(log)):
        tr: Engine = ToyTransformer(nan_at, poison)
        f = fc
        if xp is not np:
            tr, f = FakeDeviceEngine(tr, log), on_device(fc, log)
        try:
            outcomes.append(denoise(rt, FlowMatchEulerDiscreteScheduler(), tr, x0.copy(), rt.static_inputs(cond),
                                    steps, f, shadow=shadow, xp=xp))
        except NumericalError as e:
            outcomes.append(e)
    return outcomes[0], outcomes[1], log


@pytest.mark.parametrize("kind", ["full", "taylorseer2", "fora", "latents+residual"])
def test_device_loop_matches_numpy_without_round_trips(kind: str) -> None:
    ref, dev, log = run_both(kind, shadow=kind == "fora")
    assert isinstance(ref, LoopResult) and isinstance(dev, LoopResult)
    assert isinstance(dev.latents, np.ndarray)
    np.testing.assert_array_equal(dev.latents, ref.latents)  # bit for bit
    rows = [[(s.index, s.timestep, s.computed) for s in r.steps] for r in (dev, ref)]
    assert rows[0] == rows[1]
    runs = [n for n, (what, _) in enumerate(log) if what == "run"]
    uploads = [n for n, (what, _) in enumerate(log) if what == "h2d"]
    downloads = [log[n] for n, (what, _) in enumerate(log) if what == "d2h"]
    assert max(uploads) < min(runs), "a host->device upload inside the loop"
    # inside the loop: nothing; after it: the NaN flags (steps,) and the final latents
    assert downloads == [("d2h", (10,)), ("d2h", (B, S, C))]
    assert all(what != "d2h" for what, _ in log[: max(runs) + 1])
    # uploaded once: latents, cond, timestep (steps, B), and for forecasters step (F, 1) + perm (F, K)
    computed = sum(s.computed for s in ref.steps)
    want = [(B, S, C), (B, C), (10, B)]
    if kind != "full":
        fc = forecaster(kind, 10)
        assert fc is not None
        want += [(10 - computed, 1), (10 - computed, fc.table.K)]
    assert sorted(s for what, s in log if what == "h2d") == sorted(want)
    assert sum(w == "run" and n == "transformer" for w, n in log) == (10 if kind == "fora" else computed)


@pytest.mark.parametrize("mode, fused", [("guided", True), ("branches", True), ("branches", False)])
def test_device_loop_with_cfg_matches_numpy(mode: str, fused: bool) -> None:
    """Classifier-free guidance on the device: both branches (one 2B call or two), the forecast of
    the guided output or of both branches, bit for bit the numpy loop, with no host round trip."""
    rt, (x0, cond), log = ToyRuntime(), inputs(), []
    negative = rt.static_inputs({"cond": -cond["cond"]})
    results = []
    for xp in (np, FakeXP(log)):
        tr: Engine = ToyTransformer()
        fc = forecaster("taylorseer2", 10)
        if xp is not np:
            tr, fc = FakeDeviceEngine(tr, log), on_device(fc, log)
        results.append(denoise(rt, FlowMatchEulerDiscreteScheduler(), tr, x0.copy(), rt.static_inputs(cond), 10, fc,
                               xp=xp, cfg=CFG(3.0, mode, negative, fused)))
    ref, dev = results
    np.testing.assert_array_equal(dev.latents, ref.latents)
    assert [what for what, _ in log if what == "d2h"] == ["d2h", "d2h"]  # the NaN flags and the final latents
    runs = sum(w == "run" and n == "transformer" for w, n in log)
    assert runs == ref.computed_steps * (1 if fused else 2) and ref.transformer_evaluations == 2 * ref.computed_steps


@pytest.mark.parametrize("kind", ["full", "taylorseer2"])
def test_nan_named_with_step_and_engine(kind: str) -> None:
    steps = 10
    t = FlowMatchEulerDiscreteScheduler()
    ToyRuntime().set_timesteps(t, steps)
    bad = 1 if kind == "taylorseer2" else 4  # step 1 is a forecast step of the interval schedule
    if kind == "taylorseer2":
        assert bad not in interval_schedule(steps, 4)
        ref, dev, log = run_both(kind, steps, poison_step=bad)
        engine = "taylorseer2 predictor"
    else:
        ref, dev, log = run_both(kind, steps, nan_at=float(t.timesteps[bad]))
        engine = "transformer"
    assert isinstance(ref, NumericalError) and isinstance(dev, NumericalError)
    assert str(dev) == str(ref) and str(dev).startswith(f"step {bad}: the {engine} engine produced NaN/Inf")
    # the device loop ran to the end and read the flags back once; the host loop stopped at once
    assert sum(w == "d2h" for w, _ in log) == 1
    assert sum(w == "run" and n == "transformer" for w, n in log) == (steps if kind == "full" else 4)


@pytest.mark.parametrize("kind", ["full", "taylorseer2"])
def test_divergence_named_with_step_and_engine(kind: str) -> None:
    """A finite but exploding output (x1e7) stops the run with the step and the engine, on the host at
    once and on the device from the one read-back after the loop; a x10 output is not divergence."""
    steps = 10
    t = FlowMatchEulerDiscreteScheduler()
    ToyRuntime().set_timesteps(t, steps)
    bad = 1 if kind == "taylorseer2" else 4
    where: dict[str, Any] = {"poison_step": bad} if kind == "taylorseer2" else {"nan_at": float(t.timesteps[bad])}
    engine = "taylorseer2 predictor" if kind == "taylorseer2" else "transformer"
    ref, dev, log = run_both(kind, steps, poison=1e7, **where)
    assert isinstance(ref, NumericalError) and isinstance(dev, NumericalError)
    assert str(dev) == str(ref) and str(dev).startswith(f"step {bad}: the latent diverged after the {engine} engine")
    assert sum(w == "d2h" for w, _ in log) == 1
    ref, dev, _ = run_both(kind, steps, poison=10.0, **where)
    assert isinstance(ref, LoopResult) and isinstance(dev, LoopResult)
    np.testing.assert_array_equal(dev.latents, ref.latents)


def test_capture_sees_device_arrays() -> None:
    rt, (x0, cond), log = ToyRuntime(), inputs(), []
    xp = FakeXP(log)
    seen: list[StepView] = []
    denoise(rt, FlowMatchEulerDiscreteScheduler(), FakeDeviceEngine(ToyTransformer(), log), x0, rt.static_inputs(cond),
            6, on_device(forecaster("fora", 6), log), capture=seen.append, shadow=True, xp=xp)
    assert len(seen) == 6
    assert all(isinstance(v.latents, DevArray) and isinstance(v.model_output, DevArray) for v in seen)
    assert all(v.true_features is None or isinstance(v.true_features["output"], DevArray) for v in seen)


def ring_reference(computed: list[int], i: int, K: int) -> np.ndarray:
    """perm for step ``i``, from first principles: the n-th computed step lives in slot n % K."""
    before = [s for s in computed if s < i][-K:]  # the newest K, oldest first
    perm = np.empty(K, np.int64)
    filled = {computed.index(s) % K: rank for rank, s in enumerate(reversed(before))}
    empty = iter(range(len(filled), K))
    for slot in range(K):
        perm[slot] = filled[slot] if slot in filled else next(empty)
    return perm


@pytest.mark.parametrize("steps,full,K", [(10, 4, 3), (12, 5, 2), (8, 8, 3), (20, 6, 1)])
def test_forecast_index_inputs(steps: int, full: int, K: int) -> None:
    sched = list(interval_schedule(steps, full))
    got = forecast_index_inputs([i in sched for i in range(steps)], K)
    assert sorted(got) == [i for i in range(steps) if i not in sched]
    for i, feed in got.items():
        assert feed["step"].dtype == feed["perm"].dtype == np.int64
        assert feed["step"].tolist() == [i]
        np.testing.assert_array_equal(feed["perm"], ring_reference(sched, i, K))


def test_host_engine_refuses_device_arrays() -> None:
    with pytest.raises(InputError, match="host arrays only.*--device cuda"):
        ToyTransformer().run_device({})


# -- the Sampler's GPU path, on the fake device -----------------------------------------------


def test_sampler_device_path_on_fake_gpu(flux_bundle: Path, flux_cond: dict[str, np.ndarray],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from l2p.sampling import pipeline
    from l2p.sampling.pipeline import Sampler

    log: list[tuple[str, Any]] = []
    made: list[tuple[str, str, bool]] = []
    real_open = pipeline.open_engine

    def fake_open(backend: str, path: Any, spec: IOSpec, *, name: str = "graph", device: str = "cpu",
                  **options: Any) -> Engine:
        if device == "cpu":
            return real_open(backend, path, spec, name=name, **options)
        made.append((backend, name, isinstance(path, bytes)))
        return FakeDeviceEngine(OrtEngine(path, spec, name=name, threads=options.get("threads")), log)

    monkeypatch.setattr(pipeline, "get_xp", lambda device: FakeXP(log) if device != "cpu" else np)
    monkeypatch.setattr(pipeline, "open_engine", fake_open)
    gpu = Sampler(flux_bundle, backend="onnxruntime-cuda", device="cuda", threads=1)
    cpu = Sampler(flux_bundle, threads=1)
    for method, full in [("full", None), ("taylorseer2", 3)]:
        log.clear()
        got = gpu.sample(flux_cond, 3, 6, method, full, decode=False)
        ref = cpu.sample(flux_cond, 3, 6, method, full, decode=False)
        np.testing.assert_array_equal(got.final, ref.final)
        runs = [n for n, (w, _) in enumerate(log) if w == "run"]
        assert [w for w, _ in log[max(runs):]] == ["run", "d2h", "d2h"]
        assert all(w == "h2d" for w, _ in log[: min(runs)]) and all(w == "run" for w, _ in log[min(runs):max(runs)])
    assert made == [("onnxruntime-cuda", "transformer", False), ("onnxruntime-cuda", "taylorseer2 predictor", True)]
    with pytest.raises(InputError, match="needs a GPU backend"):
        Sampler(flux_bundle, backend="onnxruntime", device="cuda")
    with pytest.raises(InputError, match="CUDA graphs need --backend tensorrt"):
        Sampler(flux_bundle, backend="onnxruntime-cuda", device="cuda", use_cuda_graph=True)


# -- GPU: real cupy and device engines against the CPU loop ------------------------------------

HAS_CUPY = importlib.util.find_spec("cupy") is not None
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * scale)


@pytest.mark.gpu
@pytest.mark.parametrize("method,full", [("full", None), ("taylorseer2", 4)])
def test_gpu_ort_cuda_loop_matches_cpu(flux_bundle: Path, flux_cond: dict[str, np.ndarray], method: str,
                                       full: int | None) -> None:
    if not (HAS_CUPY and HAS_CUDA_EP):
        pytest.skip("needs cupy and onnxruntime-gpu (pip install 'l2p[gpu]') and a CUDA device")
    from l2p.sampling.pipeline import Sampler

    got = Sampler(flux_bundle, backend="onnxruntime-cuda", device="cuda").sample(flux_cond, 3, 8, method, full)
    ref = Sampler(flux_bundle).sample(flux_cond, 3, 8, method, full)
    assert isinstance(got.final, np.ndarray) and got.loop.computed_steps == ref.loop.computed_steps
    _close(got.final, ref.final)


@pytest.mark.gpu
def test_gpu_nan_flag_on_device(flux_bundle: Path, flux_cond: dict[str, np.ndarray]) -> None:
    if not (HAS_CUPY and HAS_CUDA_EP):
        pytest.skip("needs cupy and onnxruntime-gpu (pip install 'l2p[gpu]') and a CUDA device")
    from l2p.sampling.pipeline import Sampler

    s = Sampler(flux_bundle, backend="onnxruntime-cuda", device="cuda")
    fc = s.forecaster(RunSettings(steps=8, method="taylorseer2", full_steps=4))
    bad = next(i for i in range(8) if not fc.is_computed(i) and i > 1)
    s._forecasters[("taylorseer2", 8, 4)] = Forecaster(fc.table, _NanOnStep(fc.engine, bad), fc.tap, fc.head)
    with pytest.raises(NumericalError, match=f"^step {bad}: the taylorseer2 predictor engine"):
        s.sample(flux_cond, 3, 8, "taylorseer2", 4, decode=False)


class _NanOnStep(Engine):
    """Wraps a device engine: NaN output on forecast step ``step`` (reads ``step`` on the device)."""

    device_io = True

    def __init__(self, inner: Engine, step: int) -> None:
        super().__init__(inner.name, inner.spec)
        self.inner, self.step = inner, step

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError("host run")

    def _run_device(self, feed: Mapping[str, Any], metas: Mapping[str, Any],
                    dims: Mapping[str, int] | None) -> dict[str, Any]:
        out = self.inner.run_device(feed, check=False)
        import cupy as cp

        nan = cp.where(feed["step"][0] == self.step, cp.float32("nan"), cp.float32(1))
        return {"feature": out["feature"] * nan}


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("use_cuda_graph", [False, True])
def test_gpu_tensorrt_loop_matches_cpu(flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path,
                                       use_cuda_graph: bool) -> None:
    if not (HAS_CUPY and HAS_CUDA_EP and importlib.util.find_spec("tensorrt") is not None):
        pytest.skip("needs cupy, onnxruntime-gpu, tensorrt and a CUDA device")
    import shutil

    from l2p.engine.trt_build import build_plans
    from l2p.sampling.pipeline import Sampler

    bundle = tmp_path / "b"
    shutil.copytree(flux_bundle, bundle)
    ref = Sampler(bundle)
    b, t = flux_cond["encoder_hidden_states"].shape[:2]
    img = ref.rt.latent_shape(b)[1]
    build_plans(bundle, graphs=["transformer"], progress=False,
                opt_dims={"batch": b, "txt_seq": t, "img_seq": img, "rope_seq": img + t})
    got = Sampler(bundle, backend="tensorrt", device="cuda", use_cuda_graph=use_cuda_graph)
    for method, full in [("full", None), ("taylorseer2", 4)]:
        _close(got.sample(flux_cond, 3, 8, method, full, decode=False).final,
               ref.sample(flux_cond, 3, 8, method, full, decode=False).final)


# -- the loop on real cupy arrays (a CUDA device; no onnxruntime-gpu or TensorRT needed) ---------


class _CupyKernel(Engine):
    """A device engine for the toy graphs: ``run_device`` takes and returns cupy arrays only.

    The transformer and head compute natively in cupy; the predictor's "kernel" is the ONNX
    Runtime CPU run of its graph behind an explicit copy (a stand-in: what is tested is the loop).
    """

    backend = "cupy"
    device_io = True

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner.name, inner.spec)
        self.inner = inner

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError(f"{self.name}: host run() on a device engine")

    def _run_device(self, feed: Mapping[str, Any], metas: Mapping[str, Any],
                    dims: Mapping[str, int] | None) -> dict[str, Any]:
        import cupy as cp

        assert all(isinstance(v, cp.ndarray) for v in feed.values()), f"{self.name}: host input"
        if isinstance(self.inner, ToyTransformer):
            ts = feed["timestep"]
            r = cp.tanh(feed["hidden_states"] @ cp.asarray(self.inner.m) + feed["cond"][:, None, :] * ts[:, None, None])
            return {"sample": r * cp.float32(0.5) + ts[:, None, None], "residual": r}
        if isinstance(self.inner, ToyHead):
            return {"sample": feed["residual"] * cp.float32(0.5) + feed["timestep"][:, None, None]}
        out = self.inner.run({k: cp.asnumpy(v) for k, v in feed.items()}, check=False)
        return {k: cp.asarray(v) for k, v in out.items()}


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["full", "taylorseer2", "latents+residual"])
def test_gpu_cupy_loop_matches_numpy(kind: str) -> None:
    if not HAS_CUPY:
        pytest.skip("needs cupy (pip install 'l2p[gpu]') and a CUDA device")
    import cupy as cp

    rt, (x0, cond) = ToyRuntime(), inputs()
    fc = forecaster(kind, 12)
    ref = denoise(rt, FlowMatchEulerDiscreteScheduler(), ToyTransformer(), x0.copy(), rt.static_inputs(cond), 12, fc)
    dfc = None if fc is None else Forecaster(fc.table, _CupyKernel(fc.engine), fc.tap,
                                             None if fc.head is None else _CupyKernel(fc.head))
    seen: list[Any] = []
    got = denoise(rt, FlowMatchEulerDiscreteScheduler(), _CupyKernel(ToyTransformer()), x0.copy(),
                  rt.static_inputs(cond), 12, dfc, capture=lambda v: seen.append(type(v.latents)), xp=cp)
    assert isinstance(got.latents, np.ndarray)
    assert set(seen) == {cp.ndarray}
    assert [(s.index, s.computed) for s in got.steps] == [(s.index, s.computed) for s in ref.steps]
    np.testing.assert_allclose(got.latents, ref.latents, rtol=1e-4, atol=1e-5)
