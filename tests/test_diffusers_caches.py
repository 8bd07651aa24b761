"""``tools/diffusers_caches.py``: diffusers' cache hooks vs. l2p on the same model and noise.

The FLOPs the tool counts per transformer call are checked against ``torch.utils.flop_counter``
(attention through SDPA's math backend, so it is counted as matrix products), at full compute
and with diffusers' caches skipping work; the TaylorSeer step rule against the hook itself.
The slow test runs the tool's quick mode end to end on the built-in model.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from tests.conftest import tiny_flux_config  # noqa: E402

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool(name: str):  # type: ignore[no-untyped-def]
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _transformer():  # type: ignore[no-untyped-def]
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**{**tiny_flux_config(False), "num_layers": 2})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def _inputs(step: int, batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(step)
    return dict(hidden_states=torch.randn(batch, 16, 16, generator=g),
                encoder_hidden_states=torch.randn(batch, 8, 32, generator=g),
                pooled_projections=torch.randn(batch, 24, generator=g),
                timestep=torch.full((batch,), 1.0 - step / 20), img_ids=torch.zeros(16, 3),
                txt_ids=torch.zeros(8, 3))


def _calls(model, steps, meter, config=None, reference=True):  # type: ignore[no-untyped-def]
    """Run ``steps`` transformer calls; (meter's FLOPs per call, flop_counter's per call if ``reference``)."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    if config is not None:
        model.enable_cache(config)
    meter.reset()
    ref = []
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), model.cache_context("cond"):
        for i in range(steps):
            with FlopCounterMode(display=False) if reference else nullcontext() as fc:
                model(**_inputs(i))
            if fc is not None:
                ref.append(fc.get_total_flops())
    if config is not None:
        model._reset_stateful_cache()
        model.disable_cache()
    return list(meter.calls), ref


def test_flop_meter_counts_what_runs_like_torch_flop_counter() -> None:
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    hooks = _tool("diffusers_hooks")
    model = _transformer()
    meter = hooks.FlopMeter(model)
    got, ref = _calls(model, 2, meter)
    assert got == ref and len(set(ref)) == 1  # full compute: every call alike
    full = ref[0]
    configs = [TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=2, max_order=1,
                                     taylor_factors_dtype=torch.float32, use_lite_mode=lite) for lite in (True, False)]
    configs += [FirstBlockCacheConfig(threshold=1e9),
                MagCacheConfig(threshold=1e9, max_skip_steps=2, retention_ratio=0.0, num_inference_steps=8,
                               mag_ratios=[1.0] * 8)]
    for config in configs:
        got, ref = _calls(model, 8, meter, config)
        assert got == ref, config
        assert min(got) < 0.8 * full and max(got) == full, (config, got)  # some calls skipped work, some did not


def test_taylorseer_steps_are_the_hooks_computed_steps() -> None:
    from diffusers import TaylorSeerCacheConfig

    hooks = _tool("diffusers_hooks")
    model = _transformer()
    meter = hooks.FlopMeter(model)
    for warmup, interval in ((3, 7), (2, 10)):
        cfg = TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, max_order=1,
                                    taylor_factors_dtype=torch.float32, use_lite_mode=True)
        got, _ = _calls(model, 24, meter, cfg, reference=False)
        computed = tuple(i for i, f in enumerate(got) if f == max(got))
        assert computed == hooks.taylorseer_steps(24, warmup, interval)


@pytest.mark.slow
def test_quick_mode_on_the_builtin_model(tmp_path: Path) -> None:
    """Quick mode end to end: l2p's full run matches diffusers' (same noise) to >= 60 dB, l2p's
    taylorseer1 on diffusers' TaylorSeer steps matches diffusers' lite TaylorSeer, every row is filled."""
    from l2p.cli import main as l2p_main
    from l2p.export.exporter import export_bundle
    from l2p.models import BUILTIN

    if not (BUILTIN["tiny-flux"] / "model_index.json").is_file():
        pytest.skip("the built-in model is not in this install")
    bundle = export_bundle("tiny-flux", tmp_path / "bundle", log=lambda s: None)
    prompts = tmp_path / "calib.txt"
    prompts.write_text("a red circle at the top\na blue square at the top left\n")
    assert l2p_main(["calibrate", str(bundle), "--prompts", str(prompts), "--steps", "12", "--full-steps", "5",
                     "--name", "t5", "--seeds", "1", "--closed-loop", "0", "--K", "3"]) == 0
    tool = _tool("diffusers_caches")
    out = tmp_path / "report.json"
    rc = tool.main(["--bundle", str(bundle), "--quick", "--steps", "12", "--predictors", "t5", "--budgets", "5",
                    "--taylorseer", "2:3:1:lite,2:3:1:attn", "--fbc", "0.2", "--magcache", "1:6:0.1",
                    "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["l2p full (ONNX Runtime)", "l2p taylorseer2 interval 5/12", "l2p fora interval 5/12",
                          "l2p taylorseer1 on TS w2/n3 steps", "l2p:t5", "diffusers full",
                          "diffusers TaylorSeer1 lite w2/n3", "diffusers TaylorSeer1 attn w2/n3",
                          "diffusers FirstBlockCache 0.2", "diffusers MagCache 1 K6 r0.1"]
    assert rows["l2p full (ONNX Runtime)"]["latent_psnr_db"] >= 60.0
    assert rows["diffusers full"]["calls"] == 12 and rows["diffusers full"]["flops_reduction"] == 1.0
    lite, ours = rows["diffusers TaylorSeer1 lite w2/n3"], rows["l2p taylorseer1 on TS w2/n3 steps"]
    assert lite["calls"] == ours["calls"] == 5  # steps 0, 1, 3, 6, 9
    assert abs(lite["latent_psnr_db"] - ours["latent_psnr_db"]) < 0.1
    assert rows["diffusers TaylorSeer1 attn w2/n3"]["equiv_calls"] > 1.5 * lite["equiv_calls"]  # FFNs still run
    assert rows["l2p:t5"]["calls"] == 5
    for r in rows.values():
        assert r["images"] == 2 and 0 <= r["accepted"] <= 2 and r["seconds_per_image"] > 0
        assert np.isfinite([r["latent_psnr_db"], r["psnr_db"], r["flops_reduction"]]).all()
        assert r["flops_reduction"] >= 1.0 and r["calls"] <= r["equiv_calls"] + 1e-9
