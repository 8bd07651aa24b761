"""The context every robustness case runs in: the session's tiny FLUX bundle and a scratch folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .catalog import Ctx


@pytest.fixture()
def ctx(flux_bundle: Path, flux_folder: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path) -> Ctx:
    return Ctx(bundle=flux_bundle, folder=flux_folder, cond=flux_cond, tmp=tmp_path, soak=60)
