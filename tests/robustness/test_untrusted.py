"""Untrusted bundles that try to escape or to be silently wrong: symbolic links inside a bundle or
predictor, a predictor graph that is not its coefficients', a diverging predictor, and metadata
sizes far beyond any model (issue 12). Every case ends in one line, exit status 2, and no file
outside the bundle read or written."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from l2p.atomic import save_npz, sha256_file
from l2p.bundle import MANIFEST, open_bundle
from l2p.errors import ArtifactError
from l2p.predictor.artifact import load_predictor, save_predictor
from l2p.predictor.graph import build_predictor_graph
from l2p.predictor.table import CoefficientTable
from l2p.sampling.methods import feature_spec

from .helpers import Ctx, cli, cli_error, edit_json, make_predictor, no_onnxruntime_sessions, opened_files, raises, \
    reseal

PREDICTOR_FILES = ("coefficients.npz", "predictor.onnx", "io_spec.json")


def _sample(ctx: Ctx, bundle: Path, *extra: str, steps: str = "8") -> list[str]:
    return ["sample", str(bundle), "--conditioning", str(ctx.cond_file()), "--steps", steps,
            "--out", str(ctx.tmp / "out"), *extra]


def _calibrate(ctx: Ctx, bundle: Path) -> list[str]:
    return ["calibrate", str(bundle), "--conditioning", str(ctx.cond_file()), "--steps", "4", "--full-steps", "2",
            "--seeds", "1", "--K", "2", "--exact", "0", "--no-latents", "--closed-loop", "0", "--refit", "0",
            "--schedule", "interval", "--name", "p"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and mtime: what "nothing written there" compares."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def _outside(ctx: Ctx) -> Path:
    """A folder outside the bundle with a secret of a telling size (1234 bytes)."""
    out = ctx.tmp / "OUTSIDE"
    out.mkdir()
    (out / "secret").write_bytes(b"s" * 1234)
    return out


def resign(folder: Path) -> None:
    """Rewrite a predictor's file table so it matches its files again, as a forger would."""
    edit_json(folder / "predictor.json", lambda m: m["files"].update(
        {r: {"sha256": sha256_file(folder / r), "size": (folder / r).stat().st_size} for r in PREDICTOR_FILES}))


# symbolic links -------------------------------------------------------------------------------
def test_linked_predictors_folder_is_neither_written_nor_read(ctx: Ctx, answer: Callable[..., None]) -> None:
    """``ln -s OUTSIDE BUNDLE/predictors``: calibrate must not write into OUTSIDE, sample must not read it."""
    b, out = ctx.copy_bundle(), _outside(ctx)
    make_predictor(b, "p", 8, 3)
    shutil.move(b / "predictors" / "p", out / "p")
    (b / "predictors").rmdir()
    (b / "predictors").symlink_to(out)
    before = _snapshot(out)
    msg = cli_error(_calibrate(ctx, b), "'predictors'", "symbolic link")
    assert _snapshot(out) == before
    cli_error(_sample(ctx, b, "--method", "l2p:p"), "'predictors'", "symbolic link")
    answer(msg)


@pytest.mark.parametrize("link", ["predictors/p", "predictors/.cache"])
def test_linked_folder_inside_predictors(ctx: Ctx, answer: Callable[..., None], link: str) -> None:
    b, out = ctx.copy_bundle(), _outside(ctx)
    (b / "predictors").mkdir()
    (b / link).symlink_to(out)
    before = _snapshot(out)
    msg = cli_error(_calibrate(ctx, b), f"'{link}'", "symbolic link")
    assert _snapshot(out) == before
    answer(msg)


@pytest.mark.parametrize("name", [*PREDICTOR_FILES, "predictor.json"])
def test_linked_predictor_file_reveals_nothing(ctx: Ctx, answer: Callable[..., None], name: str) -> None:
    """A predictor file linked to a secret outside (``coefficients.npz -> /etc/shadow``): refused before
    the secret is opened, and the message says nothing about it (not even its size)."""
    b, out = ctx.copy_bundle(), _outside(ctx)
    folder = make_predictor(b, "p", 8, 3)
    (folder / name).unlink()
    (folder / name).symlink_to(out / "secret")
    with opened_files() as opened:
        msg = cli_error(_sample(ctx, b, "--method", "l2p:p"), name, "symbolic link")
    assert "1234" not in msg and "secret" not in msg
    assert not [p for p in opened if p.startswith(str(out))], opened
    answer(msg)


@pytest.mark.parametrize("link", ["transformer/model.onnx", "scheduler", MANIFEST])
def test_linked_bundle_file_or_folder(ctx: Ctx, answer: Callable[..., None], link: str) -> None:
    """A listed bundle file or folder replaced by a link to an identical copy outside: still refused."""
    b, out = ctx.copy_bundle(), _outside(ctx)
    shutil.move(b / link, out / "moved")
    (b / link).symlink_to(out / "moved")
    answer(cli_error(_sample(ctx, b), "symbolic link"))


def test_triton_repository_copies_no_linked_content(ctx: Ctx, answer: Callable[..., None]) -> None:
    """``l2p triton-repo`` copies the bundle: a link under ``plans/`` (outside the manifest) is refused,
    not followed (its target would be copied, or hard-linked, into the repository)."""
    b, out = ctx.copy_bundle(), _outside(ctx)
    (b / "plans").mkdir()
    (b / "plans" / "stolen").symlink_to(out / "secret")
    msg = cli_error(["triton-repo", str(b), "--out", str(ctx.tmp / "repo")], "plans/stolen", "symbolic link")
    assert not (ctx.tmp / "repo").exists() and sorted(p.name for p in ctx.tmp.iterdir() if p.name.startswith("."))\
        == []
    answer(msg)


def test_fifo_in_place_of_a_bundle_file(ctx: Ctx, answer: Callable[..., None]) -> None:
    """A FIFO (or any special file) where a listed file should be: refused at once, not waited on."""
    b = ctx.copy_bundle()
    (b / "head" / "io_spec.json").unlink()
    os.mkfifo(b / "head" / "io_spec.json")
    answer(cli_error(_sample(ctx, b), "head/io_spec.json", "not a regular file"))


# the predictor graph is its coefficients' ------------------------------------------------------
def _forge_graph(ctx: Ctx, how: str) -> Path:
    """A bundle copy whose predictor ``p`` (K=3) got another graph, re-signed as a forger would."""
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    if how == "swapped":  # another predictor's graph, same K and I/O
        other = make_predictor(b, "q", 8, 4)
        shutil.copy(other / "predictor.onnx", folder / "predictor.onnx")
    elif how == "constants-x1000":
        m = onnx.load(str(folder / "predictor.onnx"))
        for t in m.graph.initializer:
            if t.name == "W":
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1000, "W"))
        onnx.save(m, str(folder / "predictor.onnx"))
    else:  # a graph with another K (its io_spec.json left as the coefficients say)
        table = CoefficientTable(np.zeros((8, 2)), np.zeros((8, 2)), np.zeros(8), (0, 3, 6), 2, False)
        onnx.save(build_predictor_graph(table, feature_spec(open_bundle(b), "output")), str(folder / "predictor.onnx"))
    resign(folder)
    return b


@pytest.mark.parametrize("how", ["swapped", "constants-x1000", "another-K"])
def test_predictor_graph_not_its_coefficients(ctx: Ctx, answer: Callable[..., None], how: str) -> None:
    b = _forge_graph(ctx, how)
    with no_onnxruntime_sessions():
        msg = cli_error(_sample(ctx, b, "--method", "l2p:p"), "predictor.onnx is not the graph of its "
                        "coefficients.npz", "re-calibrate")
    assert not (ctx.tmp / "out").exists()
    answer(msg)


def test_predictor_with_exploding_coefficients_stops(ctx: Ctx, answer: Callable[..., None]) -> None:
    """Coefficients x1e5 with their own (rebuilt) graph, re-signed: the loop stops on divergence with
    the step and the engine instead of writing an image. (x1000 takes this random-weight model's
    latent to 260x the noise in 8 steps, below the guard's 1000x: see DIVERGENCE in loop.py.)"""
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    pred = load_predictor(folder)
    t = pred.table
    save_predictor(folder, table=CoefficientTable(t.W * 1e5, t.U, t.V, t.computed, t.K, t.uses_latents),
                   feature_spec=pred.io_spec.output("feature"), name="p", method="l2p", tap="output",
                   bundle_hash=pred.bundle_hash, scheduler_hash=pred.scheduler_hash)
    msg = cli_error(_sample(ctx, b, "--method", "l2p:p"), "the latent diverged after the l2p:p predictor engine",
                    "re-calibrate")
    assert msg.startswith("step ")
    assert not (ctx.tmp / "out").exists() or not list((ctx.tmp / "out").glob("*.png"))
    rc, _, err = cli(_sample(ctx, b, "--method", "taylorseer2", "--full-steps", "3"))  # the neighbour: fine
    assert rc == 0, err
    answer(msg)


# bounded metadata ------------------------------------------------------------------------------
def _manifest(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda b: edit_json(b / MANIFEST, fn)


def _latent(**change: object) -> Callable[[Path], None]:
    return _manifest(lambda m: m["latent"].update(change))


def _tokenizer(**change: object) -> Callable[[Path], None]:
    def edit(b: Path) -> None:
        (b / "tok").mkdir()
        (b / "tok" / "tokenizer.json").write_text("{}")
        entry = {"path": "tok/tokenizer.json", "max_length": 77, "pad_id": 0, "kind": "clip", **change}
        edit_json(b / MANIFEST, lambda m: m.update(tokenizers={"text_encoder": entry}))
    return edit


def _scheduler(**change: object) -> Callable[[Path], None]:
    return lambda b: edit_json(b / "scheduler" / "scheduler_config.json", lambda c: c.update(change))


def _deep(rel: str) -> Callable[[Path], None]:
    return lambda b: (b / rel).write_text("[" * 100_000 + "]" * 100_000)


def _spec(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda b: edit_json(b / "head" / "io_spec.json", fn)


@pytest.mark.parametrize(("edit", "expect"), [
    pytest.param(_latent(height=10**6, width=10**6), "height is 1000000", id="latent-1e6x1e6"),
    pytest.param(_latent(channels=2**40), "channels is 1099511627776", id="latent-channels-2**40"),
    pytest.param(_latent(height=1024, width=1024, channels=64), "channels x height x width", id="latent-elements"),
    pytest.param(_latent(rope_axes_dim=[4] * 10**5), "length of FluxLatent.rope_axes_dim", id="rope-axes-1e5"),
    pytest.param(_tokenizer(max_length=10**12), "max_length is 1000000000000", id="tokenizer-max-length-1e12"),
    pytest.param(_tokenizer(pad_id=-1), "pad_id is -1", id="tokenizer-pad-id-negative"),
    pytest.param(_scheduler(num_train_timesteps=10**10), "num_train_timesteps is 10000000000",
                 id="scheduler-num-train-timesteps-1e10"),
    pytest.param(_scheduler(trained_betas=[0.1] * 3), "trained_betas must be a list of num_train_timesteps",
                 id="scheduler-trained-betas-short"),
    pytest.param(_deep(MANIFEST), "nested too deeply", id="manifest-nested-100k"),
    pytest.param(_deep("scheduler/scheduler_config.json"), "nested too deeply", id="scheduler-nested-100k"),
    pytest.param(_deep("head/io_spec.json"), "nested too deeply", id="io-spec-nested-100k"),
    pytest.param(_manifest(lambda m: m["graphs"].pop("transformer")), "lists no 'transformer' graph",
                 id="no-transformer-graph"),
    pytest.param(_manifest(lambda m: m["graphs"].update({"../../x": m["graphs"]["head"]})), "not a plain name",
                 id="graph-name-is-a-path"),
    pytest.param(_spec(lambda s: s["inputs"][0].update(shape=[1] * 100)), "at most 8 dims", id="io-spec-rank-100"),
    pytest.param(_spec(lambda s: s["inputs"][0].update(shape=[2**40])), "neither a size", id="io-spec-dim-2**40"),
])
def test_metadata_out_of_bounds(ctx: Ctx, answer: Callable[..., None], edit: Callable[[Path], None],
                                expect: str) -> None:
    """A re-signed manifest, scheduler config or io spec with sizes far beyond any model: refused
    with one line before anything is allocated (an allocation from these would be terabytes)."""
    b = ctx.copy_bundle()
    edit(b)
    try:
        reseal(b)
    except RecursionError:  # a manifest nested 100k deep cannot be re-signed: it is the forgery itself
        pass
    answer(cli_error(_sample(ctx, b), expect))


def _npz_with_header(path: Path, name: str, shape: tuple[int, ...], extra: dict[str, np.ndarray],
                     descr: str = "<f4") -> Path:
    """An .npz whose member ``name`` has an .npy header claiming ``shape`` over 64 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", buf.getvalue() + b"\0" * 64)
        for k, v in extra.items():
            member = io.BytesIO()
            np.save(member, v)
            z.writestr(f"{k}.npy", member.getvalue())
    return path


def test_npy_header_claiming_1e9_rows(ctx: Ctx, answer: Callable[..., None]) -> None:
    """Conditioning, initial latents and coefficients whose header claims 1e9 rows: refused from the
    header, without allocating (numpy would try 4 TB)."""
    cond = _npz_with_header(ctx.tmp / "c.npz", "encoder_hidden_states", (10**9, 8, 32),
                            {"pooled_projections": ctx.cond["pooled_projections"]})
    msg = cli_error(["sample", str(ctx.bundle), "--conditioning", str(cond), "--steps", "2",
                     "--out", str(ctx.tmp / "out")], "claims shape [1000000000, 8, 32]")
    lat = _npz_with_header(ctx.tmp / "l.npz", "initial", (10**9, 16, 64), {})
    cli_error(_sample(ctx, ctx.bundle, "--initial-latents", str(lat)), "claims shape [1000000000, 16, 64]")
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    _npz_with_header(folder / "coefficients.npz", "W", (10**9, 3), {})
    resign(folder)
    cli_error(_sample(ctx, b, "--method", "l2p:p"), "coefficients.npz", "claims shape [1000000000, 3]")
    answer(msg)


@pytest.mark.parametrize(("arrays", "expect"), [
    pytest.param({"encoder_hidden_states": np.zeros((1025, 8, 32), np.float32),
                  "pooled_projections": np.zeros((1025, 24), np.float32)}, "rows of array", id="1025-rows"),
    pytest.param({"encoder_hidden_states": np.zeros((1, 8193, 32), np.float32),
                  "pooled_projections": np.zeros((1, 24), np.float32)}, "dim 'txt_seq'", id="8193-tokens"),
])
def test_conditioning_too_large(ctx: Ctx, answer: Callable[..., None], arrays: dict[str, np.ndarray],
                                expect: str) -> None:
    path = ctx.tmp / "big.npz"
    save_npz(path, **arrays)
    answer(cli_error(["sample", str(ctx.bundle), "--conditioning", str(path), "--steps", "2",
                      "--out", str(ctx.tmp / "out")], expect, "1.."))


def test_npz_with_object_or_foreign_members(ctx: Ctx, answer: Callable[..., None]) -> None:
    obj = _npz_with_header(ctx.tmp / "o.npz", "encoder_hidden_states", (2,), {}, descr="|O")
    msg = cli_error(["sample", str(ctx.bundle), "--conditioning", str(obj), "--steps", "2",
                     "--out", str(ctx.tmp / "out")], "dtype object", "pickle")
    with zipfile.ZipFile(ctx.tmp / "f.npz", "w") as z:
        z.writestr("notes.txt", b"hello")
    cli_error(["sample", str(ctx.bundle), "--conditioning", str(ctx.tmp / "f.npz"), "--steps", "2",
               "--out", str(ctx.tmp / "out")], "notes.txt", "not an array")
    answer(msg)


@pytest.mark.parametrize(("prompts", "expect"), [
    pytest.param(["x" * 10_001], "length of prompt 0 in characters is 10001", id="prompt-10001-chars"),
    pytest.param(["a"] * 1025, "number of prompts is 1025", id="1025-prompts"),
])
def test_prompts_too_large(ctx: Ctx, answer: Callable[..., None], prompts: list[str], expect: str) -> None:
    answer(cli_error(["sample", str(ctx.bundle), "--prompt", *prompts, "--steps", "2",
                      "--out", str(ctx.tmp / "out")], expect))


def test_predictor_json_out_of_bounds(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    (folder / "predictor.json").write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    msg = cli_error(_sample(ctx, b, "--method", "l2p:p"), "predictor.json", "nested too deeply")
    with no_onnxruntime_sessions():
        raises(ArtifactError, lambda: load_predictor(folder), "nested too deeply")
    answer(msg)
