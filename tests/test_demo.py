"""``l2p demo`` on the built-in model: export, sample, check, grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from l2p.models import BUILTIN

pytestmark = pytest.mark.skipif(not (BUILTIN["tiny-flux"] / "model_index.json").is_file(),
                                reason="the built-in tiny model is not in this checkout")


def test_demo_full_compute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from l2p.cli import main

    assert main(["demo", "--out", str(tmp_path), "--steps", "20", "--no-compare"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    assert "checker:" in out and str(tmp_path / "grid.png") in out
    assert (tmp_path / "bundle" / "manifest.json").is_file()


@pytest.mark.slow
def test_demo_with_cached_methods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from l2p.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "compare.png").is_file()
    assert "l2p" in out and "taylorseer2" in out and "fora" in out
