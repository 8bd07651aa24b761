"""Find NVIDIA's ``tritonserver`` binary, start it on a model repository, stop it leaving nothing behind.

Where the binary comes from, in order: the ``nvidia-pytriton`` wheel (it ships Triton 2.51 with the
Python backend and a stub per Python version; its libraries folder and this interpreter's
``libpython`` go on ``LD_LIBRARY_PATH``), or a ``tritonserver`` on ``PATH`` with a ``backends/``
folder next to its ``bin/`` (NVIDIA's containers). The server runs in a session of its own; its
Python-backend stubs are its children in that session, so stopping it (SIGTERM, then SIGKILL to
the session's process group) leaves no process behind.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import InputError, MissingDependencyError, ServerError

INSTALL_HINT = ("install NVIDIA Triton Inference Server's binary with `pip install --no-deps nvidia-pytriton==0.7.0` "
                "(--no-deps keeps your numpy) and the clients with `pip install 'l2p[serve]'`, or run in NVIDIA's "
                "Triton container")


@dataclass(frozen=True)
class Installation:
    """A tritonserver binary and what it needs to serve a Python-backend model."""

    binary: Path
    lib_dirs: tuple[Path, ...] = ()  # prepended to LD_LIBRARY_PATH
    backends: Path | None = None  # a complete backends folder (containers)
    python_backend: Path | None = None  # libtriton_python.so + triton_python_backend_utils.py (wheel)
    stub: Path | None = None  # triton_python_backend_stub for this Python (wheel)


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def __post_init__(self) -> None:
        given = {"--http-port": self.http, "--grpc-port": self.grpc, "--metrics-port": self.metrics}
        bad = [f"{k} {v}" for k, v in given.items() if not 1 <= v <= 65535]
        if bad or len(set(given.values())) < 3:
            raise InputError(f"ports {', '.join(f'{k} {v}' for k, v in given.items())}: give three different "
                             "ports in 1..65535")


def free_ports(n: int = 3, address: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``address`` now (bound together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((address, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def python_lib_dir() -> Path:
    """The folder holding this interpreter's shared ``libpythonX.Y.so.1.0`` (the stub links it)."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname or not (Path(libdir) / soname).is_file():
        raise MissingDependencyError(
            f"Triton's Python backend stub links libpython{sys.version_info[0]}.{sys.version_info[1]}.so, which this "
            f"interpreter ({sys.executable}) does not have (built without --enable-shared); use a Python with a "
            "shared libpython (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared) or NVIDIA's Triton container")
    return Path(libdir)


def find_tritonserver() -> Installation:
    """The tritonserver to run (see the module docstring); a clear error naming what to install."""
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
        if (root / "bin" / "tritonserver").is_file():
            version = f"{sys.version_info[0]}.{sys.version_info[1]}"
            stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
            if not stub.is_file():
                have = sorted(p.name for p in (root / "python_backend_stubs").iterdir())
                raise MissingDependencyError(f"nvidia-pytriton ships Python backend stubs for Python {have}, "
                                             f"not {version}; serve from one of those Pythons")
            libs = root.parent.parent / "nvidia_pytriton.libs"
            return Installation(root / "bin" / "tritonserver", (libs, python_lib_dir()),
                                python_backend=root / "backends" / "python", stub=stub)
    exe = shutil.which("tritonserver")
    if exe is not None:
        backends = Path(exe).resolve().parent.parent / "backends"
        if (backends / "python" / "libtriton_python.so").is_file():
            return Installation(Path(exe), backends=backends)
    raise MissingDependencyError(f"l2p serve needs NVIDIA Triton Inference Server: {INSTALL_HINT}")


def backend_directory(inst: Installation, dest: Path) -> Path:
    """A ``--backend-directory`` whose ``python/`` holds the backend and the stub for this Python."""
    if inst.backends is not None:
        return inst.backends
    assert inst.python_backend is not None and inst.stub is not None
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(inst.python_backend / name, py / name)
    shutil.copy2(inst.stub, py / "triton_python_backend_stub")
    return dest


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it dies (even by SIGKILL)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class TritonServer:
    """One tritonserver process serving ``repository`` on ``address`` (a context manager).

    Its output is kept (the last lines, for error messages) and copied to ``echo`` if given. On
    Linux the server gets SIGTERM when the thread that started it dies, so a killed ``l2p serve``
    does not leave it running: start it from a thread that outlives it (the main thread).
    """

    def __init__(self, repository: Path, backends: Path, inst: Installation, ports: Ports = Ports(),
                 address: str = "127.0.0.1", echo: TextIO | None = None, exit_timeout_s: int = 10) -> None:
        self.repository, self.backends, self.inst = repository, backends, inst
        self.ports, self.address, self.echo, self.exit_timeout_s = ports, address, echo, exit_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self._reader: threading.Thread | None = None
        # the Python backend's shared-memory regions: named so that stop() can remove what a forced exit
        # leaves (Triton exits without cleaning up when its exit timeout expires, e.g. on idle client connections)
        self.shm_prefix = f"l2p_triton_{os.getpid()}_{secrets.token_hex(4)}_"

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        a, p = self.address, self.ports
        return [str(self.inst.binary), "--model-repository", str(self.repository),
                "--backend-directory", str(self.backends), "--disable-auto-complete-config",
                "--http-address", a, "--http-port", str(p.http), "--grpc-address", a, "--grpc-port", str(p.grpc),
                "--allow-metrics", "true", "--allow-gpu-metrics", "false", "--metrics-address", a,
                "--metrics-port", str(p.metrics), "--exit-timeout-secs", str(self.exit_timeout_s),
                "--backend-config", f"python,shm-region-prefix-name={self.shm_prefix}"]

    def start(self) -> None:
        env = dict(os.environ)
        if self.inst.lib_dirs:
            paths = [str(d) for d in self.inst.lib_dirs] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
            env["LD_LIBRARY_PATH"] = ":".join(paths)
        self.proc = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self._reader = threading.Thread(target=self._read, name="tritonserver-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail.append(line)
            if self.echo is not None:
                self.echo.write(line)
                self.echo.flush()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def errors(self) -> str:
        """The gist of the server's error log lines, one line: why the model failed to load if it
        did, else the last errors."""
        lines = [ln.partition("] ")[2].strip().strip('"').split("\\n")[0]  # Triton escapes tracebacks in
                 for ln in self.tail if ln[:1] == "E" and ln[1:5].isdigit()]  # E<mmdd> lines: errors
        load = [ln for ln in lines if ln.startswith("failed to load")]
        return " | ".join(load[-1:] or lines[-2:]) or "no error in its log"

    def wait_ready(self, timeout_s: float = 120.0, stop: threading.Event | None = None) -> None:
        """Poll ``/v2/health/ready`` until it answers 200; raise if the server exits or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            if not self.running:
                code = None if self.proc is None else self.proc.returncode
                raise ServerError(f"tritonserver exited with status {code} before it was ready: {self.errors()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        if stop is None or not stop.is_set():
            raise ServerError(f"tritonserver was not ready after {timeout_s:.0f} s: {self.errors()}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (Triton finishes in-flight requests and unloads the model), then SIGKILL to the
        whole process group if anything is left; returns the server's exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # the session's process group: the server and its stubs (a no-op when all are gone)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        return code

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
