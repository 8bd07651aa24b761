"""DiTTransformer2DModel: export vs. the diffusers forward, Sampler vs. DiTPipeline (guidance 1, and
classifier-free guidance at its default 4 with the null class)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from l2p.errors import InputError  # noqa: E402
from l2p.export.dit import DiTAdapter  # noqa: E402
from l2p.export.exporter import export_bundle  # noqa: E402
from l2p.metrics import psnr_db  # noqa: E402
from l2p.sampling.pipeline import Sampler  # noqa: E402

from .conftest import rel_err, save_perturbed  # noqa: E402

# out_channels = 2 x in_channels: learned sigma, as facebook/DiT-XL-2-256; 1000 classes as ImageNet
# (DiTPipeline's null class is the id 1000)
CONFIG = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=2, attention_head_dim=8,
              num_attention_heads=2, num_embeds_ada_norm=1000, norm_num_groups=1)


class _RecordingVAE(torch.nn.Module):
    """Stands in for the VAE: DiTPipeline decodes at the end; we keep the latent it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=1.0)
        self.latents: list[torch.Tensor] = []

    device = torch.device("cpu")  # DiffusionPipeline.device reads it
    dtype = torch.float32

    def decode(self, latents: torch.Tensor) -> SimpleNamespace:
        self.latents.append(latents.clone())
        return SimpleNamespace(sample=torch.zeros_like(latents[:, :3]))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.DiTTransformer2DModel(**CONFIG).eval()


@pytest.fixture(scope="module")
def bundle(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = save_perturbed(model, tmp_path_factory.mktemp("dit_src"))
    out = tmp_path_factory.mktemp("dit") / "bundle"
    export_bundle(str(src), out, latent_size=(8, 8), log=lambda s: None)
    return out


def test_transformer_matches_diffusers(bundle: Path, model: torch.nn.Module) -> None:
    sampler = Sampler(bundle, threads=2)
    adapter = DiTAdapter(model, (8, 8))
    feed = adapter.sample_feed({"batch": 3}, seed=3)
    got = sampler.engine("transformer").run(feed)["sample"]
    assert got.shape == (3, 8, 8, 8)
    assert rel_err(got, adapter.reference(feed)["sample"]) <= 1e-5


def pipeline_latents(model: torch.nn.Module, sampler: Sampler, labels: list[int], initial: np.ndarray, scale: float,
                     monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """DiTPipeline's final latents (10 steps) from ``initial`` (it draws its own noise: we hand it ours)."""
    from diffusers.pipelines.dit import pipeline_dit

    monkeypatch.setattr(pipeline_dit, "randn_tensor", lambda shape, **kw: torch.from_numpy(initial.copy()))
    sched = diffusers.DDIMScheduler.from_config(sampler.bundle.scheduler_config())
    vae = _RecordingVAE()
    pipe = diffusers.DiTPipeline(transformer=model, vae=vae, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    pipe(class_labels=labels, guidance_scale=scale, num_inference_steps=10, output_type="pt")
    return vae.latents[-1].numpy()


def test_sampling_matches_pipeline(bundle: Path, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = Sampler(bundle, threads=2, cfg_scale=1.0)
    assert sampler.bundle.manifest["latent"]["prediction"] == "epsilon+learned_sigma"
    labels = [3, 7]
    initial = sampler.rt.noise(seed=0, batch=2)
    got = sampler.sample({"class_labels": np.array(labels, np.float32)}, seed=0, steps=10, initial=initial,
                         decode=False).final
    assert rel_err(got, pipeline_latents(model, sampler, labels, initial, 1.0, monkeypatch)) <= 1e-4


def test_cfg_matches_pipeline(bundle: Path, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """DiT's default guidance (4.0): the negative branch is the null class 1000, no array needed."""
    sampler = Sampler(bundle, threads=2)
    labels = [3, 7]
    initial = sampler.rt.noise(seed=0, batch=2)
    ref = pipeline_latents(model, sampler, labels, initial, 4.0, monkeypatch)
    res = sampler.sample({"class_labels": np.array(labels, np.float32)}, seed=0, steps=10, initial=initial,
                         decode=False)
    assert res.loop.calls_per_step == 1 and res.loop.evaluations_per_step == 2
    assert psnr_db(pipeline_latents(model, sampler, labels, initial, 1.0, monkeypatch), ref) < 40
    assert psnr_db(res.final, ref) >= 60


def test_bad_latent_size(model: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="divisible by its patch size"):
        DiTAdapter(model, (7, 7))
    with pytest.raises(InputError, match="square"):
        DiTAdapter(model, (8, 6))


def test_class_labels_checked(bundle: Path) -> None:
    with pytest.raises(InputError, match="class ids"):
        Sampler(bundle, threads=2).rt.static_inputs({"class_labels": np.array([2.5], np.float32)})
