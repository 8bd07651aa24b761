"""QwenImageTransformer2DModel: export (real-valued RoPE) vs. the diffusers forward, Sampler vs.
QwenImagePipeline (no true CFG, and true CFG at its default 4 with its norm rescaling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from l2p.errors import InputError  # noqa: E402
from l2p.export.exporter import export_bundle  # noqa: E402
from l2p.export.qwenimage import QwenImageAdapter  # noqa: E402
from l2p.metrics import psnr_db  # noqa: E402
from l2p.sampling.families.qwenimage import qwen_rope  # noqa: E402
from l2p.sampling.pipeline import Sampler  # noqa: E402

from .conftest import rel_err, save_perturbed  # noqa: E402

CONFIG = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
              num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=(4, 6, 6))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.QwenImageTransformer2DModel(**CONFIG).eval()


@pytest.fixture(scope="module")
def bundle(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = save_perturbed(model, tmp_path_factory.mktemp("qwen_src"))
    out = tmp_path_factory.mktemp("qwen") / "bundle"
    export_bundle(str(src), out, latent_size=(8, 6), log=lambda s: None)
    return out


def test_rope_matches_diffusers() -> None:
    from diffusers.models.transformers.transformer_qwenimage import QwenEmbedRope

    rope = QwenEmbedRope(10000, [16, 56, 56], scale_rope=True)
    vid, txt = rope([(1, 5, 3)], device=torch.device("cpu"), max_txt_seq_len=11)  # complex (S, 64), (T, 64)
    ref = torch.cat([txt, vid]).numpy()
    cos, sin = qwen_rope(5, 3, 11, [16, 56, 56])
    assert np.abs(cos[:, ::2] - ref.real).max() < 1e-6 and np.abs(sin[:, 1::2] - ref.imag).max() < 1e-6


def test_transformer_matches_diffusers(bundle: Path, model: torch.nn.Module) -> None:
    sampler = Sampler(bundle, threads=2)
    adapter = QwenImageAdapter(model, (8, 6))
    feed = adapter.sample_feed({"batch": 3, "txt_seq": 7}, seed=3)
    got = sampler.engine("transformer").run(feed)["sample"]
    assert got.shape == (3, 12, 16)
    assert rel_err(got, adapter.reference(feed)["sample"]) <= 1e-5


def _cond(seed: int, tokens: int = 7, prefix: str = "") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((2, tokens), np.float32)
    mask[0, tokens - 2:] = 0  # the first prompt is shorter: padded tail
    return {f"{prefix}encoder_hidden_states": rng.standard_normal((2, tokens, 12)).astype(np.float32),
            f"{prefix}encoder_hidden_states_mask": mask}


def pipeline_latents(model: torch.nn.Module, sampler: Sampler, cond: dict[str, np.ndarray], initial: np.ndarray,
                     scale: float) -> np.ndarray:
    """QwenImagePipeline's final latents (10 steps, 64x48) from ``initial``; ``negative_*`` rows for true CFG."""
    sched = diffusers.FlowMatchEulerDiscreteScheduler.from_config(sampler.bundle.scheduler_config())
    pipe = diffusers.QwenImagePipeline(scheduler=sched, vae=None, text_encoder=None, tokenizer=None,
                                       transformer=model)
    pipe.set_progress_bar_config(disable=True)
    t = {k: torch.from_numpy(v) for k, v in cond.items()}
    neg = {} if scale <= 1 else {"negative_prompt_embeds": t["negative_encoder_hidden_states"],
                                 "negative_prompt_embeds_mask": t["negative_encoder_hidden_states_mask"].long()}
    with torch.no_grad():
        return pipe(prompt_embeds=t["encoder_hidden_states"], prompt_embeds_mask=t["encoder_hidden_states_mask"].long(),
                    **neg, latents=torch.from_numpy(initial), num_inference_steps=10, height=64, width=48,
                    true_cfg_scale=scale, output_type="latent").images.numpy()


def test_sampling_matches_pipeline(bundle: Path, model: torch.nn.Module) -> None:
    sampler = Sampler(bundle, threads=2, cfg_scale=1.0)
    cond = _cond(0)
    initial = sampler.rt.noise(seed=0, batch=2)
    got = sampler.sample(cond, seed=0, steps=10, initial=initial, decode=False).final
    assert rel_err(got, pipeline_latents(model, sampler, cond, initial, 1.0)) <= 1e-4


@pytest.mark.parametrize("neg_tokens", [7, 5])
def test_true_cfg_matches_pipeline(bundle: Path, model: torch.nn.Module, neg_tokens: int) -> None:
    """true_cfg_scale 4 (the default): a negative of the prompt's length runs in one 2B call; a shorter
    one (its own RoPE text length) in two calls, as the pipeline always does."""
    sampler = Sampler(bundle, threads=2)
    cond = {**_cond(0), **_cond(1, neg_tokens, "negative_")}
    initial = sampler.rt.noise(seed=0, batch=2)
    ref = pipeline_latents(model, sampler, cond, initial, 4.0)
    res = sampler.sample(cond, seed=0, steps=10, initial=initial, decode=False)
    assert res.loop.calls_per_step == (1 if neg_tokens == 7 else 2)
    # this tiny model's text path is weak: guidance moves the result to ~42 dB of the unguided one
    assert psnr_db(pipeline_latents(model, sampler, cond, initial, 1.0), ref) < 50
    assert psnr_db(res.final, ref) >= 60


def test_bad_latent_size(model: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="even"):
        QwenImageAdapter(model, (8, 5))
