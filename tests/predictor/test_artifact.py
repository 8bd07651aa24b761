"""The predictor folder: round trip, write order, integrity checks and mismatch messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import l2p.atomic
from l2p.atomic import save_npz, sha256_file
from l2p.engine import open_engine
from l2p.errors import ArtifactError, MismatchError
from l2p.predictor.artifact import Expect, load_predictor, save_predictor
from l2p.predictor.presets import preset
from l2p.predictor.schedule import interval_schedule
from l2p.predictor.table import CoefficientTable
from l2p.spec import TensorSpec

N, C = 12, 4
BUNDLE = "b" * 64
SCHEDULER = "s" * 64
FEATURE = TensorSpec("output", "float32", ("batch", "seq", C))


def make(root: Path, table: CoefficientTable | None = None, **over) -> Path:
    table = table or preset("taylorseer2", interval_schedule(N, 5, 1), N)
    args = dict(table=table, feature_spec=FEATURE, name="ts2", method="taylorseer2", tap="output",
                bundle_hash=BUNDLE, scheduler_hash=SCHEDULER, fit_stats={"residual": [0.1, 0.2], "ridge": 1e-3},
                created_by={"command": "l2p calibrate"})
    args.update(over)
    save_predictor(root, **args)
    return root


def edit_manifest(root: Path, fn) -> None:
    m = json.loads((root / "predictor.json").read_text())
    fn(m)
    (root / "predictor.json").write_text(json.dumps(m))


def test_round_trip_and_engine(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sched = interval_schedule(N, 5, 1)
    W, U, V = np.zeros((N, 2)), np.zeros((N, 2)), np.zeros(N)
    for i in range(N):
        if i not in sched:
            h = min(2, sum(s < i for s in sched))
            W[i, :h], U[i, :h], V[i] = rng.standard_normal(h), rng.standard_normal(h), rng.standard_normal()
    table = CoefficientTable(W, U, V, sched, 2, True)
    root = make(tmp_path / "p", table, method="l2p", name="l2p-k2",
                latent_spec=TensorSpec("latent", "float32", ("batch", "seq", C)))
    p = load_predictor(root, Expect(bundle_hash=BUNDLE, steps=N, tap="output", scheduler_hash=SCHEDULER))
    assert (p.name, p.method, p.tap, p.K, p.num_steps, p.schedule) == ("l2p-k2", "l2p", "output", 2, N, sched)
    assert p.uses_latents and p.bundle_hash == BUNDLE and p.scheduler_hash == SCHEDULER
    assert p.fit_stats == {"residual": [0.1, 0.2], "ridge": 1e-3}
    for key in "WUV":
        got = getattr(p.table, key)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, getattr(table, key))  # float64 kept exactly
    manifest = json.loads((root / "predictor.json").read_text())
    assert manifest["format"] == "l2p-predictor" and manifest["format_version"] == 1
    assert manifest["coefficient_dtype"]["onnx"] == "float32"
    engine = open_engine("onnxruntime", p.onnx_path, p.io_spec, name="predictor", threads=1)
    feed = p.io_spec.sample_inputs({"batch": 1, "seq": 3})
    feed |= {"step": np.array([2], np.int64), "perm": np.array([1, 0], np.int64)}
    assert engine.run(feed)["feature"].shape == (1, 3, C)


def test_manifest_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real = os.replace

    def spy(src, dst):  # atomic_open renames each finished file into place
        order.append(Path(dst).name)
        return real(src, dst)

    monkeypatch.setattr(l2p.atomic.os, "replace", spy)
    make(tmp_path / "p")
    assert order[-1] == "predictor.json"
    assert sorted(order[:-1]) == ["coefficients.npz", "io_spec.json", "predictor.onnx"]


def test_overwrite_removes_manifest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make(tmp_path / "p")
    import l2p.predictor.artifact as art

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(art, "write_bytes", boom)
    with pytest.raises(RuntimeError):
        make(root)
    with pytest.raises(ArtifactError, match="not a predictor"):
        load_predictor(root)


def test_not_a_predictor(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no predictor.json"):
        load_predictor(tmp_path)


@pytest.mark.parametrize("name", ["coefficients.npz", "predictor.onnx", "io_spec.json"])
def test_truncated_and_tampered_files(tmp_path: Path, name: str) -> None:
    root = make(tmp_path / "p")
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        load_predictor(root)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    (root / name).write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="sha256"):
        load_predictor(root)
    (root / name).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_predictor(root)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(surprise=1), r"unknown keys \['surprise'\]"),
        (lambda m: m.pop("tap"), r"lacks keys \['tap'\]"),
        (lambda m: m.update(format="l2p-bundle"), "format"),
        (lambda m: m.update(format_version=2), "upgrade l2p"),
        (lambda m: m.update(K="3"), "invalid values"),
        (lambda m: m.update(schedule=[0, 3]), "schedule"),
        (lambda m: m["files"].pop("io_spec.json"), "lists files"),
    ],
)
def test_bad_manifest(tmp_path: Path, edit, match: str) -> None:
    root = make(tmp_path / "p")
    edit_manifest(root, edit)
    with pytest.raises(ArtifactError, match=match):
        load_predictor(root)


def test_garbage_manifest(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    (root / "predictor.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_predictor(root)


def _replace_npz(root: Path, **arrays: np.ndarray) -> None:
    """Rewrite coefficients.npz and fix its hash, as a careless tool would."""
    save_npz(root / "coefficients.npz", **arrays)
    path = root / "coefficients.npz"
    edit_manifest(root, lambda m: m["files"].update(
        {"coefficients.npz": {"sha256": sha256_file(path), "size": path.stat().st_size}}))


def test_npz_contents_checked(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    p = load_predictor(root)
    K = p.K
    _replace_npz(root, W=np.zeros((N, K + 1)), U=np.zeros((N, K + 1)), V=np.zeros(N))
    with pytest.raises(ArtifactError, match=r"\['W'\] is float64\[12, 4\], expected float64\[12, 3\]"):
        load_predictor(root)
    _replace_npz(root, W=p.table.W.astype(np.float32), U=p.table.U, V=p.table.V)
    with pytest.raises(ArtifactError, match="float32"):
        load_predictor(root)
    _replace_npz(root, W=p.table.W, U=p.table.U)
    with pytest.raises(ArtifactError, match="holds"):
        load_predictor(root)
    bad = p.table.W.copy()
    bad[0, 0] = 1.0  # weight on a computed step
    _replace_npz(root, W=bad, U=p.table.U, V=p.table.V)
    with pytest.raises(ArtifactError, match="invalid coefficients"):
        load_predictor(root)


def test_pickled_npz_is_refused(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    path = root / "coefficients.npz"
    with open(path, "wb") as f:
        np.savez(f, W=np.array([{"x": 1}], dtype=object), U=np.zeros(1), V=np.zeros(1))
    edit_manifest(root, lambda m: m["files"].update(
        {"coefficients.npz": {"sha256": sha256_file(path), "size": path.stat().st_size}}))
    with pytest.raises(ArtifactError, match="cannot read"):
        load_predictor(root)


def test_mismatch_messages(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(bundle_hash="c" * 64))
    msg = str(e.value)
    assert "calibrated for bundle bbbbbbbbbbbb" in msg and "cccccccccccc" in msg and "--method taylorseer2" in msg
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(steps=50))
    msg = str(e.value)
    assert f"{N} steps" in msg and "50 steps were asked" in msg and "--steps 50 --full-steps 5" in msg
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(tap="block7"))
    assert "tap 'output'" in str(e.value) and "'block7'" in str(e.value) and "--method taylorseer2" in str(e.value)
    with pytest.raises(MismatchError, match="scheduler config"):
        load_predictor(root, Expect(scheduler_hash="d" * 64))
    assert isinstance(e.value, ArtifactError)  # MismatchError is an ArtifactError


def test_budget_and_feature_mismatches(tmp_path: Path) -> None:
    root = make(tmp_path / "p")  # 12 steps, 5 computed, tap "output" of shape (batch, seq, 4)
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(steps=N, full_steps=6))
    assert "6 full steps were asked" in str(e.value) and "drop --full-steps" in str(e.value)
    wider = TensorSpec("output", "float32", ("batch", "seq", C + 1))
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(features=(wider,)))
    assert f"forecasts tap 'output' as float32['batch', 'seq', {C}]" in str(e.value) and "float32['batch', 'seq', 5]" in str(e.value)
    with pytest.raises(MismatchError, match="has none"):
        load_predictor(root, Expect(features=(TensorSpec("residual", "float32", ("batch", "seq", C)),)))
    ok = load_predictor(root, Expect(bundle_hash=BUNDLE, scheduler_hash=SCHEDULER, steps=N, full_steps=5,
                                     tap="output", features=(FEATURE,)))
    assert ok.schedule == interval_schedule(N, 5, 1)


def test_scheduler_hash_of_older_predictors(tmp_path: Path) -> None:
    """Predictors written before the scheduler config had its own hash hold the bundle hash there,
    which pins the scheduler config too: they stay usable with their bundle."""
    root = make(tmp_path / "p", scheduler_hash=BUNDLE)
    assert load_predictor(root, Expect(bundle_hash=BUNDLE, scheduler_hash="d" * 64)).scheduler_hash == BUNDLE
    with pytest.raises(MismatchError, match="bbbbbbbbbbbb"):
        load_predictor(root, Expect(bundle_hash="c" * 64, scheduler_hash="d" * 64))


def test_save_rejects_bad_settings(tmp_path: Path) -> None:
    from l2p.errors import InputError

    with pytest.raises(InputError, match="JSON"):
        make(tmp_path / "p", fit_stats={"x": object()})
    with pytest.raises(InputError, match="name"):
        make(tmp_path / "q", name="")


def test_cfg_mismatch_refused_with_remake_command(tmp_path: Path) -> None:
    """A predictor records the classifier-free guidance it was calibrated under; another scale or
    forecast mode is refused in one line naming the calibrate command that makes a matching one."""
    root = make(tmp_path / "g", method="l2p", name="guided", cfg_scale=7.0, cfg_forecast="guided")
    p = load_predictor(root, Expect(cfg_scale=7.0, cfg_forecast="guided"))
    assert (p.cfg_scale, p.cfg_forecast) == (7.0, "guided")
    assert json.loads((root / "predictor.json").read_text())["cfg"] == {"scale": 7.0, "forecast": "guided"}
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(cfg_scale=4.0, cfg_forecast="guided"))
    msg = str(e.value)
    assert "\n" not in msg and "--cfg-scale 7" in msg and "--cfg-scale 4 was asked" in msg
    assert f"l2p calibrate BUNDLE --steps {N} --full-steps 5 --tap output --name guided --cfg-scale 4" in msg
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(cfg_scale=1.0))  # guidance off
    assert "--cfg-scale 1 was asked" in str(e.value)
    with pytest.raises(MismatchError) as e:
        load_predictor(root, Expect(cfg_scale=7.0, cfg_forecast="branches"))
    assert "--cfg-forecast branches was asked" in str(e.value) and "--cfg-scale 7 --cfg-forecast branches" in str(e.value)


def test_predictor_without_cfg_record_is_unguided(tmp_path: Path) -> None:
    """Predictors made before l2p had CFG have no ``cfg`` key: they were calibrated unguided."""
    root = make(tmp_path / "old")
    edit_manifest(root, lambda m: m.pop("cfg"))
    assert load_predictor(root, Expect(cfg_scale=1.0, cfg_forecast="branches")).cfg_scale == 1.0
    with pytest.raises(MismatchError, match="--cfg-scale 4.5 was asked"):
        load_predictor(root, Expect(cfg_scale=4.5))
    edit_manifest(root, lambda m: m.update(cfg={"scale": 0.5, "forecast": "guided"}))
    with pytest.raises(ArtifactError, match="invalid values for \\['cfg'\\]"):
        load_predictor(root)
