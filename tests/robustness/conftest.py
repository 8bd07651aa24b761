"""Fixtures of the robustness tests: the session's tiny FLUX bundle with a scratch folder (``ctx``),
and ``answer``, which records l2p's one-line answer in the test report.

Environment (``tools/robustness.py`` sets them): ``L2P_SOAK=N`` samples in the memory soak
(default 60); ``L2P_ROBUSTNESS_THOROUGH=1`` kills the export only once its first graph is written
(default: as soon as it starts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from .helpers import Ctx


@pytest.fixture()
def ctx(flux_bundle: Path, flux_folder: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path) -> Ctx:
    return Ctx(bundle=flux_bundle, folder=flux_folder, cond=flux_cond, tmp=tmp_path,
               soak=int(os.environ.get("L2P_SOAK", "60")), quick=os.environ.get("L2P_ROBUSTNESS_THOROUGH") != "1")


@pytest.fixture()
def cond_file(tmp_path: Path, flux_cond: dict[str, np.ndarray]) -> Path:
    """The session conditioning (2 rows) as ``tmp_path/cond.npz``."""
    from l2p.atomic import save_npz

    path = tmp_path / "cond.npz"
    save_npz(path, **flux_cond)
    return path


@pytest.fixture()
def bundle(tmp_path: Path, flux_bundle: Path) -> Path:
    """A copy of the session bundle (no predictors) at ``tmp_path/bundle``, free to change."""
    dst = tmp_path / "bundle"
    shutil.copytree(flux_bundle, dst, ignore=shutil.ignore_patterns("predictors"))
    return dst


@pytest.fixture()
def answer(record_property: Callable[[str, object], None]) -> Callable[..., None]:
    """``answer(message, outcome="refused")``: what l2p answered, as the ``message`` and ``outcome``
    properties of the test (``"refused"``: a clear error; ``"ok"``: it coped) in the JUnit XML."""
    def record(message: str, outcome: str = "refused") -> None:
        record_property("outcome", outcome)
        record_property("message", message)
    return record
