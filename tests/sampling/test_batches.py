"""Batches: image k of a run is the image sampled alone from seed + k (``l2p sample`` with several
conditioning rows and ``--num-images-per-prompt``, ``--index``), and a batch larger than the
transformer engine takes runs in chunks that give the same images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from l2p.atomic import load_npz, save_npz
from l2p.cli import main
from l2p.metrics import psnr_db
from l2p.sampling.batching import largest_batch
from l2p.sampling.pipeline import Sampler
from l2p.sampling.settings import RunSettings

from .limited_engine import limit

STEPS = 4


def sample(bundle: Path, cond: Path, out: Path, *extra: str) -> tuple[dict[str, np.ndarray], dict, list[np.ndarray]]:
    """``l2p sample``: (latents.npz arrays, run.json, the PNGs as arrays)."""
    from PIL import Image

    assert main(["sample", str(bundle), "--conditioning", str(cond), "--steps", str(STEPS), "--out", str(out),
                 *extra]) == 0
    rec = json.loads((out / "run.json").read_text())
    return load_npz(out / "latents.npz"), rec, [np.asarray(Image.open(out / n)) for n in rec["images"]]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact, or >= 100 dB (ONNX Runtime may round a batch of 6 unlike a batch of 1)."""
    return bool(np.array_equal(a, b) or psnr_db(a, b) >= 100)


def test_image_k_is_the_image_sampled_alone_from_seed_plus_k(flux_bundle: Path, flux_cond: dict[str, np.ndarray],
                                                             tmp_path: Path) -> None:
    """2 conditioning rows x --num-images-per-prompt 3 from seed 7: image k = 3 r + j is row r sampled
    alone (a one-row COND.npz) with --seed 7 + k, in noise, final latents and PNG; --index 1 gives
    images 3..5; run.json records each image's seed. The noise is the documented rule, drawn here."""
    save_npz(tmp_path / "cond.npz", **flux_cond)
    lat, rec, pngs = sample(flux_bundle, tmp_path / "cond.npz", tmp_path / "all", "--seed", "7",
                            "--num-images-per-prompt", "3")
    assert lat["final"].shape[0] == 6 and len(pngs) == 6 and rec["images"][5] == "image_005.png"
    assert rec["seeds"] == [7, 8, 9, 10, 11, 12] and rec["seed"] == 7 and rec["num_images_per_prompt"] == 3
    rt = Sampler(flux_bundle).rt
    for k in range(6):  # drawn as FluxPipeline draws one image, (1, C, h, w), then packed
        rule = np.random.default_rng(7 + k).standard_normal((1, rt.channels, rt.h, rt.w), dtype=np.float32)
        assert np.array_equal(rt.to_vae_latent(lat["initial"][k:k + 1]), rule), k
    for r in range(2):
        save_npz(tmp_path / f"row{r}.npz", **{n: v[r:r + 1] for n, v in flux_cond.items()})
        for j in range(3):
            k = 3 * r + j
            one, one_rec, one_png = sample(flux_bundle, tmp_path / f"row{r}.npz", tmp_path / f"one{k}",
                                           "--seed", str(7 + k))
            assert one_rec["seeds"] == [7 + k]
            assert np.array_equal(one["initial"][0], lat["initial"][k])
            assert same(one["final"][0], lat["final"][k]) and np.array_equal(one_png[0], pngs[k]), k
    part, part_rec, part_png = sample(flux_bundle, tmp_path / "cond.npz", tmp_path / "index", "--seed", "7",
                                      "--num-images-per-prompt", "3", "--index", "1")
    assert part_rec["seeds"] == [10, 11, 12] and part_rec["images"] == ["image_000.png", "image_001.png",
                                                                        "image_002.png"]
    assert np.array_equal(part["initial"], lat["initial"][3:])
    assert same(part["final"], lat["final"][3:]) and all(np.array_equal(a, b) for a, b in zip(part_png, pngs[3:]))
    # rerun from the saved noise: the file's noise, no seeds of its own
    again, again_rec, _ = sample(flux_bundle, tmp_path / "cond.npz", tmp_path / "again", "--seed", "0",
                                 "--num-images-per-prompt", "3", "--initial-latents", str(tmp_path / "all" /
                                                                                          "latents.npz"))
    assert again_rec["seeds"] is None and np.array_equal(again["final"], lat["final"])


def test_bad_images_per_prompt(flux_bundle: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    save_npz(tmp_path / "cond.npz", **flux_cond)
    rng = np.random.default_rng(0)
    save_npz(tmp_path / "many.npz", **{k: rng.standard_normal((17, *v.shape[1:])).astype(np.float32)
                                       for k, v in flux_cond.items()})
    base = ["sample", str(flux_bundle), "--steps", "2", "--out", str(tmp_path / "o"), "--conditioning"]
    for extra, words in [(["0"], ["--num-images-per-prompt 0", "1..64"]),
                         (["65"], ["--num-images-per-prompt 65", "1..64"]),
                         (["-3"], ["--num-images-per-prompt -3", "1..64"]),
                         (["64", "many"], ["17 condition(s) x --num-images-per-prompt 64", "1088", "1..1024"])]:
        cond = tmp_path / ("many.npz" if "many" in extra else "cond.npz")
        assert main([*base, str(cond), "--num-images-per-prompt", extra[0]]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), err
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("limit_to", [1, 2, 4])
def test_largest_batch_is_the_limit(limit_to: int) -> None:
    """The binary search finds what a scan finds, for every batch."""
    for batch in range(1, 12):
        calls: list[int] = []

        def fits(b: int) -> bool:
            calls.append(b)
            return b <= limit_to

        assert largest_batch(fits, batch) == max(b for b in range(0, batch + 1) if b <= limit_to)
        assert len(calls) <= 1 + int(np.ceil(np.log2(batch + 1)))
    assert largest_batch(lambda b: False, 5) == 0


@pytest.mark.parametrize("method", [("full", None), ("taylorseer2", 3)])
def test_chunks_give_the_images_of_one_batch(flux_bundle: Path, method: tuple[str, int | None]) -> None:
    """A transformer engine that takes at most 2 rows (a TensorRT profile's max): a run of 5 images
    goes in ceil(5/2) = 3 chunks of at most 2 and gives the final latents of the run in one batch."""
    rng = np.random.default_rng(3)
    cond = {"encoder_hidden_states": rng.standard_normal((5, 8, 32)).astype(np.float32),
            "pooled_projections": rng.standard_normal((5, 24)).astype(np.float32)}
    name, full = method
    whole = Sampler(flux_bundle, threads=2).sample(cond, 5, 6, method=name, full_steps=full, decode=False)
    s = Sampler(flux_bundle, threads=2)
    engine = limit(s, "transformer", 2)
    steps: list[int] = []
    got = s.sample(cond, 5, 6, method=name, full_steps=full, decode=False, progress=steps.append)
    computed = whole.loop.computed_steps
    assert got.loop.computed_steps == computed == (full or 6)
    assert engine.batches == [2] * computed + [2] * computed + [1] * computed
    assert got.loop.chunks == 3 and got.loop.transformer_calls == 3 * computed == len(engine.batches)
    assert got.loop.transformer_evaluations == whole.loop.transformer_evaluations == computed
    assert steps == list(range(6)) * 3 and len(got.loop.steps) == 6
    assert np.array_equal(got.initial, whole.initial)
    assert same(got.final, whole.final)
    assert s.batch_plan(cond, RunSettings(steps=6, seed=5, method=name, full_steps=full)).count == 3
