"""TensorRT profiles, plan keys, the plan cache, precision rules and build_plans' argument checks:
all without TensorRT (:mod:`l2p.engine.trt_profiles`, :mod:`l2p.engine.trt_plans`, :mod:`l2p.engine.trt_build`).

The "current" environment (TensorRT version, compute capability) is injected, so refusal of
foreign or tampered plans is checked here on CPU.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from l2p.bundle import bundle_of, write_manifest
from l2p.engine import trt_build, trt_plans, trt_profiles
from l2p.engine.trt_plans import PlanFields
from l2p.engine.trt_profiles import ProfileShape
from l2p.errors import ArtifactError, InputError, MismatchError, MissingDependencyError
from l2p.precision import Precision
from l2p.spec import IOSpec, TensorSpec

HAS_TRT = importlib.util.find_spec("tensorrt") is not None

SPEC = IOSpec(
    inputs=(
        TensorSpec("x", "float32", ("batch", "img_seq", 8)),
        TensorSpec("t", "float32", ("batch",)),
        TensorSpec("rope", "float32", ("img_seq", 4)),
        TensorSpec("scale", "float32", (1,)),
    ),
    outputs=(TensorSpec("y", "float32", ("batch", "img_seq", 8)),),
)


def tiny_onnx(path: Path, dtype: str = "float32", external: bool = False) -> IOSpec:
    """y = relu(x @ W + b) over x: [batch, seq, 8]."""
    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(dtype), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(dtype), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", elem, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", elem, ["batch", "seq", 8])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path), save_as_external_data=external, location=path.name + ".data",
              size_threshold=0)
    t = TensorSpec("x", dtype, ("batch", "seq", 8))
    return IOSpec((t,), (TensorSpec("y", dtype, ("batch", "seq", 8)),))


def tiny_bundle(root: Path, dtype: str = "float32", external: bool = False) -> Path:
    spec = tiny_onnx(root / "transformer" / "model.onnx", dtype, external)
    (root / "transformer" / "io_spec.json").write_text(json.dumps(spec.to_dict()))
    precision = {"float32": "fp32", "float16": "fp16"}[dtype]
    write_manifest(root, {"family": "tiny", "precision": precision, "graphs": {
        "transformer": {"onnx": "transformer/model.onnx", "spec": "transformer/io_spec.json"}}})
    return root


def fields(**over: object) -> PlanFields:
    base = dict(onnx_sha256="a" * 64, trt_version="10.13.0.35", compute_capability="9.0", precision="fp16",
                profiles=(ProfileShape("x", (1, 16, 8), (1, 64, 8), (2, 256, 8)),))
    base.update(over)
    return PlanFields(**base)  # type: ignore[arg-type]


# -- dims and profiles ---------------------------------------------------------------------------


def test_parse_dims() -> None:
    assert trt_profiles.parse_dims("batch=1,img_seq=256") == {"batch": 1, "img_seq": 256}
    assert trt_profiles.parse_dims(" batch = 2 , txt_seq=77, ") == {"batch": 2, "txt_seq": 77}
    assert trt_profiles.parse_dims("") == {}
    for bad in ("batch", "batch=0", "batch=x", "batch=-1", "1a=3", "batch=1,batch=2"):
        with pytest.raises(InputError):
            trt_profiles.parse_dims(bad)


def test_derive_profiles() -> None:
    profiles = trt_profiles.derive_profiles(SPEC, {"batch": 1, "img_seq": 16}, {"batch": 1, "img_seq": 64},
                                  {"batch": 2, "img_seq": 256, "txt_seq": 512})
    assert profiles == [
        ("x", (1, 16, 8), (1, 64, 8), (2, 256, 8)),
        ("t", (1,), (1,), (2,)),
        ("rope", (16, 4), (64, 4), (256, 4)),
        ("scale", (1,), (1,), (1,)),
    ]
    assert profiles[0].max == (2, 256, 8)


@pytest.mark.parametrize("lo, mid, hi, needle", [
    ({"batch": 1}, {"batch": 1, "img_seq": 4}, {"batch": 1, "img_seq": 4}, "img_seq"),
    ({"batch": 1, "img_seq": 8}, {"batch": 1, "img_seq": 4}, {"batch": 1, "img_seq": 8}, "min <= opt"),
    ({"batch": 1, "img_seq": 4}, {"batch": 3, "img_seq": 4}, {"batch": 2, "img_seq": 4}, "batch"),
    ({"batch": 0, "img_seq": 4}, {"batch": 1, "img_seq": 4}, {"batch": 1, "img_seq": 4}, "batch"),
])
def test_derive_profiles_errors(lo: dict, mid: dict, hi: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        trt_profiles.derive_profiles(SPEC, lo, mid, hi)


def test_dims_helpers() -> None:
    dims = {"batch": 1, "transformer": {"img_seq": 64}, "vae": {"h": 8}}
    assert trt_profiles.dims_for_graph(dims, "transformer") == {"batch": 1, "img_seq": 64}
    assert trt_profiles.dims_for_graph(None, "x") == {}
    assert trt_profiles.fill_dims({}, {"b": 2}, {}) == ({"b": 2}, {"b": 2}, {"b": 2})
    profiles = trt_profiles.derive_profiles(SPEC, {"batch": 1, "img_seq": 16}, {"batch": 1, "img_seq": 64},
                                  {"batch": 2, "img_seq": 256})
    assert trt_profiles.dims_from_profiles(SPEC, profiles, "max") == {"batch": 2, "img_seq": 256}


# -- keys -----------------------------------------------------------------------------------------


def test_plan_key_stable_and_canonical() -> None:
    f = fields()
    assert f.key == fields().key
    assert len(f.key) == 64 and int(f.key, 16) >= 0
    assert trt_plans.plan_key(f.onnx_sha256, f.trt_version, f.compute_capability, Precision.FP16, f.profiles) == f.key
    assert PlanFields.from_dict(json.loads(json.dumps(f.to_dict()))).key == f.key


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "b" * 64}, {"trt_version": "10.13.0.36"}, {"trt_version": "11.0.0"},
    {"compute_capability": "8.9"}, {"precision": "bf16"}, {"precision": "fp32"},
    {"profiles": (ProfileShape("x", (1, 16, 8), (1, 64, 8), (2, 512, 8)),)},
    {"profiles": (ProfileShape("x", (1, 16, 8), (1, 32, 8), (2, 256, 8)),)},
    {"profiles": (ProfileShape("x", (2, 16, 8), (2, 64, 8), (2, 256, 8)),)},
    {"profiles": (ProfileShape("x2", (1, 16, 8), (1, 64, 8), (2, 256, 8)),)},
])
def test_plan_key_sensitive(change: dict) -> None:
    assert fields(**change).key != fields().key


# -- plan cache -----------------------------------------------------------------------------------


def test_save_select_load_roundtrip(tmp_path: Path) -> None:
    f = fields()
    path = trt_plans.save_plan(tmp_path, f, b"PLAN" * 10, graph="transformer")
    assert path.name == f"{f.key}.plan"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["key"] == f.key and side["plan_size"] == 40 and side["graph"] == "transformer"
    found, got = trt_plans.select_plan(tmp_path, f.onnx_sha256, f.trt_version, f.compute_capability)
    assert found == path and got == f
    assert trt_plans.load_plan(path, f) == b"PLAN" * 10
    # precision filter
    with pytest.raises(MismatchError, match="precision"):
        trt_plans.select_plan(tmp_path, f.onnx_sha256, f.trt_version, f.compute_capability, precision="fp32")


@pytest.mark.parametrize("built, needle", [
    ({"trt_version": "10.0.1.6"},
     "built for TensorRT 10.0.1.6 on sm_90; this machine has TensorRT 10.13.0.35 on sm_90"),
    ({"compute_capability": "8.9"},
     "built for TensorRT 10.13.0.35 on sm_89; this machine has TensorRT 10.13.0.35 on sm_90"),
    ({"onnx_sha256": "c" * 64}, "another ONNX graph"),
])
def test_foreign_plan_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             built: dict, needle: str) -> None:
    plan_dir = tmp_path / "bundle" / "plans" / "transformer"
    path = trt_plans.save_plan(plan_dir, fields(**built), b"\x00garbage that is no engine")

    def no_read(self: Path) -> bytes:
        raise AssertionError("plan bytes were read before the sidecar check")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    current = fields()
    with pytest.raises(MismatchError, match=needle) as e:
        trt_plans.load_plan(path, current)
    assert f"rebuild with: l2p build {tmp_path / 'bundle'}" in str(e.value)
    with pytest.raises(MismatchError, match=needle):
        trt_plans.select_plan(plan_dir, current.onnx_sha256, current.trt_version, current.compute_capability)


def test_tampered_plan_is_artifact_error(tmp_path: Path) -> None:
    path = trt_plans.save_plan(tmp_path, fields(), b"PLAN" * 10)
    path.write_bytes(b"PLAN" * 9 + b"PLAX")
    with pytest.raises(ArtifactError, match="sha256") as e:
        trt_plans.load_plan(path, fields())
    assert not isinstance(e.value, MismatchError)
    path.write_bytes(b"PLAN")  # truncated
    with pytest.raises(ArtifactError, match="truncated"):
        trt_plans.load_plan(path, fields())


def test_missing_plan_or_sidecar(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="l2p build"):
        trt_plans.select_plan(tmp_path / "nothing", "a" * 64, "10.13.0.35", "9.0")
    path = trt_plans.save_plan(tmp_path, fields(), b"PLAN")
    path.with_suffix(".json").unlink()
    with pytest.raises(ArtifactError, match="sidecar"):
        trt_plans.load_plan(path, fields())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        trt_plans.select_plan(tmp_path, "a" * 64, "10.13.0.35", "9.0")


def test_select_newest_of_several(tmp_path: Path) -> None:
    old = fields()
    new = fields(profiles=(ProfileShape("x", (1, 16, 8), (1, 64, 8), (4, 256, 8)),))
    trt_plans.save_plan(tmp_path, old, b"OLD", created="2024-01-01T00:00:00Z")
    p_new = trt_plans.save_plan(tmp_path, new, b"NEW", created="2025-01-01T00:00:00Z")
    trt_plans.save_plan(tmp_path, fields(trt_version="9.9"), b"FOREIGN", created="2026-01-01T00:00:00Z")
    path, got = trt_plans.select_plan(tmp_path, old.onnx_sha256, old.trt_version, old.compute_capability)
    assert path == p_new and got == new
    path, got = trt_plans.select_plan(tmp_path, old.onnx_sha256, old.trt_version, old.compute_capability,
                               profiles=old.profiles)
    assert got == old


# -- graph identity and precision -----------------------------------------------------------------


def test_graph_sha256_manifest_and_files_agree(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b", external=True)
    onnx_path = root / "transformer" / "model.onnx"
    assert (root / "transformer" / "model.onnx.data").is_file()
    manifest = json.loads((root / "manifest.json").read_text())
    by_files = trt_plans.graph_sha256(onnx_path)
    assert trt_plans.graph_sha256(onnx_path, root, manifest["files"]) == by_files
    found = bundle_of(onnx_path)
    assert found is not None and found.root == root.resolve()
    assert trt_plans.graph_name_of(found, onnx_path) == "transformer"
    assert bundle_of(tmp_path / "elsewhere" / "x" / "model.onnx") is None
    data = root / "transformer" / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-1] + b"\x01")  # weights change -> identity changes
    assert trt_plans.graph_sha256(onnx_path) != by_files


def test_graph_precision(tmp_path: Path) -> None:
    tiny_onnx(tmp_path / "a.onnx", "float32")
    tiny_onnx(tmp_path / "b.onnx", "float16")
    assert trt_plans.graph_precision(tmp_path / "a.onnx") is Precision.FP32
    assert trt_plans.graph_precision(tmp_path / "b.onnx") is Precision.FP16


def test_build_mode_rules() -> None:
    bm = trt_plans.build_mode
    with pytest.raises(InputError, match="l2p export --precision fp16") as e:
        bm("fp16", "fp32", "11.0.0")
    assert "strongly typed" in str(e.value)
    with pytest.raises(InputError, match="l2p export --precision fp32"):
        bm("fp32", "fp16", "10.13.0")
    assert bm("fp16", "fp16", "11.1.0") == trt_plans.BuildMode(True)
    assert bm(None, "bf16", "10.13.0") == trt_plans.BuildMode(True)
    assert bm("fp32", "fp32", "11.0.0") == trt_plans.BuildMode(True, clear_flags=("TF32",))
    assert bm("fp16", "fp32", "10.13.0") == trt_plans.BuildMode(False, set_flags=("FP16",))
    assert bm("bf16", "fp32", "10.13.0") == trt_plans.BuildMode(False, set_flags=("BF16",))
    assert bm(None, "fp32", "10.13.0") == trt_plans.BuildMode(False, clear_flags=("TF32",))


# -- build_plans argument checks (before TensorRT is needed) -------------------------------------


def test_build_plans_checks_dims_first(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b")
    with pytest.raises(InputError, match="seq"):
        trt_build.build_plans(root, opt_dims={"batch": 1}, progress=False)
    with pytest.raises(InputError, match="img_seq"):
        trt_build.build_plans(root, opt_dims={"batch": 1, "seq": 4, "img_seq": 4}, progress=False)
    with pytest.raises(InputError, match="vae"):
        trt_build.build_plans(root, opt_dims={"batch": 1, "seq": 4, "vae": {"h": 2}}, progress=False)
    with pytest.raises(InputError, match="no graphs"):
        trt_build.build_plans(root, opt_dims={"batch": 1, "seq": 4}, graphs=["vae"], progress=False)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_build_plans_without_tensorrt(tmp_path: Path) -> None:
    root = tiny_bundle(tmp_path / "b")
    with pytest.raises(MissingDependencyError, match=r"pip install 'l2p\[tensorrt\]'"):
        trt_build.build_plans(root, min_dims={"batch": 1, "seq": 1}, max_dims={"batch": 2, "seq": 64},
                       opt_dims={"batch": 1, "seq": 16}, progress=False)


def test_plans_follow_the_bundle_integrity_rules(tmp_path: Path) -> None:
    """Plans under BUNDLE/plans are refused when linked, renamed, oversized or not the sidecar's size,
    before a byte of them is read; plan folders of graph names that are paths are refused."""
    root = tiny_bundle(tmp_path / "b")
    pdir = trt_plans.plans_dir(root, "transformer")
    path = trt_plans.save_plan(pdir, fields(), b"PLAN")
    assert trt_plans.load_plan(path, fields(), max_bytes=4) == b"PLAN"
    with pytest.raises(ArtifactError, match="more than a plan of this graph can be"):
        trt_plans.load_plan(path, fields(), max_bytes=3)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in (path.name, path.with_suffix(".json").name):  # the plan, then its sidecar, linked to a copy outside
        (outside / name).write_bytes((pdir / name).read_bytes())
        (pdir / name).unlink()
        (pdir / name).symlink_to(outside / name)
        with pytest.raises(ArtifactError, match="symbolic link"):
            trt_plans.load_plan(path, fields())
        (pdir / name).unlink()
        (pdir / name).write_bytes((outside / name).read_bytes())
    sidecar = json.loads(path.with_suffix(".json").read_text())
    (pdir / f"{'b' * 64}.json").write_text(json.dumps(sidecar))  # a sidecar under another key's name
    with pytest.raises(ArtifactError, match="does not describe its plan"):
        trt_plans.load_plan(pdir / f"{'b' * 64}.plan", fields())
    (pdir / f"{'b' * 64}.json").unlink()
    path.with_suffix(".json").write_text(json.dumps({**sidecar, "plan_size": 5}))
    with pytest.raises(ArtifactError, match="size and sha256"):
        trt_plans.load_plan(path, fields())
    (root / "plans").rename(outside / "plans")
    (root / "plans").symlink_to(outside / "plans")
    with pytest.raises(ArtifactError, match="'plans' in .* is a symbolic link"):
        trt_plans.plans_dir(root, "transformer")
    for bad in ("../x", "a/b", "..", ""):
        with pytest.raises(ArtifactError, match="cannot name a plan folder"):
            trt_plans.plans_dir(root, bad)
