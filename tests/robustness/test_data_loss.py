"""Issue 12, data loss: ``l2p export`` and ``l2p sample --out`` never delete or mix what they did
not write, replace their own folders only once the new version is complete, and keep calibrated
predictors that still fit (every case: one-line refusal or success, nothing outside touched)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from l2p.bundle import open_bundle
from l2p.predictor.artifact import Expect, load_predictor

from .guard import confined, recorded, refused, succeeds, tree  # noqa: F401  (recorded: autouse)
from .helpers import make_predictor


@pytest.fixture()
def bundle(bundle: Path) -> Path:
    """The bundle copy, holding one calibrated-style predictor 'p' (8 steps, 3 full)."""
    make_predictor(bundle, "p", 8, 3)
    return bundle


def _export(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["export", str(folder), "--out", str(out), "--latent-size", "8", "8", *extra]


def _sample(bundle: Path, cond: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", str(bundle), "--conditioning", str(cond), "--steps", "4", "--out", str(out), *extra]


# export: what --out may be --------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["foreign manifest.json", "foreign files", "manifest of another tool"])
def test_export_refuses_a_foreign_folder(layout: str, tmp_path: Path, flux_folder: Path) -> None:
    out = tmp_path / "X"
    (out / "src").mkdir(parents=True)
    (out / "src" / "main.c").write_text("int main() {}\n")
    if layout == "foreign manifest.json":
        (out / "manifest.json").write_text('{"name": "pwa"}')
    elif layout == "manifest of another tool":
        (out / "manifest.json").write_text('{"format": "other", "files": {}}')
    before = tree(out)
    with confined(tmp_path, readable=(flux_folder, out)):
        msg = refused(_export(flux_folder, out), str(out), "not an l2p bundle", "choose another --out")
    assert tree(out) == before, msg


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_export_refuses_out_that_cannot_be_a_folder(where: str, tmp_path: Path, flux_folder: Path) -> None:
    (tmp_path / "f").write_text("mine\n")
    out = tmp_path / "f" if where == "a file" else tmp_path / "f" / "b"
    with confined(tmp_path, readable=(flux_folder,)):
        refused(_export(flux_folder, out), "file")
    assert (tmp_path / "f").read_text() == "mine\n"


@pytest.mark.parametrize("args,expect", [
    (["--latent-size", "7", "8"], "even"),
    (["--latent-size", "0", "8"], "0 is not a positive integer"),
    (["--latent-size", "4096", "4096"], "out of range"),
    (["--latent-size", "8", "8", "--precision", "fp8"], "invalid choice"),
    (["--latent-size", "8", "8", "--max-sequence-length", "64"], "T5 text encoder"),  # a transformer-only folder
    (["--latent-size", "8", "8", "--max-sequence-length", "-1"], "-1 is not a positive integer"),
    (["--latent-size", "8", "8", "--max-sequence-length", "0"], "0 is not a positive integer"),
    (["--height", "0", "--width", "0"], "0 is not a positive integer"),
    (["--height", "64"], "both --height and --width"),
])
def test_bad_export_arguments_leave_the_bundle_alone(args: list[str], expect: str, bundle: Path,
                                                    flux_folder: Path, tmp_path: Path) -> None:
    before = tree(bundle)
    with confined(tmp_path, readable=(flux_folder, bundle)):
        refused(["export", str(flux_folder), "--out", str(bundle), *args], expect)
    assert tree(bundle) == before


def test_export_refuses_to_delete_user_files_in_a_bundle(bundle: Path, flux_folder: Path, tmp_path: Path) -> None:
    (bundle / "notes.txt").write_text("my notes\n")
    before = tree(bundle)
    with confined(tmp_path, readable=(flux_folder, bundle)):
        refused(_export(flux_folder, bundle, "--no-check"), "notes.txt", "--force")
    assert tree(bundle) == before


def test_export_refuses_to_drop_predictors_of_another_latent_size(bundle: Path, flux_folder: Path,
                                                                 tmp_path: Path) -> None:
    """A new latent size certainly changes the transformer graph: refused before the export runs."""
    before = tree(bundle)
    with confined(tmp_path, readable=(flux_folder, bundle)):
        refused(["export", str(flux_folder), "--out", str(bundle), "--latent-size", "4", "4"],
                "predictor 'p'", "latent size changes from 8x8 to 4x4", "--force")
    assert tree(bundle) == before


def test_export_refuses_to_drop_a_stale_predictor(bundle: Path, flux_folder: Path, tmp_path: Path) -> None:
    make_predictor(bundle, "old", 8, 3, bundle_hash="f" * 64)  # made for another bundle: already unusable
    before = tree(bundle)
    with confined(tmp_path, readable=(flux_folder, bundle)):
        refused(_export(flux_folder, bundle, "--no-check"), "predictor 'old'", "another bundle", "--force")
    assert tree(bundle) == before


def test_reexport_keeps_predictors_of_an_identical_denoiser(bundle: Path, flux_folder: Path, tmp_path: Path,
                                                            cond_file: Path) -> None:
    """Other settings (--no-check), byte-identical transformer/head/scheduler: the predictor is
    re-keyed to the new bundle and still samples."""
    old_hash = open_bundle(bundle).hash
    old_coef = (bundle / "predictors" / "p" / "coefficients.npz").read_bytes()
    with confined(tmp_path, bundle, readable=(flux_folder,)):
        out = succeeds(_export(flux_folder, bundle, "--no-check"))
    assert "kept 1 predictor(s) (p)" in out
    new = open_bundle(bundle)
    assert new.hash != old_hash and new.manifest["export_config"]["settings"]["check"] is False
    pred = load_predictor(bundle / "predictors" / "p", Expect(bundle_hash=new.hash))
    assert pred.fit_stats["rekeyed"][0]["from"] == old_hash
    assert (bundle / "predictors" / "p" / "coefficients.npz").read_bytes() == old_coef
    succeeds(_sample(bundle, cond_file, tmp_path / "o", "--steps", "8", "--method", "l2p:p"))


@pytest.mark.slow
def test_force_replaces_a_bundle_and_says_what_it_deletes(bundle: Path, flux_folder: Path, tmp_path: Path) -> None:
    (bundle / "notes.txt").write_text("my notes\n")
    with confined(tmp_path, bundle, readable=(flux_folder,)):
        out = succeeds(["export", str(flux_folder), "--out", str(bundle), "--latent-size", "4", "4", "--force",
                        "--no-check"])
    assert "--force: deleting predictor 'p'" in out and "notes.txt" in out
    assert not (bundle / "predictors").exists() and not (bundle / "notes.txt").exists()
    assert open_bundle(bundle).manifest["export_config"]["settings"]["latent_height"] == 4


@pytest.mark.slow
def test_changed_model_refuses_after_export_and_keeps_the_old_bundle(bundle: Path, flux_folder: Path,
                                                                     tmp_path: Path) -> None:
    """Same settings, other weights: only the finished export shows the denoiser differs; the old
    bundle and its predictor are left exactly as they were, the new one is deleted."""
    import torch
    from diffusers import FluxTransformer2DModel

    src = tmp_path / "model"
    model = FluxTransformer2DModel.from_pretrained(str(flux_folder / "transformer"))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(str(src / "transformer"))
    before = tree(bundle)
    with confined(tmp_path, readable=(src, bundle)):
        refused(_export(src, bundle), "predictor 'p'", "differs from the one it was fitted to", "--force")
    assert tree(bundle) == before


# sample --out ---------------------------------------------------------------------------------
def test_sample_replaces_an_earlier_run_as_a_whole(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    succeeds(_sample(flux_bundle, cond_file, out))  # 2 rows: image_000, image_001
    with confined(tmp_path, out, readable=(cond_file,)):
        succeeds(_sample(flux_bundle, cond_file, out, "--index", "1", "--seed", "5"))
    run = json.loads((out / "run.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["image_000.png", "latents.npz", "run.json"]
    assert run["images"] == ["image_000.png"] and run["index"] == 1 and run["format"] == "l2p-run"


@pytest.mark.parametrize("content", ["user files", "an earlier run and a user file", "nested run.json"])
def test_sample_refuses_a_folder_it_would_mix_into(content: str, flux_bundle: Path, cond_file: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    if content == "an earlier run and a user file":
        succeeds(_sample(flux_bundle, cond_file, out))
    out.mkdir(exist_ok=True)
    (out / "holiday.png").write_bytes(b"\x89PNG mine")
    if content == "nested run.json":  # a forged record deeper than the JSON parser's recursion limit
        (out / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    before = tree(out)
    with confined(tmp_path, readable=(cond_file, out)):
        refused(_sample(flux_bundle, cond_file, out), str(out), "choose another --out")
    assert tree(out) == before


def test_failed_sample_keeps_the_earlier_run(flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    from unittest import mock

    from l2p.engine.onnxruntime_backend import OrtEngine

    out = tmp_path / "run"
    succeeds(_sample(flux_bundle, cond_file, out))
    before = tree(out)
    run = OrtEngine._run

    def nan(self: OrtEngine, feed: dict) -> dict:
        return {k: np.full_like(v, np.nan) for k, v in run(self, feed).items()}

    with mock.patch.object(OrtEngine, "_run", nan), confined(tmp_path, out, readable=(cond_file,)):
        refused(_sample(flux_bundle, cond_file, out), "NaN")
    assert tree(out) == before


@pytest.mark.parametrize("where", ["a file", "under a file", "a name of 300 characters"])
def test_sample_out_that_cannot_be_a_folder(where: str, flux_bundle: Path, cond_file: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine\n")
    out = {"a file": tmp_path / "f", "under a file": tmp_path / "f" / "run",
           "a name of 300 characters": tmp_path / ("r" * 300)}[where]
    with confined(tmp_path, readable=(cond_file,)):
        refused(_sample(flux_bundle, cond_file, out), "too long" if "300" in where else "file")
    assert (tmp_path / "f").read_text() == "mine\n"
