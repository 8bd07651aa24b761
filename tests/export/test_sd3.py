"""SD3Transformer2DModel: export vs. the diffusers forward, Sampler vs. StableDiffusion3Pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from l2p.errors import InputError  # noqa: E402
from l2p.export.exporter import export_bundle  # noqa: E402
from l2p.export.sd3 import SD3Adapter  # noqa: E402
from l2p.sampling.pipeline import Sampler  # noqa: E402

from .conftest import rel_err, save_perturbed  # noqa: E402

CONFIG = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
              num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=12,
              pos_embed_max_size=16)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.SD3Transformer2DModel(**CONFIG).eval()


@pytest.fixture(scope="module")
def bundle(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = save_perturbed(model, tmp_path_factory.mktemp("sd3_src"))
    out = tmp_path_factory.mktemp("sd3") / "bundle"
    export_bundle(str(src), out, latent_size=(8, 8), log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def cond() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"encoder_hidden_states": rng.standard_normal((2, 6, 16)).astype(np.float32),
            "pooled_projections": rng.standard_normal((2, 12)).astype(np.float32)}


def test_transformer_matches_diffusers(bundle: Path, model: torch.nn.Module) -> None:
    sampler = Sampler(bundle, threads=2)
    adapter = SD3Adapter(model, (8, 8))
    feed = adapter.sample_feed({"batch": 3, "txt_seq": 5}, seed=3)
    got = sampler.engine("transformer").run(feed)["sample"]
    assert got.shape == (3, 4, 8, 8)
    assert rel_err(got, adapter.reference(feed)["sample"]) <= 1e-5


def test_sampling_matches_pipeline(bundle: Path, model: torch.nn.Module, cond: dict[str, np.ndarray]) -> None:
    sampler = Sampler(bundle, threads=2)
    initial = sampler.rt.noise(seed=0, batch=2)
    got = sampler.sample(cond, seed=0, steps=10, initial=initial, decode=False).final
    sched = diffusers.FlowMatchEulerDiscreteScheduler.from_config(sampler.bundle.scheduler_config())
    pipe = diffusers.StableDiffusion3Pipeline(
        scheduler=sched, transformer=model, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref = pipe(prompt_embeds=torch.from_numpy(cond["encoder_hidden_states"]),
                   pooled_prompt_embeds=torch.from_numpy(cond["pooled_projections"]),
                   latents=torch.from_numpy(initial), num_inference_steps=10, guidance_scale=1.0,
                   height=64, width=64, output_type="latent").images.numpy()
    assert rel_err(got, ref) <= 1e-4


def test_bad_latent_size(model: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="divisible by 2"):
        SD3Adapter(model, (8, 7))
