"""Tests of the shipped tiny FLUX pipeline folder (needs torch + diffusers + transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from l2p.tinymodel import data  # noqa: E402
from l2p.tinymodel.checker import check  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "l2p" / "assets" / "tiny-flux"
pytestmark = pytest.mark.skipif(not (MODEL / "model_index.json").exists(), reason="tiny-flux folder not built")


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((MODEL / "l2p_tiny.json").read_text())


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(2)
    p = diffusers.FluxPipeline.from_pretrained(str(MODEL), local_files_only=True)
    p.set_progress_bar_config(disable=True)
    return p


def test_folder_layout_and_size() -> None:
    for sub in ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae"):
        assert (MODEL / sub).is_dir(), sub
    assert (MODEL / "tokenizer" / "tokenizer.json").is_file()
    assert (MODEL / "tokenizer_2" / "tokenizer.json").is_file()
    assert not list(MODEL.rglob("*.bin")) and not list(MODEL.rglob("*.pkl"))
    total = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())
    assert total <= 30 * 1024 * 1024  # 29.3 MiB shipped (3 double + 4 single blocks)


def test_raw_tokenizers_match_pipeline_tokenizers(pipe, meta) -> None:
    """The torch-free runtime loads tokenizer.json with `tokenizers`; ids must match transformers'."""
    from tokenizers import Tokenizer

    clip = Tokenizer.from_file(str(MODEL / "tokenizer" / "tokenizer.json"))
    t5 = Tokenizer.from_file(str(MODEL / "tokenizer_2" / "tokenizer.json"))
    for cap in data.all_captions()[::7]:
        assert clip.encode(cap).ids == pipe.tokenizer(cap).input_ids
        assert t5.encode(cap).ids == pipe.tokenizer_2(cap).input_ids
        assert len(t5.encode(cap).ids) <= meta["max_sequence_length"]
        # CLIP's unknown token is also its end-of-text token: only the words must be known
        assert pipe.tokenizer.unk_token_id not in clip.encode(cap).ids[1:-1]
        assert pipe.tokenizer_2.unk_token_id not in t5.encode(cap).ids


def test_pipeline_config(pipe, meta) -> None:
    assert meta["height"] == meta["width"] == 64
    assert meta["height"] % (2 * pipe.vae_scale_factor) == 0
    assert pipe.tokenizer_2.model_max_length == meta["max_sequence_length"]
    assert pipe.scheduler.config.use_dynamic_shifting is False
    assert pipe.transformer.config.guidance_embeds is False
    assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.latent_channels
    assert pipe.transformer.config.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert pipe.transformer.config.pooled_projection_dim == pipe.text_encoder.config.hidden_size


def test_sample_two_captions_few_steps(pipe, meta) -> None:
    caps = data.heldout_captions()[:2]
    out = pipe(
        prompt=caps,
        height=meta["height"],
        width=meta["width"],
        num_inference_steps=4,
        max_sequence_length=meta["max_sequence_length"],
        generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)],
        output_type="np",
    )
    imgs = out.images
    assert imgs.shape == (2, 64, 64, 3)
    assert np.isfinite(imgs).all() and imgs.min() >= 0.0 and imgs.max() <= 1.0


@pytest.mark.slow
def test_heldout_accuracy_at_shipped_steps(pipe, meta) -> None:
    caps = data.heldout_captions()
    prompts = [c for c in caps for _ in range(4)]
    out = pipe(
        prompt=prompts,
        height=meta["height"],
        width=meta["width"],
        num_inference_steps=meta["num_inference_steps"],
        max_sequence_length=meta["max_sequence_length"],
        generator=[torch.Generator().manual_seed(s) for _ in caps for s in range(4)],
        output_type="np",
    )
    imgs = np.clip(np.round(out.images * 255), 0, 255).astype(np.uint8)
    acc = np.mean([check(img, cap).ok for img, cap in zip(imgs, prompts)])
    assert acc >= 0.8, acc
