"""One small runtime interface.

``Engine.run`` validates the feed against the :class:`~l2p.spec.IOSpec` once, then calls the
backend's ``_run``. The sampling loop only ever sees ``Engine``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError, NumericalError
from ..spec import IOSpec


class Engine(ABC):
    """A compiled graph with a fixed :class:`IOSpec`.

    Args:
        name: human-readable name used in messages (e.g. ``"transformer"``).
        spec: the graph's inputs and outputs.
    """

    backend: str = "abstract"

    def __init__(self, name: str, spec: IOSpec) -> None:
        self.name = name
        self.spec = spec
        self.check_finite = False

    def run(self, feed: Mapping[str, np.ndarray], check: bool = True) -> dict[str, np.ndarray]:
        """Run the graph on host arrays; returns ``{output name: array}``.

        ``check=False`` skips feed validation (the loop validates the first call of a run only).
        """
        if check:
            self.spec.check_feed(feed, what=f"{self.name} engine")
        out = self._run(feed)
        if self.check_finite:
            for k, v in out.items():
                if not np.isfinite(v).all():
                    raise NumericalError(
                        f"{self.name} engine ({self.backend}) produced NaN/Inf in output '{k}'"
                    )
        return out

    def run_device(self, feed: Mapping[str, Any], check: bool = True) -> dict[str, Any]:
        """Run the graph on device arrays (cupy); returns device arrays, with no host copies.

        Device backends (``TrtEngine``, ``OrtDeviceEngine``) implement it; host-only engines raise.
        """
        raise InputError(
            f"the {self.name} engine ({type(self).__name__}, backend {self.backend}) runs on host arrays only "
            "and cannot take device arrays; sample on the GPU with --backend tensorrt or onnxruntime-cuda "
            "and --device cuda, or on the CPU with --device cpu"
        )

    @abstractmethod
    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Backend-specific execution; ``feed`` is already validated."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, backend={self.backend!r})"
