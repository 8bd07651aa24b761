"""Built-in model names: ``tiny-sd3`` resolves like ``tiny-flux``, and an absent folder is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from l2p import models
from l2p.cli import main
from l2p.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def test_builtin_names_point_into_the_package_assets() -> None:
    assert models.BUILTIN["tiny-flux"] == REPO / "l2p" / "assets" / "tiny-flux"
    assert models.BUILTIN["tiny-sd3"] == REPO / "l2p" / "assets" / "tiny-sd3"
    for name in models.BUILTIN:
        assert (REPO / models.BUILTIN_TRAINER[name]).is_file()


def test_present_builtin_resolves_to_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    monkeypatch.setitem(models.BUILTIN, "tiny-sd3", tmp_path)
    assert models.resolve_model("tiny-sd3") == tmp_path
    assert models.builtin_model_of({"export_config": {"source": "tiny-sd3"}}) == "tiny-sd3"


def test_absent_builtin_names_the_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(models.BUILTIN, "tiny-sd3", tmp_path / "tiny-sd3")
    with pytest.raises(InputError, match=r"built-in model 'tiny-sd3' is not present.*tools/train_tiny_sd3\.py"):
        models.resolve_model("tiny-sd3")
    assert main(["export", "tiny-sd3", "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tools/train_tiny_sd3.py" in err[0], err
    assert not (tmp_path / "bundle").exists()
