"""``l2p serve`` as users run it: a subprocess that serves until SIGTERM and leaves no process behind;
and the stub check that refuses a stub whose numpy cannot hand over arrays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from l2p.errors import ServerError

from .conftest import ADDRESS, free_ports, needs_tritonserver, request

pytestmark = needs_tritonserver


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in "ZX":
                out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ADDRESS}:{port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_serve(bundle: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, list[int], list[int]]:
    """``l2p serve`` in a subprocess, ready: (process, HTTP port, tritonserver pid, stub pids)."""
    http_port, grpc_port, metrics_port = free_ports()
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "l2p.cli", "serve", str(bundle), "--steps", "3",
                                 "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                                 "--metrics-port", str(metrics_port)], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "TMPDIR": str(log.parent)})  # what a SIGKILL leaves
    deadline = time.monotonic() + 180
    while not ready(http_port) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if not ready(http_port):
        proc.kill()
        proc.wait()
        pytest.fail(log.read_text()[-3000:])
    servers = children(proc.pid)
    assert len(servers) == 1
    stubs = children(servers[0])
    assert stubs  # the model instance's Python-backend stub
    return proc, http_port, servers, stubs


def gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(alive(p) for p in pids)


def test_serve_runs_until_sigterm_and_leaves_nothing(flux_bundle: Path, flux_cond: dict[str, np.ndarray],
                                                    tmp_path: Path) -> None:
    import tritonclient.http as http

    proc, port, servers, stubs = start_serve(flux_bundle, tmp_path / "serve.log")
    try:
        client = http.InferenceServerClient(f"{ADDRESS}:{port}")
        out = client.infer("l2p", request(http, flux_cond, 0, 1)).as_numpy("latents")
        client.close()
        assert out.shape == (1, 16, 16) and np.isfinite(out).all()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "serve.log").read_text()
    assert "serving model 'l2p'" in text and "stopped" in text
    assert gone([*servers, *stubs], 0) and not ready(port)


def test_a_killed_serve_takes_its_server_along(flux_bundle: Path, tmp_path: Path) -> None:
    proc, port, servers, stubs = start_serve(flux_bundle, tmp_path / "serve.log")
    proc.kill()  # SIGKILL: no chance to stop the server itself
    proc.wait()
    assert gone([*servers, *stubs], 40) and not ready(port)


def test_a_stub_with_numpy_2_is_refused_with_a_clear_message(flux_bundle: Path, tmp_path: Path) -> None:
    """Without the stub environment the stub runs this interpreter's numpy; under numpy 2 the
    model refuses to load (instead of serving wrong arrays) and says what to do."""
    from l2p.serve.local import l2p_paths
    from l2p.serve.repository import RepoSettings, write_repository
    from l2p.serve.tritonserver import Ports, TritonServer, backend_directory, find_tritonserver

    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("this interpreter has numpy<2: its stub hands arrays over correctly")
    if os.environ.get("VIRTUAL_ENV") or sys.prefix != sys.base_prefix:
        pytest.skip("in a virtualenv the stub without its environment cannot import l2p's dependencies")
    inst = find_tritonserver()
    repo = write_repository(flux_bundle, tmp_path / "repo", RepoSettings(steps=3), copy_bundle=False,
                            python_paths=l2p_paths())
    with TritonServer(repo, backend_directory(inst, tmp_path / "backends"), inst, Ports(*free_ports())) as server:
        with pytest.raises(ServerError, match="cannot exchange arrays with numpy 2"):
            server.wait_ready(120)
