"""The numpy schedulers against diffusers' own (the independent reference).

Each case builds both from the same diffusers config dict, compares the schedules, then runs a
full trajectory with the same pseudo-model from the same float32 noise. The pseudo-model is
evaluated in numpy for both runs, so any difference comes from the schedulers alone.
"""

from __future__ import annotations

import inspect
import math
import subprocess
import sys

import numpy as np
import pytest

from l2p.errors import InputError, UnsupportedModelError
from l2p.sampling.schedulers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    calculate_shift,
    make_scheduler,
    set_timesteps_like_pipeline,
)
from l2p.sampling.schedulers import ddim as ddim_mod
from l2p.sampling.schedulers import dpm_solver as dpm_mod
from l2p.sampling.schedulers import flow_match as fm_mod

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# diffusers' DPM scheduler calls np.array on a tensor with copy=False (numpy 2 deprecation).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FLUX = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.30.0.dev0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
SD3 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
QWEN = {  # Qwen/Qwen-Image scheduler/scheduler_config.json
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.34.0.dev0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
DIT_DDIM = {  # facebook/DiT-XL-2-256 style
    "_class_name": "DDIMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "trained_betas": None,
}
SD_DDIM = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "skip_prk_steps": True,  # a PNDM key: ignored, as diffusers ignores it
}
PIXART_DPM = {  # PixArt-alpha/PixArt-XL-2-1024-MS scheduler config
    "_class_name": "DPMSolverMultistepScheduler",
    "_diffusers_version": "0.22.0.dev0",
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "dynamic_thresholding_ratio": 0.995,
    "euler_at_final": False,
    "lambda_min_clipped": -math.inf,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_karras_sigmas": False,
    "use_lu_lambdas": False,
    "variance_type": None,
}

# (name, config, how to set timesteps: ("pipeline", kind, image_seq_len) or ("plain",))
FM_CASES = [
    ("flux-1024px", FLUX, ("pipeline", "flux", 4096)),
    ("flux-512px", FLUX, ("pipeline", "flux", 1024)),
    ("sd3", SD3, ("pipeline", "sd3", 4096)),
    ("sd3-plain", SD3, ("plain",)),
    ("sd3-dynamic", {**SD3, "use_dynamic_shifting": True}, ("pipeline", "sd3", 4096)),
    ("qwen-image-1328px", QWEN, ("pipeline", "qwenimage", 6889)),
    ("linear-shift", {**QWEN, "time_shift_type": "linear", "shift_terminal": None}, ("pipeline", "flux", 1024)),
    ("invert-sigmas", {**SD3, "invert_sigmas": True}, ("plain",)),
]
DDIM_CASES = [
    ("dit-linear", DIT_DDIM),
    ("sd-scaled-linear", SD_DDIM),
    ("v-trailing", {**SD_DDIM, "prediction_type": "v_prediction", "timestep_spacing": "trailing",
                    "set_alpha_to_one": True}),
    ("cosine-clip-linspace", {**DIT_DDIM, "beta_schedule": "squaredcos_cap_v2", "clip_sample": True,
                              "timestep_spacing": "linspace"}),
]
DPM_CASES = [
    ("pixart-2m", PIXART_DPM),
    ("from-dit-ddim", {**DIT_DDIM, "_class_name": "DPMSolverMultistepScheduler"}),
    ("v-scaled-linear-leading", {**SD_DDIM, "_class_name": "DPMSolverMultistepScheduler",
                                 "prediction_type": "v_prediction", "timestep_spacing": "leading"}),
    ("heun-trailing", {**PIXART_DPM, "solver_type": "heun", "timestep_spacing": "trailing"}),
    ("sigma-min-euler-final", {**PIXART_DPM, "final_sigmas_type": "sigma_min", "euler_at_final": True}),
    ("order1-clipped", {**PIXART_DPM, "solver_order": 1, "lambda_min_clipped": -5.1}),
]


def _diffusers_scheduler(config):
    return getattr(diffusers, config["_class_name"]).from_config(config)


def _set_both(ours, ref, how, n):
    if how[0] == "plain":
        ours.set_timesteps(n)
        ref.set_timesteps(n)
        return
    _, kind, seq_len = how
    set_timesteps_like_pipeline(ours, kind, n, seq_len)
    c = ref.config
    if kind in ("flux", "qwenimage"):  # FluxPipeline / QwenImagePipeline, step 5
        mu = calculate_shift(seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                             c.get("base_shift", 0.5), c.get("max_shift", 1.15))
        ref.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
    else:  # StableDiffusion3Pipeline
        kw = {}
        if c.get("use_dynamic_shifting", None):
            kw["mu"] = calculate_shift(seq_len, c.get("base_image_seq_len", 256),
                                       c.get("max_image_seq_len", 4096), c.get("base_shift", 0.5),
                                       c.get("max_shift", 1.16))
        ref.set_timesteps(n, **kw)


def _pseudo_model(x: np.ndarray, t, direction: np.ndarray, a: float, b: float) -> np.ndarray:
    """``a * x + b * sin(0.0123 t) * direction``, in x's dtype."""
    return (np.float32(a) * x + np.float32(b * math.sin(float(t) * 0.0123)) * direction).astype(x.dtype)


def _trajectories(ours, ref, shape, dtype=np.float32, a=0.3, b=1.0):
    """Final samples of both schedulers from the same noise and pseudo-model.

    Flow matching uses a = 0.3, b = 1 (velocity-like). The VP schedulers use a = 0.9, b = 0.3:
    an epsilon close to x keeps the latents O(1) as a real model does; with a = 0.3 the x0
    estimate is amplified by 1/alpha ~ 160 at t = 999 and the samples reach |x| ~ 100.
    """
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(shape).astype(np.float32)
    direction = rng.standard_normal(shape).astype(np.float32)
    x = x0.astype(dtype)
    for t in ours.timesteps:
        x = ours.step(_pseudo_model(x, t, direction, a, b), t, ours.scale_model_input(x, t))
    y = torch.from_numpy(x0).to(getattr(torch, np.dtype(dtype).name))
    for t in ref.timesteps:
        y_in = ref.scale_model_input(y, t) if hasattr(ref, "scale_model_input") else y  # FM has none
        mo = torch.from_numpy(_pseudo_model(y.numpy(), t.item(), direction, a, b))
        y = ref.step(mo, t, y_in, return_dict=False)[0]
    return x, y.numpy()


def _check_schedule(ours, ref, sigmas: bool):
    ref_t = ref.timesteps.numpy()
    assert ours.timesteps.dtype == ref_t.dtype
    np.testing.assert_array_equal(ours.timesteps, ref_t)
    if sigmas:
        ref_s = ref.sigmas.numpy()
        assert ours.sigmas.dtype == ref_s.dtype == np.float32
        np.testing.assert_allclose(ours.sigmas, ref_s, rtol=1e-6, atol=0)


REPORT: dict[str, tuple[float, float]] = {}


def _diff(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(max abs difference, max |reference|)."""
    return float(np.abs(x.astype(np.float64) - y).max()), float(np.abs(y).max())


@pytest.mark.parametrize("n", [20, 50, 7])
@pytest.mark.parametrize("name,config,how", FM_CASES, ids=[c[0] for c in FM_CASES])
def test_flow_match_matches_diffusers(name, config, how, n):
    ours, ref = make_scheduler(config), _diffusers_scheduler(config)
    _set_both(ours, ref, how, n)
    _check_schedule(ours, ref, sigmas=True)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())  # bit-equal schedule
    x, y = _trajectories(ours, ref, (1, 64, 16))
    assert x.dtype == y.dtype == np.float32
    REPORT[f"fm/{name}/{n}"] = _diff(x, y)
    np.testing.assert_array_equal(x, y)  # bit-equal trajectory


def test_flow_match_float16_step_matches_diffusers():
    ours, ref = make_scheduler(FLUX), _diffusers_scheduler(FLUX)
    _set_both(ours, ref, ("pipeline", "flux", 1024), 20)
    x, y = _trajectories(ours, ref, (1, 64, 16), dtype=np.float16)
    assert x.dtype == y.dtype == np.float16
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("n", [20, 50, 10])
@pytest.mark.parametrize("name,config", DDIM_CASES, ids=[c[0] for c in DDIM_CASES])
def test_ddim_matches_diffusers(name, config, n):
    ours, ref = make_scheduler(config), _diffusers_scheduler(config)
    ac_ref = ref.alphas_cumprod.numpy()
    np.testing.assert_allclose(ours.alphas_cumprod, ac_ref, rtol=2e-6)
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    _check_schedule(ours, ref, sigmas=False)
    x, y = _trajectories(ours, ref, (2, 4, 8, 8), a=0.9, b=0.3)
    assert x.dtype == y.dtype == np.float32
    REPORT[f"ddim/{name}/{n}"] = _diff(x, y)
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [20, 50, 10])
@pytest.mark.parametrize("name,config", DPM_CASES, ids=[c[0] for c in DPM_CASES])
def test_dpm_solver_matches_diffusers(name, config, n):
    ours, ref = make_scheduler(config), _diffusers_scheduler(config)
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    _check_schedule(ours, ref, sigmas=True)
    x, y = _trajectories(ours, ref, (2, 4, 8, 8), a=0.9, b=0.3)
    assert x.dtype == y.dtype == np.float32
    REPORT[f"dpm/{name}/{n}"] = _diff(x, y)
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


def test_set_timesteps_resets_multistep_state():
    ours = make_scheduler(PIXART_DPM)
    ours.set_timesteps(20)
    x = np.ones((1, 4, 2, 2), np.float32)
    first = ours.step(x * 0.1, ours.timesteps[0], x)
    ours.step(x * 0.2, ours.timesteps[1], first)
    assert ours.step_index == 2 and ours.lower_order_nums == 2
    ours.set_timesteps(20)
    assert ours.step_index is None and ours.lower_order_nums == 0
    np.testing.assert_array_equal(ours.step(x * 0.1, ours.timesteps[0], x), first)


def test_step_index_found_from_first_timestep():
    ours, ref = make_scheduler(SD3), _diffusers_scheduler(SD3)
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    x = np.ones((1, 2, 2), np.float32)
    ours.step(x, ours.timesteps[3], x)
    ref.step(torch.from_numpy(x), ref.timesteps[3], torch.from_numpy(x))
    assert ours.step_index == ref.step_index == 4


class _NoNumpyFunctions(np.ndarray):
    """An array on which any ``np.<function>(array)`` call raises: stands in for cupy."""

    def __array_function__(self, func, types, args, kwargs):
        raise AssertionError(f"step called np.{func.__name__} on an array")


@pytest.mark.parametrize("config", [FLUX, DIT_DDIM, {**DIT_DDIM, "clip_sample": True}, PIXART_DPM],
                         ids=["flow-match", "ddim", "ddim-clip", "dpm"])
def test_step_uses_only_array_methods(config):
    """step touches arrays through operators, astype, clip and dtype only, so cupy works."""
    ours = make_scheduler(config)
    if config is FLUX:
        ours.set_timesteps(sigmas=np.linspace(1.0, 0.25, 4), mu=0.8)
    else:
        ours.set_timesteps(4)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4).view(_NoNumpyFunctions)
    for t in ours.timesteps:
        x = ours.step(x * 0.5, t, x)
    assert isinstance(x, _NoNumpyFunctions) and x.dtype == np.float32


def test_package_does_not_import_torch():
    code = "import sys, l2p.sampling.schedulers; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_keys_cover_diffusers_signatures():
    classes = [(fm_mod, "FlowMatchEulerConfig", "FlowMatchEulerDiscreteScheduler"),
               (ddim_mod, "DDIMConfig", "DDIMScheduler"),
               (dpm_mod, "DPMSolverConfig", "DPMSolverMultistepScheduler")]
    for mod, config_cls, name in classes:
        ref_keys = set(inspect.signature(getattr(diffusers, name).__init__).parameters) - {"self"}
        fields = set(getattr(mod, config_cls).__dataclass_fields__)
        ours = fields | set(mod._DEFAULT_ONLY) | set(getattr(mod, "_HARMLESS", ()))
        assert ref_keys == ours, (name, ref_keys ^ ours)


def test_errors():
    with pytest.raises(UnsupportedModelError, match="DDIMScheduler"):
        make_scheduler({"_class_name": "PNDMScheduler"})
    with pytest.raises(InputError, match="use_karras_sigmas"):
        make_scheduler({**FLUX, "use_karras_sigmas": True})
    with pytest.raises(InputError, match="frobnicate"):
        make_scheduler({**FLUX, "frobnicate": 1})
    with pytest.raises(InputError, match="algorithm_type"):
        make_scheduler({**PIXART_DPM, "algorithm_type": "sde-dpmsolver++"})
    with pytest.raises(InputError, match="beta_schedule"):
        make_scheduler({**DIT_DDIM, "beta_schedule": "sigmoid"})
    ddim = make_scheduler(DIT_DDIM)
    with pytest.raises(InputError, match=r"= 0 .*1\.\.1000"):
        ddim.set_timesteps(0)
    with pytest.raises(InputError, match=r"= 1001 .*1\.\.1000"):
        ddim.set_timesteps(1001)
    with pytest.raises(InputError, match="set_timesteps first"):
        ddim.step(np.zeros(2, np.float32), 999, np.zeros(2, np.float32))
    flux = make_scheduler(FLUX)
    with pytest.raises(InputError, match="mu is required"):
        flux.set_timesteps(20)
    with pytest.raises(InputError, match="3 sigmas"):
        flux.set_timesteps(4, sigmas=[1.0, 0.5, 0.2], mu=1.0)
    flux.set_timesteps(4, mu=1.0)
    with pytest.raises(InputError, match="integer timestep"):
        flux.step(np.zeros(2, np.float32), 1000, np.zeros(2, np.float32))


def test_report_max_differences(capsys, request):
    """Prints the max |ours - diffusers| per case (run with -v to see it)."""
    if request.config.getoption("verbose") < 1:
        return
    with capsys.disabled():
        for key, (diff, size) in sorted(REPORT.items()):
            print(f"\n  {key:40s} max abs diff {diff:.2e}  (max |x| {size:.2f})", end="")
        print()
