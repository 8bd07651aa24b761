"""An SD3 pipeline folder (three text encoders, VAE) exports: its text-encoder graphs give what
``StableDiffusion3Pipeline.encode_prompt`` computes, and its VAE decoder what the pipeline decodes.

The folder has the tiny-sd3 layout (``tools/train_tiny_sd3.py``) with untrained weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from l2p.bundle import open_bundle  # noqa: E402
from l2p.engine.registry import open_engine  # noqa: E402
from l2p.export.exporter import export_bundle  # noqa: E402
from l2p.sampling.text import load_tokenizers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CAPTIONS = ["a red circle at the top left", "a blue square at the center", ""]


@pytest.fixture(scope="module")
def pipe():
    sys.path.insert(0, str(REPO / "tools"))
    import tiny_vae as tv
    import train_tiny_sd3 as ts

    cfg = ts.Config(num_layers=1, num_attention_heads=2)
    vae = tv.build_vae(cfg)
    vae.register_to_config(scaling_factor=1.7, shift_factor=0.2)  # as the trainer sets them from latent statistics
    return diffusers.StableDiffusion3Pipeline(transformer=ts.build_transformer(cfg), vae=vae, **ts.text_parts(cfg))


@pytest.fixture(scope="module")
def src(pipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd3_pipe") / "model"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def bundle(pipe, src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sd3_bundle") / "bundle"
    export_bundle(str(src), out, image_size=(64, 64), max_sequence_length=pipe.tokenizer_3.model_max_length,
                  log=lambda s: None)
    return out


def run(bundle: Path, name: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    b = open_bundle(bundle)
    return open_engine("onnxruntime", b.onnx_path(name), b.spec(name), name=name).run(feed)


def test_text_encoder_graphs_give_the_pipeline_prompt_embeddings(pipe, bundle: Path) -> None:
    manifest = open_bundle(bundle).manifest
    assert manifest["family"] == "sd3"
    assert {"text_encoder", "text_encoder_2", "text_encoder_3", "vae_decoder", "transformer"} <= set(manifest["graphs"])
    toks = load_tokenizers(bundle, manifest["tokenizers"])
    outs = {enc: run(bundle, enc, {"input_ids": toks[enc](CAPTIONS)})
            for enc in ("text_encoder", "text_encoder_2", "text_encoder_3")}
    # StableDiffusion3Pipeline.encode_prompt, assembled from the graphs' outputs
    clip = np.concatenate([outs["text_encoder"]["penultimate_hidden_state"],
                           outs["text_encoder_2"]["penultimate_hidden_state"]], axis=-1)  # (B, Lc, 2 Dc)
    t5 = outs["text_encoder_3"]["last_hidden_state"]  # (B, Lt, D)
    clip = np.pad(clip, ((0, 0), (0, 0), (0, t5.shape[-1] - clip.shape[-1])))  # (B, Lc, D)
    embeds = np.concatenate([clip, t5], axis=1)  # (B, Lc + Lt, D)
    pooled = np.concatenate([outs["text_encoder"]["text_embeds"], outs["text_encoder_2"]["text_embeds"]], axis=-1)
    with torch.no_grad():
        ref, _, ref_pooled, _ = pipe.encode_prompt(prompt=CAPTIONS, prompt_2=None, prompt_3=None,
                                                   device=torch.device("cpu"), do_classifier_free_guidance=False,
                                                   max_sequence_length=pipe.tokenizer_3.model_max_length)
    np.testing.assert_allclose(embeds, ref.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pooled, ref_pooled.numpy(), rtol=1e-4, atol=1e-5)


def test_vae_decoder_graph_decodes_as_the_pipeline(pipe, bundle: Path) -> None:
    latent = np.random.default_rng(0).standard_normal((2, 16, 8, 8)).astype(np.float32)
    image = run(bundle, "vae_decoder", {"latent": latent})["image"]
    vae = pipe.vae
    with torch.no_grad():  # StableDiffusion3Pipeline: latents / scaling_factor + shift_factor, then decode
        z = torch.from_numpy(latent) / vae.config.scaling_factor + vae.config.shift_factor
        ref = vae.decode(z, return_dict=False)[0].numpy()
    np.testing.assert_allclose(image, ref, rtol=1e-4, atol=1e-4)


def test_validate_checks_every_encoder_output(bundle: Path, src: Path) -> None:
    """``l2p validate`` on the SD3 pipeline bundle: each graph output of the three text encoders, the
    tokenizer ids and the VAE decoder against the PyTorch models of the folder."""
    from l2p.validation.pytorch import validate

    report = validate(str(bundle), str(src), steps=2)
    names = {c["name"] for c in report["checks"]}
    assert {"text_encoder.penultimate_hidden_state", "text_encoder.text_embeds",
            "text_encoder_2.penultimate_hidden_state", "text_encoder_2.text_embeds", "text_encoder_3",
            "tokenizer ids", "tokenizer_2 ids", "tokenizer_3 ids", "vae_decoder"} <= names, names
    assert report["ok"], report["checks"]


@pytest.mark.parametrize("scale", [1.0, 7.0])
def test_prompts_sample_as_the_pipeline(pipe, bundle: Path, scale: float) -> None:
    """``l2p sample --prompt`` on an SD3 pipeline bundle: prompts (and the default negative prompt
    "") encoded by the exported text encoders, then sampled, give the final latents of
    ``StableDiffusion3Pipeline(prompt=...)`` from the same noise, unguided and at its default g = 7."""
    from l2p.metrics import psnr_db
    from l2p.sampling.pipeline import Sampler

    prompts = CAPTIONS[:2]
    sampler = Sampler(bundle, threads=2, cfg_scale=scale)
    cond = sampler.encode(prompts, "" if scale > 1 else None)
    initial = sampler.rt.noise(seed=0, batch=len(prompts))
    got = sampler.sample(cond, seed=0, steps=4, initial=initial, decode=False).final
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref = pipe(prompt=prompts, latents=torch.from_numpy(initial), num_inference_steps=4, guidance_scale=scale,
                   height=64, width=64, max_sequence_length=pipe.tokenizer_3.model_max_length,
                   output_type="latent").images.numpy()
    assert psnr_db(got, ref) >= 60


def test_images_per_prompt_sample_as_the_pipeline(pipe, bundle: Path) -> None:
    """Two prompts x num_images_per_prompt 2 under guidance (g = 7, negative prompt ""): the
    conditioning is expanded in diffusers' order (each prompt's images consecutively), so l2p's
    final latents are ``StableDiffusion3Pipeline(prompt=..., num_images_per_prompt=2)``'s from the
    same noise."""
    from l2p.metrics import psnr_db
    from l2p.sampling.pipeline import Sampler

    prompts = CAPTIONS[:2]
    sampler = Sampler(bundle, threads=2)
    cond = {k: np.repeat(v, 2, axis=0) for k, v in sampler.encode(prompts, "").items()}  # what l2p sample does
    got = sampler.sample(cond, seed=3, steps=4, decode=False)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref = pipe(prompt=prompts, num_images_per_prompt=2, latents=torch.from_numpy(got.initial),
                   num_inference_steps=4, guidance_scale=7.0, height=64, width=64,
                   max_sequence_length=pipe.tokenizer_3.model_max_length, output_type="latent").images.numpy()
        swapped = pipe(prompt=prompts[::-1], num_images_per_prompt=2, latents=torch.from_numpy(got.initial),
                       num_inference_steps=4, guidance_scale=7.0, height=64, width=64,
                       max_sequence_length=pipe.tokenizer_3.model_max_length, output_type="latent").images.numpy()
    assert psnr_db(got.final, ref) >= 60
    assert psnr_db(got.final, swapped) < 40  # the order matters: the check above can fail


def test_prompts_x_images_equal_images_sampled_alone(bundle: Path, tmp_path: Path) -> None:
    """``l2p sample --prompt A B C --num-images-per-prompt 2 --seed 5`` (guided, g = 7): image k =
    2 r + j is prompt r sampled alone with --seed 5 + k (PNG, noise and final latents), and
    ``--index r`` gives images 2r, 2r + 1 with their seeds."""
    import json

    from PIL import Image

    from l2p.atomic import load_npz
    from l2p.cli import main
    from l2p.metrics import psnr_db

    def sample(out: Path, prompts: list[str], *extra: str) -> tuple[dict, dict, list[np.ndarray]]:
        assert main(["sample", str(bundle), "--prompt", *prompts, "--steps", "3", "--threads", "2",
                     "--out", str(out), *extra]) == 0
        rec = json.loads((out / "run.json").read_text())
        return load_npz(out / "latents.npz"), rec, [np.asarray(Image.open(out / n)) for n in rec["images"]]

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.array_equal(a, b) or psnr_db(a, b) >= 100)

    prompts = CAPTIONS  # the third is the empty prompt
    lat, rec, pngs = sample(tmp_path / "all", prompts, "--seed", "5", "--num-images-per-prompt", "2")
    assert rec["seeds"] == [5, 6, 7, 8, 9, 10] and len(pngs) == 6 and rec["cfg_scale"] == 7.0
    assert rec["prompts"] == [p for p in prompts for _ in range(2)]
    for k in range(6):
        one, one_rec, one_png = sample(tmp_path / f"one{k}", [prompts[k // 2]], "--seed", str(5 + k))
        assert np.array_equal(one["initial"][0], lat["initial"][k]) and one_rec["seeds"] == [5 + k]
        assert same(one["final"][0], lat["final"][k]) and np.array_equal(one_png[0], pngs[k]), k
    part, part_rec, part_png = sample(tmp_path / "index", prompts, "--seed", "5", "--num-images-per-prompt", "2",
                                      "--index", "2")
    assert part_rec["seeds"] == [9, 10] and part_rec["prompts"] == ["", ""]
    assert np.array_equal(part["initial"], lat["initial"][4:])
    assert same(part["final"], lat["final"][4:]) and all(np.array_equal(a, b) for a, b in zip(part_png, pngs[4:]))


def test_encoders_and_decoder_run_in_the_batches_their_engines_take(bundle: Path) -> None:
    """Text encoders that take 2 rows at most and a VAE decoder that takes 1 (TensorRT profiles'
    max): 5 prompts encode, and 5 images decode, in chunks, to what the unlimited engines give."""
    from l2p.sampling.pipeline import Sampler

    from ..sampling.limited_engine import limit

    prompts = ["a red circle at the top left", "a blue square at the center", "", "a green triangle", "a red square"]
    whole = Sampler(bundle, threads=2)
    s = Sampler(bundle, threads=2)
    encoders = [limit(s, g, 2) for g in ("text_encoder", "text_encoder_2", "text_encoder_3")]
    decoder = limit(s, "vae_decoder", 1)
    want, got = whole.encode(prompts, ""), s.encode(prompts, "")
    assert all(e.batches == [2, 2, 1] * 2 for e in encoders)  # the prompts, then the negative prompt
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) or
                                             np.allclose(want[k], got[k], rtol=0, atol=1e-6) for k in want)
    latents = whole.rt.noise(0, 5)
    assert np.array_equal(s.decode(latents), whole.decode(latents)) and decoder.batches == [1] * 5
