"""``l2p serve``: a repository in a temporary folder and a real tritonserver in the foreground."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ..errors import ServerError
from .repository import RepoSettings, write_repository
from .stubenv import site_dirs, stub_environment
from .tritonserver import Ports, TritonServer, backend_directory, find_tritonserver


def l2p_paths() -> list[str]:
    """Where this l2p is imported from, unless the stub's site folders already hold it."""
    root = str(Path(__file__).resolve().parents[2])
    return [] if root in {str(Path(d).resolve()) for d in site_dirs()} else [root]


@contextmanager
def local_server(bundle: str | os.PathLike[str], settings: RepoSettings, ports: Ports, address: str = "127.0.0.1",
                 echo: TextIO | None = None, ready_timeout_s: float = 180.0, stop: threading.Event | None = None,
                 log: Callable[[str], None] = print) -> Iterator[TritonServer]:
    """A ready tritonserver serving ``bundle`` as the model ``l2p``; stopped (no process left) on exit.

    The repository references the bundle in place; the stub runs in :func:`stub_environment`.
    """
    inst = find_tritonserver()
    env = stub_environment(log=log)
    with tempfile.TemporaryDirectory(prefix="l2p-serve-") as tmp:
        repo = write_repository(bundle, Path(tmp) / "repository", settings, copy_bundle=False,
                                python_paths=l2p_paths(), execution_env=str(env))
        server = TritonServer(repo, backend_directory(inst, Path(tmp) / "backends"), inst, ports, address, echo)
        try:
            server.start()
            server.wait_ready(ready_timeout_s, stop)
            yield server
        finally:
            server.stop()


def serve(bundle: str | os.PathLike[str], settings: RepoSettings, ports: Ports, address: str = "127.0.0.1",
          log: Callable[[str], None] = print) -> int:
    """Serve until SIGINT or SIGTERM, then stop the server and its stubs; returns 0."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with local_server(bundle, settings, ports, address, echo=sys.stderr, stop=stop, log=log) as server:
            if not stop.is_set():
                log(f"serving model 'l2p': HTTP {server.http_url}, gRPC {server.grpc_url}, metrics "
                    f"{server.metrics_url}; Ctrl-C or SIGTERM stops it")
            while not stop.is_set() and server.running:
                stop.wait(0.5)
            if not stop.is_set():
                code = server.proc.returncode if server.proc else None
                raise ServerError(f"tritonserver stopped on its own (status {code}): {server.errors()}")
        log("stopped")
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
