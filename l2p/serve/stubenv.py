"""The Python environment Triton's Python-backend stub runs in under ``l2p serve``.

Two facts about the stub (``triton_python_backend_stub``, Triton 2.51 from the
``nvidia-pytriton`` wheel) shape this:

- It embeds Python in isolated mode: ``PYTHONPATH`` is ignored and ``sys.prefix`` comes from the
  first ``python3`` on ``PATH``. The backend's ``EXECUTION_ENV_PATH`` parameter sources
  ``ENV/bin/activate`` first, so with a virtual environment there the stub gets that
  environment's ``sys.path``.
- It was built with a pybind11 that reads numpy-1 array descriptors: under numpy 2 every array
  it hands over is wrong (see :func:`l2p.serve.backend.check_stub_numpy`).

So the stub gets a small virtual environment of its own: it sees this interpreter's packages
(``--system-site-packages`` plus the running environment's site folders), with ``numpy<2``
installed in front when this interpreter has numpy 2. It is built once per interpreter and
cached (``$L2P_CACHE_DIR``, else ``$XDG_CACHE_HOME/l2p``, else ``~/.cache/l2p``); installing
numpy needs pip and the package index the first time.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import site
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..errors import MissingDependencyError

STUB_NUMPY = "numpy>=1.24,<2"
MARKER = "l2p_stub_env.json"  # written last: the environment is complete
PARTIAL = ".l2p_partial"  # written first: a folder l2p started to build (and may rebuild)


def cache_dir() -> Path:
    """Where l2p caches things it can rebuild."""
    if os.environ.get("L2P_CACHE_DIR"):
        return Path(os.environ["L2P_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l2p"


def needs_old_numpy() -> bool:
    return int(np.__version__.split(".")[0]) >= 2


def site_dirs() -> list[str]:
    """The running environment's site folders (a virtualenv's too)."""
    return [d for d in (*site.getsitepackages(), site.getusersitepackages()) if Path(d).is_dir()]


def stub_environment(root: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """The stub's environment for this interpreter (built on first use); returns its folder."""
    key = hashlib.sha256(f"{sys.prefix}|{sys.executable}|{sys.version}".encode()).hexdigest()[:12]
    env = (root or cache_dir()) / "triton-stub-env" / f"py{sys.version_info[0]}.{sys.version_info[1]}-{key}"
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another l2p serve may be building the same one
        if (env / MARKER).is_file():
            return env
        if env.exists():
            if not (env / PARTIAL).exists():
                raise MissingDependencyError(f"{env} exists but l2p did not make it; move it away or set L2P_CACHE_DIR")
            shutil.rmtree(env)  # an interrupted build of ours
        _build(env, log)
    return env


def _build(env: Path, log: Callable[[str], None]) -> None:
    log(f"building the Triton stub environment {env} (once)")
    env.mkdir()
    (env / PARTIAL).touch()
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(env)
    site_packages = env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    # this interpreter's site folders after the environment's own (its numpy<2 stays in front)
    lines = [f"import site; site.addsitedir({d!r})" for d in site_dirs()]
    (site_packages / "_l2p_site.pth").write_text("\n".join(lines) + "\n")
    if needs_old_numpy():
        log(f"installing {STUB_NUMPY} for the stub (it cannot hand over numpy {np.__version__} arrays)")
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--target", str(site_packages), STUB_NUMPY]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise MissingDependencyError(
                f"could not install {STUB_NUMPY} for Triton's Python backend stub ({tail}); run `{' '.join(cmd)}` "
                "by hand where the package index is reachable, then start again")
    write_json(env / MARKER, {"python": sys.version, "executable": sys.executable,
                              "numpy": "<2" if needs_old_numpy() else np.__version__})
    (env / PARTIAL).unlink()
