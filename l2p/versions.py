"""The versions a run depends on: l2p (package metadata, else ``l2p.__version__``), ONNX Runtime,
numpy and Python. Recorded in ``run.json`` and printed by ``l2p --version``. Torch-free."""

from __future__ import annotations

import platform
from importlib import metadata


def l2p_version() -> str:
    """The installed distribution's version, or ``l2p.__version__`` when l2p runs from a source tree."""
    try:
        return metadata.version("l2p")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def versions() -> dict[str, str]:
    """``{"l2p": ..., "onnxruntime": ..., "numpy": ..., "python": ...}`` of this process."""
    import numpy
    import onnxruntime

    return {"l2p": l2p_version(), "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}
