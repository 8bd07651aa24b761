"""PixArtTransformer2DModel: export vs. the diffusers forward, Sampler vs. PixArtAlphaPipeline (guidance 1,
and classifier-free guidance at its default 4.5).

The tiny config keeps ``sample_size = 128`` (the 1024-px models' value) so the model and the
pipeline both use the resolution / aspect-ratio micro-conditions, as PixArt-XL-2-1024-MS does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from l2p.errors import InputError  # noqa: E402
from l2p.export.exporter import export_bundle  # noqa: E402
from l2p.export.pixart import PixArtAdapter  # noqa: E402
from l2p.metrics import psnr_db  # noqa: E402
from l2p.sampling.pipeline import Sampler  # noqa: E402

from .conftest import rel_err, save_perturbed  # noqa: E402

CONFIG = dict(sample_size=128, patch_size=2, in_channels=4, out_channels=8, num_layers=2, attention_head_dim=12,
              num_attention_heads=2, cross_attention_dim=24, caption_channels=12, norm_num_groups=1)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.PixArtTransformer2DModel(**CONFIG).eval()


@pytest.fixture(scope="module")
def bundle(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = save_perturbed(model, tmp_path_factory.mktemp("pixart_src"))
    out = tmp_path_factory.mktemp("pixart") / "bundle"
    export_bundle(str(src), out, latent_size=(8, 8), log=lambda s: None)
    return out


def test_transformer_matches_diffusers(bundle: Path, model: torch.nn.Module) -> None:
    sampler = Sampler(bundle, threads=2)
    assert "resolution" in sampler.bundle.spec("transformer").input_names
    adapter = PixArtAdapter(model, (8, 8))
    feed = adapter.sample_feed({"batch": 3, "txt_seq": 6}, seed=3)
    got = sampler.engine("transformer").run(feed)["sample"]
    assert got.shape == (3, 8, 8, 8)
    assert rel_err(got, adapter.reference(feed)["sample"]) <= 1e-5


def _cond(seed: int, prefix: str = "") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((2, 7), np.float32)
    mask[0, 5:] = 0  # the first prompt is shorter: padded tail
    return {f"{prefix}encoder_hidden_states": rng.standard_normal((2, 7, 12)).astype(np.float32),
            f"{prefix}encoder_attention_mask": mask}


def pipeline_latents(model: torch.nn.Module, sampler: Sampler, cond: dict[str, np.ndarray], initial: np.ndarray,
                     scale: float) -> np.ndarray:
    """PixArtAlphaPipeline's final latents (10 steps, 64x64) from ``initial``; ``negative_*`` rows under CFG."""
    sched = diffusers.DPMSolverMultistepScheduler.from_config(sampler.bundle.scheduler_config())
    pipe = diffusers.PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=model,
                                         scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    t = {k: torch.from_numpy(v) for k, v in cond.items()}
    neg = {} if scale <= 1 else {"negative_prompt": None, "negative_prompt_embeds": t["negative_encoder_hidden_states"],
                                 "negative_prompt_attention_mask": t["negative_encoder_attention_mask"]}
    with torch.no_grad():
        return pipe(prompt_embeds=t["encoder_hidden_states"], prompt_attention_mask=t["encoder_attention_mask"],
                    **neg, latents=torch.from_numpy(initial), num_inference_steps=10, guidance_scale=scale,
                    height=64, width=64, use_resolution_binning=False, output_type="latent").images.numpy()


def test_sampling_matches_pipeline(bundle: Path, model: torch.nn.Module) -> None:
    sampler = Sampler(bundle, threads=2, cfg_scale=1.0)
    cond = _cond(0)
    initial = sampler.rt.noise(seed=0, batch=2)
    got = sampler.sample(cond, seed=0, steps=10, initial=initial, decode=False).final
    assert rel_err(got, pipeline_latents(model, sampler, cond, initial, 1.0)) <= 1e-4


def test_cfg_matches_pipeline(bundle: Path, model: torch.nn.Module) -> None:
    """PixArt's default guidance (4.5, no --cfg-scale given) from the same noise, in one 2B call and in two."""
    sampler = Sampler(bundle, threads=2)
    cond = {**_cond(0), **_cond(1, "negative_")}
    initial = sampler.rt.noise(seed=0, batch=2)
    ref = pipeline_latents(model, sampler, cond, initial, 4.5)
    fused = sampler.sample(cond, seed=0, steps=10, initial=initial, decode=False)
    sampler.fuse_branches = False
    split = sampler.sample(cond, seed=0, steps=10, initial=initial, decode=False)
    assert (fused.loop.calls_per_step, split.loop.calls_per_step) == (1, 2)
    assert psnr_db(pipeline_latents(model, sampler, cond, initial, 1.0), ref) < 40
    assert psnr_db(fused.final, ref) >= 60 and psnr_db(split.final, ref) >= 60


def test_bad_latent_size(model: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="divisible by 2"):
        PixArtAdapter(model, (9, 8))
