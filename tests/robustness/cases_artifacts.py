"""Untrusted artifacts: truncated, bit-flipped, re-hashed and escaping bundles; foreign predictors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from l2p.atomic import sha256_file
from l2p.bundle import MANIFEST, open_bundle
from l2p.errors import ArtifactError, MismatchError
from l2p.predictor.artifact import Expect, load_predictor

from .catalog import Ctx, case, cli, cli_error, edit_json, flip_byte, make_predictor, no_onnxruntime_sessions, raises, \
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
@case("bundle: truncated model.onnx")
def truncated_onnx(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    truncate(b / "transformer" / "model.onnx")
    return cli_error(_sample(ctx, b), "truncated", "re-export")


@case("bundle: bit-flipped model.onnx")
def flipped_onnx(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    flip_byte(b / "transformer" / "model.onnx")
    return cli_error(_sample(ctx, b), "sha256", "re-export")


@case("bundle: damaged model.onnx, manifest re-hashed")
def garbage_onnx_resealed(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    truncate(b / "transformer" / "model.onnx")
    reseal(b)
    return cli_error(_sample(ctx, b), "not a readable ONNX file", "re-export")


@case("bundle: manifest sha256 does not match")
def manifest_hash(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    edit_json(b / MANIFEST, lambda m: m["files"]["head/model.onnx"].update(sha256="0" * 64))
    return cli_error(_sample(ctx, b), "head/model.onnx", "sha256")


@case("bundle: malformed manifest entry")
def malformed_manifest(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    edit_json(b / MANIFEST, lambda m: m["graphs"]["head"].pop("spec"))
    return cli_error(_sample(ctx, b), "malformed manifest")


@case("bundle: manifest lists '../' file")
def manifest_escape(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    (ctx.tmp / "outside.json").write_text("{}")
    edit_json(b / MANIFEST, lambda m: m["files"].update({"../outside.json": {"sha256": "0" * 64, "size": 2}}))
    return cli_error(_sample(ctx, b), "outside the bundle")


@case("bundle: scheduler config outside the file table")
def unlisted_scheduler(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    (ctx.tmp / "sched.json").write_text("{}")
    edit_json(b / MANIFEST, lambda m: m.update(scheduler="../sched.json"))
    return cli_error(_sample(ctx, b), "scheduler config", "not listed")


@case("bundle: external data '../' in an initializer")
def external_parent(ctx: Ctx) -> str:
    return _refused_before_onnxruntime(ctx, _escaping_bundle(ctx, "../../secret.bin"), "outside", "w")


@case("bundle: external data '/etc/passwd' in an initializer")
def external_absolute(ctx: Ctx) -> str:
    return _refused_before_onnxruntime(ctx, _escaping_bundle(ctx, "/etc/passwd"), "absolute path")


@case("bundle: external data '../' in an If subgraph")
def external_subgraph(ctx: Ctx) -> str:
    return _refused_before_onnxruntime(ctx, _escaping_bundle(ctx, "../../secret.bin", in_subgraph=True), "outside")


@case("bundle: external data file not in the manifest")
def external_unlisted(ctx: Ctx) -> str:
    b = _external_data_bundle(ctx)
    edit_json(b / MANIFEST, lambda m: m["files"].pop("transformer/model.onnx.data"))
    return _refused_before_onnxruntime(ctx, b, "not listed in the manifest")


@case("bundle: truncated / bit-flipped model.onnx.data")
def external_damaged(ctx: Ctx) -> str:
    b = _external_data_bundle(ctx)
    rc, _, err = cli(_sample(ctx, b))  # the legitimate external-data bundle samples
    assert rc == 0, err
    data = b / "transformer" / "model.onnx.data"
    original = data.read_bytes()
    flip_byte(data)
    flipped = cli_error(_sample(ctx, b), "model.onnx.data", "sha256")
    data.write_bytes(original)
    truncate(data)
    return cli_error(_sample(ctx, b), "model.onnx.data", "truncated") + " | " + flipped


# predictors -----------------------------------------------------------------------------------
@case("predictor: made for another bundle", covered_by="tests/calibration/test_calibrate.py::test_refuses_mismatch")
def predictor_other_bundle(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    make_predictor(b, "p", 8, 3, bundle_hash="f" * 64)
    return cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:p"), "calibrated for bundle ffffffffffff",
                     "l2p calibrate")


@case("predictor: made for another step count", covered_by="tests/calibration/test_calibrate.py::test_refuses_mismatch")
def predictor_other_steps(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    make_predictor(b, "p", 8, 3)
    return cli_error(_sample(ctx, b, "--steps", "10", "--method", "l2p:p"), "8 steps", "10 steps were asked",
                     "--steps 10")


@case("predictor: made for another tap")
def predictor_other_tap(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    asked = raises(MismatchError, lambda: load_predictor(folder, Expect(tap="residual")), "tap 'output'", "--tap residual")
    make_predictor(b, "forged", 8, 3, tap="residual")  # claims the residual tap, holds an output-shaped graph
    forged = cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:forged"), "tap 'residual'", "l2p calibrate")
    return f"{forged} | {asked}"


@case("predictor: calibration did not finish (no predictor.json)")
def predictor_unfinished(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    (make_predictor(b, "p", 8, 3) / "predictor.json").unlink()
    return cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:p"), "did not finish", "l2p calibrate")


@case("predictor: tampered coefficients", covered_by="tests/predictor/test_artifact.py::test_truncated_and_tampered_files")
def predictor_tampered(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    flip_byte(make_predictor(b, "p", 8, 3) / "coefficients.npz")
    return cli_error(_sample(ctx, b, "--steps", "8", "--method", "l2p:p"), "sha256", "re-calibrate")


@case("predictor: predictor.onnx reads external data, re-hashed")
def predictor_external(ctx: Ctx) -> str:
    b = ctx.copy_bundle()
    folder = make_predictor(b, "p", 8, 3)
    onnx.save(crafted_model("../../transformer/model.onnx"), str(folder / "predictor.onnx"))
    edit_json(folder / "predictor.json", lambda m: m["files"].update(
        {"predictor.onnx": {"sha256": sha256_file(folder / "predictor.onnx"), "size": (folder / "predictor.onnx").stat().st_size}}))
    with no_onnxruntime_sessions():
        return raises(ArtifactError, lambda: load_predictor(folder), "outside")


@case("predictor: name is a path (--method l2p:../x)")
def predictor_path_name(ctx: Ctx) -> str:
    return cli_error(_sample(ctx, ctx.bundle, "--method", "l2p:../../x"), "letters, digits")
