"""The handful of exception types l2p raises.

Every message says what was received, what was expected, and what to do. The CLI prints
``error: <message>`` and exits non-zero for any :class:`L2PError`; other exceptions are bugs.
"""

from __future__ import annotations


class L2PError(Exception):
    """Base class: a user-facing error with a one-line explanation."""


class InputError(L2PError, ValueError):
    """Bad user input: wrong shapes, dtypes, names, values or arguments."""


class ArtifactError(L2PError):
    """A bundle, predictor or plan on disk is missing, truncated, tampered with or foreign."""


class MismatchError(ArtifactError):
    """An artifact was made for something else (another bundle, step count, tap, GPU...)."""


class MissingDependencyError(L2PError, ImportError):
    """An optional dependency (extra) is not installed."""


class NumericalError(L2PError, FloatingPointError):
    """An engine produced NaN or Inf."""


class ServerError(L2PError):
    """An external server l2p runs (tritonserver) failed to start or stopped on its own."""


class UnsupportedModelError(L2PError):
    """The model class or configuration is not supported by l2p."""


class BusyError(L2PError):
    """Another process holds the lock on a folder l2p was asked to write."""


def missing_extra(module: str, extra: str, what: str) -> MissingDependencyError:
    """Build the error for an optional dependency that could not be imported."""
    how = f"pip install 'l2p[{extra}]'"
    if extra in ("gpu", "tensorrt"):  # one extra per CUDA major version
        how += f" (CUDA 12), or pip install 'l2p[{extra}-cu13]' (CUDA 13)"
    return MissingDependencyError(f"{what} needs the Python package '{module}', which is not installed; "
                                  f"install it with: {how}")
