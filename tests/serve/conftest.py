"""Fixtures for serving tests: a real tritonserver on free loopback ports, tritonclient helpers."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2p.errors import L2PError
from l2p.serve.tritonserver import free_ports  # noqa: F401  (the tests' ports)

ADDRESS = "127.0.0.1"
STEPS = 6  # the served default; tests pass it to ``l2p sample`` too


def why_no_server() -> str | None:
    """Why the serving tests cannot run here (``None``: they can)."""
    try:
        for module in ("tritonclient.grpc", "tritonclient.http"):
            importlib.import_module(module)
    except ImportError:
        return "tritonclient is not installed: pip install 'l2p[serve]'"
    from l2p.serve.tritonserver import find_tritonserver

    try:
        find_tritonserver()
    except L2PError as e:
        return f"no tritonserver: {e}"
    return None


_WHY = why_no_server()
needs_tritonserver = pytest.mark.skipif(_WHY is not None, reason=str(_WHY))


def request(mod: Any, cond: dict[str, np.ndarray], rows: int | slice, seed: int, **options: Any) -> list[Any]:
    """Inputs of one request (``mod``: tritonclient.http or tritonclient.grpc): conditioning ``rows``
    (an int: that row, batch 1), ``seed`` and options."""
    from l2p.serve.client import infer_inputs, request_arrays

    sel = slice(rows, rows + 1) if isinstance(rows, int) else rows
    return infer_inputs(mod, request_arrays(seed, {k: v[sel] for k, v in cond.items()}, **options))


@contextmanager
def running_server(bundle: Path, tmp: Path) -> Iterator[Any]:
    """tritonserver on a repository written as ``l2p triton-repo`` writes it (bundle linked inside,
    referenced by a relative path), with the stub environment and l2p path ``l2p serve`` adds."""
    from l2p.serve.local import l2p_paths
    from l2p.serve.repository import RepoSettings, write_repository
    from l2p.serve.stubenv import stub_environment
    from l2p.serve.tritonserver import Ports, TritonServer, backend_directory, find_tritonserver

    inst = find_tritonserver()
    repo = write_repository(bundle, tmp / "repo", RepoSettings(steps=STEPS, max_batch=8), copy_bundle=True,
                            python_paths=l2p_paths(), execution_env=str(stub_environment(log=lambda s: None)))
    with ExitStack() as stack:
        srv = stack.enter_context(TritonServer(repo, backend_directory(inst, tmp / "backends"), inst,
                                               Ports(*free_ports()), ADDRESS))
        srv.wait_ready(180)
        yield srv


@pytest.fixture(scope="module")
def server(flux_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """tritonserver serving the tiny FLUX bundle (see :func:`running_server`)."""
    with running_server(flux_bundle, tmp_path_factory.mktemp("triton")) as srv:
        yield srv
