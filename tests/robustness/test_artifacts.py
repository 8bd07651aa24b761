"""Untrusted artifacts: truncated, bit-flipped, re-hashed and escaping bundles; foreign predictors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from l2p.atomic import sha256_file
from l2p.bundle import MANIFEST, open_bundle
from l2p.errors import ArtifactError, MismatchError
from l2p.predictor.artifact import Expect, load_predictor

from .helpers import Ctx, cli, cli_error, edit_json, flip_byte, make_predictor, no_onnxruntime_sessions, raises, \
    reseal, truncate


def _sample(ctx: Ctx, bundle: Path, *extra: str) -> list[str]:
    return ["sample", str(bundle), "--conditioning", str(ctx.cond_file()), "--steps", "4",
            "--out", str(ctx.tmp / "out"), *extra]


def _external_tensor(location: str) -> TensorProto:
    """A float[4] tensor ``w`` whose bytes live in the external file ``location``."""
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        t.external_data.add(key=key, value=value)
    return t


def crafted_model(location: str, in_subgraph: bool = False) -> onnx.ModelProto:
    """``y = x + w`` with ``w`` read from ``location``: as an initializer, or inside an If branch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    if not in_subgraph:
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y],
                                  initializer=[_external_tensor(location)])
    else:
        w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])
        branch = helper.make_graph([helper.make_node("Constant", [], ["w"], value=_external_tensor(location))],
                                   "branch", [], [w])
        cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
        nodes = [helper.make_node("If", ["cond"], ["w2"], then_branch=branch, else_branch=branch),
                 helper.make_node("Add", ["x", "w2"], ["y"])]
        graph = helper.make_graph(nodes, "g", [x], [y], initializer=[cond])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _escaping_bundle(ctx: Ctx, location: str, in_subgraph: bool = False) -> Path:
    """A bundle copy whose transformer graph reads external data from ``location``; manifest re-hashed."""
    (ctx.tmp / "secret.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())  # outside the bundle
    b = ctx.copy_bundle()
    onnx.save(crafted_model(location, in_subgraph), str(b / "transformer" / "model.onnx"))
    reseal(b)
    return b


def _refused_before_onnxruntime(ctx: Ctx, bundle: Path, *expect: str) -> str:
    msg = raises(ArtifactError, lambda: open_bundle(bundle), *expect)
    with no_onnxruntime_sessions():
        cli_error(_sample(ctx, bundle), *expect)
    return msg


def _external_data_bundle(ctx: Ctx) -> Path:
    """A bundle copy whose transformer weights live in ``model.onnx.data`` (as graphs over 1 GiB do)."""
    b = ctx.copy_bundle()
    path = b / "transformer" / "model.onnx"
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=1024)
    reseal(b)
    return b


# bundles ---------------------------------------------------------------------------------------
def test_bundle_truncated_model_onnx(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    truncate(b / "transformer" / "model.onnx")
    answer(cli_error(_sample(ctx, b), "truncated", "re-export"))


def test_bundle_bit_flipped_model_onnx(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    flip_byte(b / "transformer" / "model.onnx")
    answer(cli_error(_sample(ctx, b), "sha256", "re-export"))


def test_bundle_damaged_model_onnx_manifest_rehashed(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    truncate(b / "transformer" / "model.onnx")
    reseal(b)
    answer(cli_error(_sample(ctx, b), "not a readable ONNX file", "re-export"))


def test_bundle_manifest_sha256_mismatch(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    edit_json(b / MANIFEST, lambda m: m["files"]["head/model.onnx"].update(sha256="0" * 64))
    answer(cli_error(_sample(ctx, b), "head/model.onnx", "sha256"))


def test_bundle_malformed_manifest_entry(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    edit_json(b / MANIFEST, lambda m: m["graphs"]["head"].pop("spec"))
    answer(cli_error(_sample(ctx, b), "malformed manifest"))


def test_bundle_manifest_lists_a_parent_path(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    (ctx.tmp / "outside.json").write_text("{}")
    edit_json(b / MANIFEST, lambda m: m["files"].update({"../outside.json": {"sha256": "0" * 64, "size": 2}}))
    answer(cli_error(_sample(ctx, b), "outside the bundle"))


def test_bundle_scheduler_config_outside_the_file_table(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    (ctx.tmp / "sched.json").write_text("{}")
    edit_json(b / MANIFEST, lambda m: m.update(scheduler="../sched.json"))
    answer(cli_error(_sample(ctx, b), "scheduler config", "not listed"))


@pytest.mark.parametrize(("location", "in_subgraph", "expect"), [
    pytest.param("../../secret.bin", False, ("outside", "w"), id="parent-path-in-an-initializer"),
    pytest.param("/etc/passwd", False, ("absolute path",), id="absolute-path-in-an-initializer"),
    pytest.param("../../secret.bin", True, ("outside",), id="parent-path-in-an-if-subgraph"),
])
def test_bundle_external_data_escapes(ctx: Ctx, answer: Callable[..., None], location: str, in_subgraph: bool,
                                      expect: tuple[str, ...]) -> None:
    answer(_refused_before_onnxruntime(ctx, _escaping_bundle(ctx, location, in_subgraph), *expect))


def test_bundle_external_data_file_not_in_the_manifest(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = _external_data_bundle(ctx)
    edit_json(b / MANIFEST, lambda m: m["files"].pop("transformer/model.onnx.data"))
    answer(_refused_before_onnxruntime(ctx, b, "not listed in the manifest"))


def test_bundle_external_data_truncated_or_bit_flipped(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = _external_data_bundle(ctx)
    rc, _, err = cli(_sample(ctx, b))  # the legitimate external-data bundle samples
    assert rc == 0, err
    data = b / "transformer" / "model.onnx.data"
    original = data.read_bytes()
    flip_byte(data)
    flipped = cli_error(_sample(ctx, b), "model.onnx.data", "sha256")
    data.write_bytes(original)
    truncate(data)
    answer(cli_error(_sample(ctx, b), "model.onnx.data", "truncated") + " | " + flipped)


# predictors -----------------------------------------------------------------------------------
def test_predictor_made_for_another_bundle(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    make_predictor(b, "p", 8, 3, bundle_hash="f" * 64)
    answer(cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:p"), "calibrated for bundle ffffffffffff",
                     "l2p calibrate"))


def test_predictor_made_for_another_step_count(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    make_predictor(b, "p", 8, 3)
    answer(cli_error(_sample(ctx, b, "--steps", "10", "--method", "l2p:p"), "8 steps", "10 steps were asked",
                     "--steps 10"))


def test_predictor_made_for_another_tap(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    asked = raises(MismatchError, lambda: load_predictor(folder, Expect(tap="residual")), "tap 'output'", "--tap residual")
    make_predictor(b, "forged", 8, 3, tap="residual")  # claims the residual tap, holds an output-shaped graph
    forged = cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:forged"), "tap 'residual'", "l2p calibrate")
    answer(f"{forged} | {asked}")


def test_predictor_calibration_did_not_finish(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    (make_predictor(b, "p", 8, 3) / "predictor.json").unlink()
    answer(cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:p"), "did not finish", "l2p calibrate"))


def test_predictor_tampered_coefficients(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    flip_byte(make_predictor(b, "p", 8, 3) / "coefficients.npz")
    answer(cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:p"), "sha256", "re-calibrate"))


def test_predictor_onnx_reads_external_data_rehashed(ctx: Ctx, answer: Callable[..., None]) -> None:
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    onnx.save(crafted_model("../../transformer/model.onnx"), str(folder / "predictor.onnx"))
    edit_json(folder / "predictor.json", lambda m: m["files"].update(
        {"predictor.onnx": {"sha256": sha256_file(folder / "predictor.onnx"), "size": (folder / "predictor.onnx").stat().st_size}}))
    with no_onnxruntime_sessions():
        answer(raises(ArtifactError, lambda: load_predictor(folder), "outside"))


def test_predictor_name_is_a_path(ctx: Ctx, answer: Callable[..., None]) -> None:
    answer(cli_error(_sample(ctx, ctx.bundle, "--method", "l2p:../../x"), "letters, digits"))
