"""Fixtures for serving tests: a real tritonserver on free loopback ports, tritonclient helpers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2p.errors import L2PError

ADDRESS = "127.0.0.1"
STEPS = 6  # the served default; tests pass it to ``l2p sample`` too


def why_no_server() -> str | None:
    """Why the serving tests cannot run here (``None``: they can)."""
    try:
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401
    except ImportError:
        return "tritonclient is not installed: pip install 'l2p[serve]'"
    from l2p.serve.tritonserver import find_tritonserver

    try:
        find_tritonserver()
    except L2PError as e:
        return f"no tritonserver: {e}"
    return None


needs_tritonserver = pytest.mark.skipif(why_no_server() is not None, reason=str(why_no_server()))


def free_ports(n: int = 3) -> list[int]:
    """``n`` distinct free TCP ports on the loopback address (bound together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((ADDRESS, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def request(mod: Any, cond: dict[str, np.ndarray], rows: int | slice, seed: int, **options: Any) -> list[Any]:
    """Inputs of one request (``mod``: tritonclient.http or tritonclient.grpc): conditioning ``rows``
    (an int: that row, batch 1), ``seed`` and options; wire types follow the numpy dtypes."""
    from tritonclient.utils import np_to_triton_dtype

    sel = slice(rows, rows + 1) if isinstance(rows, int) else rows
    arrays = {k: v[sel] for k, v in cond.items()}
    n = next(iter(arrays.values())).shape[0] if arrays else 1  # Triton wants one batch size for all inputs
    arrays["seed"] = np.full((n, 1), seed, np.int64)
    types = {"steps": np.int32, "full_steps": np.int32, "cfg_scale": np.float32, "method": np.object_}
    for k, v in options.items():
        arrays[k] = np.full((n, 1), v.encode() if isinstance(v, str) else v, dtype=types[k])
    inputs = []
    for name, a in arrays.items():
        i = mod.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype))
        i.set_data_from_numpy(a)
        inputs.append(i)
    return inputs


@pytest.fixture(scope="module")
def server(flux_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """tritonserver on a repository written as ``l2p triton-repo`` writes it (bundle linked inside,
    referenced by a relative path), with the stub environment and l2p path ``l2p serve`` adds."""
    from l2p.serve.local import l2p_paths
    from l2p.serve.repository import RepoSettings, write_repository
    from l2p.serve.stubenv import stub_environment
    from l2p.serve.tritonserver import Ports, TritonServer, backend_directory, find_tritonserver

    tmp = tmp_path_factory.mktemp("triton")
    inst = find_tritonserver()
    repo = write_repository(flux_bundle, tmp / "repo", RepoSettings(steps=STEPS, max_batch=8), copy_bundle=True,
                            python_paths=l2p_paths(), execution_env=str(stub_environment(log=lambda s: None)))
    with ExitStack() as stack:
        srv = stack.enter_context(TritonServer(repo, backend_directory(inst, tmp / "backends"), inst,
                                               Ports(*free_ports()), ADDRESS))
        srv.wait_ready(180)
        yield srv
