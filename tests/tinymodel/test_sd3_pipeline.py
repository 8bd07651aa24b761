"""The tiny SD3 model: a ``--quick`` training run of ``tools/train_tiny_sd3.py`` loads offline with
``StableDiffusion3Pipeline`` and draws, and (when built) the shipped ``l2p/assets/tiny-sd3`` folder
(needs torch + diffusers + transformers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from l2p.tinymodel import data  # noqa: E402
from l2p.tinymodel.checker import check  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "l2p" / "assets" / "tiny-sd3"
shipped = pytest.mark.skipif(not (MODEL / "model_index.json").exists(), reason="tiny-sd3 folder not built")
SUBFOLDERS = ("scheduler", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
              "tokenizer_3", "transformer", "vae")


def load(path: Path):
    torch.set_num_threads(2)
    p = diffusers.StableDiffusion3Pipeline.from_pretrained(str(path), local_files_only=True)
    p.set_progress_bar_config(disable=True)
    return p


def check_folder(path: Path, pipe, meta: dict) -> None:
    """Layout, size and the conventions the model was trained with."""
    for sub in SUBFOLDERS:
        assert (path / sub).is_dir(), sub
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) <= 25 * 1024 * 1024
    assert meta["height"] == meta["width"] == 64
    assert meta["heldout_captions"] == data.heldout_captions()
    assert pipe.default_sample_size * pipe.vae_scale_factor == meta["height"]  # the pipeline's default size
    assert pipe.tokenizer_max_length == meta["clip_max_length"]
    assert pipe.tokenizer_3.model_max_length == meta["max_sequence_length"]
    assert pipe.scheduler.config.use_dynamic_shifting is False
    assert pipe.scheduler.config.shift == meta["scheduler_shift"]
    cfg = pipe.transformer.config
    clip_width = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert clip_width <= cfg.joint_attention_dim == pipe.text_encoder_3.config.d_model
    assert cfg.pooled_projection_dim == (pipe.text_encoder.config.projection_dim
                                         + pipe.text_encoder_2.config.projection_dim)
    from tokenizers import Tokenizer  # what the torch-free runtime loads

    raw = {sub: Tokenizer.from_file(str(path / sub / "tokenizer.json")) for sub in ("tokenizer", "tokenizer_2",
                                                                                    "tokenizer_3")}
    for cap in data.all_captions()[::7]:  # ids as transformers' tokenizers give them; every caption fits
        for sub, limit in (("tokenizer", "clip_max_length"), ("tokenizer_2", "clip_max_length"),
                           ("tokenizer_3", "max_sequence_length")):
            ids = raw[sub].encode(cap).ids
            assert ids == getattr(pipe, sub)(cap).input_ids and len(ids) <= meta[limit]
            words = ids if sub == "tokenizer_3" else ids[1:-1]  # CLIP's unknown token is its end-of-text token
            assert getattr(pipe, sub).unk_token_id not in words


def draw(pipe, meta: dict, captions: list[str], seeds: list[int], steps: int, scale: float) -> np.ndarray:
    """uint8 ``(len(captions), 64, 64, 3)``: caption i with its own generator seeded ``seeds[i]``."""
    out = pipe(prompt=captions, height=meta["height"], width=meta["width"], num_inference_steps=steps,
               guidance_scale=scale, max_sequence_length=meta["max_sequence_length"],
               generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")
    imgs = out.images
    assert imgs.shape == (len(captions), meta["height"], meta["width"], 3)
    assert np.isfinite(imgs).all() and imgs.min() >= 0.0 and imgs.max() <= 1.0
    return np.clip(np.round(imgs * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# a --quick training run (slow: about 1-2 minutes on 2 cores)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_sd3") / "tiny-sd3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(REPO / "tools" / "train_tiny_sd3.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=1800)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return out


@pytest.mark.slow
def test_quick_run_loads_offline_and_draws(quick_folder: Path) -> None:
    assert not list(quick_folder.parent.glob(".tiny-sd3.*"))  # the temporary folder was renamed away
    pipe = load(quick_folder)
    meta = json.loads((quick_folder / "l2p_tiny.json").read_text())
    check_folder(quick_folder, pipe, meta)
    cfg = meta["config"]
    assert cfg["steps"] == 30 and 0 < cfg["caption_dropout"] < 1
    draw(pipe, meta, data.heldout_captions()[:2], [0, 1], steps=3, scale=meta["guidance_scale"])


@pytest.mark.slow
def test_training_conditions_on_what_the_pipeline_encodes(quick_folder: Path) -> None:
    """The empty-prompt row the trainer drops captions to is the pipeline's negative-prompt embedding,
    and the caption rows are its prompt embeddings (both from ``encode_prompt`` with CFG on)."""
    sys.path.insert(0, str(REPO / "tools"))
    from train_tiny_sd3 import encode_captions

    pipe = load(quick_folder)
    caps = data.train_captions()[:3]
    embeds, pooled = encode_captions(pipe, caps)
    with torch.no_grad():
        pos, neg, pos_pooled, neg_pooled = pipe.encode_prompt(
            prompt=caps, prompt_2=None, prompt_3=None, device=torch.device("cpu"), do_classifier_free_guidance=True,
            max_sequence_length=pipe.tokenizer_3.model_max_length)
    torch.testing.assert_close(embeds[:3], pos)
    torch.testing.assert_close(pooled[:3], pos_pooled)
    torch.testing.assert_close(embeds[3:].expand_as(neg), neg)
    torch.testing.assert_close(pooled[3:].expand_as(neg_pooled), neg_pooled)
    assert not torch.allclose(embeds[3], embeds[0])  # the empty prompt is a distinct condition


@pytest.mark.slow
def test_export_builtin_name(quick_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``l2p export tiny-sd3`` (the built-in name pointed at the quick folder) writes an SD3 bundle at the
    folder's 64x64 with its three text encoders and the VAE decoder, its source recorded as the name."""
    from l2p import models
    from l2p.bundle import open_bundle
    from l2p.cli import main

    monkeypatch.setitem(models.BUILTIN, "tiny-sd3", quick_folder)
    assert main(["export", "tiny-sd3", "--out", str(tmp_path / "bundle")]) == 0
    b = open_bundle(tmp_path / "bundle")
    assert b.family == "sd3" and models.builtin_model_of(b.manifest) == "tiny-sd3"
    assert (b.manifest["latent"]["height"], b.manifest["latent"]["width"]) == (8, 8)
    assert {"transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae_decoder"} <= set(b.graphs)
    assert b.spec("text_encoder_3").inputs[0].shape[1] == 16


# --------------------------------------------------------------------------------------------
# the shipped folder (skipped until it is trained)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((MODEL / "l2p_tiny.json").read_text())


@pytest.fixture(scope="module")
def pipe():
    return load(MODEL)


@shipped
def test_shipped_folder(pipe, meta) -> None:
    check_folder(MODEL, pipe, meta)


@shipped
def test_shipped_draws_few_steps(pipe, meta) -> None:
    draw(pipe, meta, data.heldout_captions()[:2], [0, 1], steps=4, scale=meta["guidance_scale"])


def heldout_accepted(pipe, meta: dict, scales: tuple[float, ...]) -> dict[float, int]:
    """Held-out captions x seeds 0..3 accepted by the caption checker, per guidance scale."""
    caps = [c for c in data.heldout_captions() for _ in range(4)]
    seeds = [s for _ in data.heldout_captions() for s in range(4)]
    accepted = {}
    for scale in scales:
        imgs = draw(pipe, meta, caps, seeds, meta["num_inference_steps"], scale)
        accepted[scale] = sum(check(img, cap).ok for img, cap in zip(imgs, caps))
    return accepted


@shipped
@pytest.mark.slow
def test_shipped_heldout_accuracy_with_and_without_cfg(pipe, meta) -> None:
    """Issue 15: >= 90% of held-out captions x 4 seeds at the default scale, and more than at scale 1
    (l2p/tinymodel/README.md: 55/60 at 7, 3/60 without guidance)."""
    accepted = heldout_accepted(pipe, meta, (meta["guidance_scale"], 1.0))
    assert accepted[meta["guidance_scale"]] >= 0.9 * 60, accepted
    assert accepted[meta["guidance_scale"]] > accepted[1.0], accepted


# --------------------------------------------------------------------------------------------
# the training objective against diffusers' sampler
# --------------------------------------------------------------------------------------------


def test_training_pair_matches_the_pipeline_scheduler() -> None:
    """With the exact velocity target as model output, the pipeline's scheduler (SD3's shift 3.0) steps
    from x_t at the timestep the trainer feeds (1000 sigma) to the trainer's x at the next sigma."""
    sys.path.insert(0, str(REPO / "tools"))
    import tiny_common as tc
    from train_tiny_sd3 import SCHEDULER_SHIFT, flow_matching_pair

    sched = tc.build_scheduler(SCHEDULER_SHIFT)
    sched.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 8, 8, generator=gen), torch.randn(2, 16, 8, 8, generator=gen)
    for i in (0, 4, 9):
        t, sigma, sigma_next = sched.timesteps[i], sched.sigmas[i], sched.sigmas[i + 1]
        xt, target, timestep = flow_matching_pair(x0, noise, sigma.expand(2))
        torch.testing.assert_close(timestep, t.expand(2).float())
        sched._step_index = i
        stepped = sched.step(target, t, xt, return_dict=False)[0]
        torch.testing.assert_close(stepped, flow_matching_pair(x0, noise, sigma_next.expand(2))[0])


def test_guided_target_makes_guidance_at_its_scale_draw_the_flow() -> None:
    """``--guidance-target G``: a model whose captioned branch predicts the new targets and whose empty
    branch predicts what it does now gives, under the pipeline's ``u + G (c - u)``, the flow target
    itself; rows trained on the empty prompt keep their target; the empty branch is the transformer's
    own prediction under the empty prompt's embedding."""
    sys.path.insert(0, str(REPO / "tools"))
    from train_tiny_sd3 import guided_target

    torch.manual_seed(0)
    model = diffusers.SD3Transformer2DModel(sample_size=4, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                            caption_projection_dim=16, pooled_projection_dim=8,
                                            pos_embed_max_size=2).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random init zeroes the adaLN-zero paths: perturb so outputs depend on the input
        for prm in model.parameters():
            prm.add_(0.1 * torch.randn(prm.shape, generator=gen))
    xt, v = torch.randn(4, 4, 4, 4, generator=gen), torch.randn(4, 4, 4, 4, generator=gen)
    timestep = torch.tensor([100.0, 400.0, 700.0, 900.0])
    empty_embeds, empty_pooled = torch.randn(5, 16, generator=gen), torch.randn(8, generator=gen)
    keep = torch.tensor([True, False, True, True])
    new = guided_target(model, xt, timestep, v, keep, empty_embeds, empty_pooled, 7.0)
    with torch.no_grad():
        u = model(hidden_states=xt, encoder_hidden_states=empty_embeds.expand(4, -1, -1),
                  pooled_projections=empty_pooled.expand(4, -1), timestep=timestep, return_dict=False)[0]
    guided = u + 7.0 * (new - u)  # StableDiffusion3Pipeline's combination
    torch.testing.assert_close(guided[keep], v[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new[~keep], v[~keep])
    assert not torch.allclose(new[keep], v[keep])
    assert guided_target(model, xt, timestep, v, torch.zeros(4, dtype=torch.bool), empty_embeds, empty_pooled,
                         7.0) is v


@shipped
def test_demo_and_sample_on_the_shipped_model(pipe, meta, tmp_path: Path) -> None:
    """``l2p demo --model tiny-sd3 --no-compare`` exports and draws it guided (the family's default
    7 with the negative prompt ""), and ``l2p sample --prompt`` on that bundle gives the final latents
    of ``StableDiffusion3Pipeline.from_pretrained`` (the shipped folder) from the same noise."""
    from l2p.atomic import load_npz
    from l2p.cli import main
    from l2p.metrics import psnr_db

    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-sd3", "--no-compare", "--steps", "3", "--out", str(out)]) == 0
    assert (out / "grid.png").is_file()
    prompts = data.heldout_captions()[:2]
    assert main(["sample", str(out / "bundle"), "--prompt", *prompts, "--steps", "4", "--out", str(tmp_path / "s")]) == 0
    run = json.loads((tmp_path / "s" / "run.json").read_text())
    assert run["cfg_scale"] == meta["guidance_scale"] and run["negative_prompt"] == ""
    lat = load_npz(tmp_path / "s" / "latents.npz")
    with torch.no_grad():
        ref = pipe(prompt=prompts, latents=torch.from_numpy(lat["initial"]), num_inference_steps=4,
                   guidance_scale=meta["guidance_scale"], max_sequence_length=meta["max_sequence_length"],
                   output_type="latent").images.numpy()
    assert psnr_db(lat["final"], ref) >= 60
