"""``l2p triton-repo``: a Triton model repository serving one bundle as the model ``l2p``.

Layout::

    REPO/l2p/config.pbtxt         Python backend, dynamic batching, instance groups, parameters
    REPO/l2p/1/model.py           finds l2p and delegates to l2p.serve.backend
    REPO/l2p/bundle/              the bundle (hard links where the filesystem allows, else copies),
                                  unless the repository references the bundle by absolute path
    REPO/l2p/l2p_repository.json  what made it (l2p may replace a repository that has this file)

The repository is written next to its final place and renamed into it, so a reader never sees
half of it. Mount it into NVIDIA's Triton container as it is (``--model-repository``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..bundle import Bundle, open_bundle
from ..engine.registry import BACKENDS
from ..errors import ArtifactError, InputError
from ..predictor.artifact import Expect, load_predictor
from ..sampling.methods import make_forecaster
from ..sampling.settings import Method, RunSettings, check_guidance
from .contract import MODEL_NAME, TensorDecl, interface
from .jobs import DEFAULT_STEPS

MARKER = "l2p_repository.json"


@dataclass(frozen=True)
class RepoSettings:
    """How the model is served. ``steps`` ``None``: the predictor's step count for ``l2p:NAME``, else 50."""

    method: str = "full"
    full_steps: int | None = None
    steps: int | None = None
    backend: str = "onnxruntime"
    instances: int = 1
    max_batch: int = 8
    threads: int | None = None
    guidance: float = 3.5
    max_queue_delay_us: int = 2000

    @property
    def kind(self) -> str:
        """Instance kind: GPU instances run the device-resident loop of a GPU backend."""
        return "KIND_CPU" if self.backend == "onnxruntime" else "KIND_GPU"


def resolve_steps(bundle: Bundle, settings: RepoSettings) -> int:
    """The default step count, checked with the method (a bad method or predictor fails here, not in Triton)."""
    m = Method.parse(settings.method)
    steps = settings.steps
    if steps is None:
        folder = bundle.predictor_dir(m.name)  # refuses links on the way
        steps = load_predictor(folder, Expect(bundle_hash=bundle.hash)).num_steps \
            if m.kind == "l2p" and folder.is_dir() else DEFAULT_STEPS
    run = RunSettings(steps=steps, method=settings.method, full_steps=settings.full_steps, guidance=settings.guidance)
    make_forecaster(bundle, run, threads=1)
    return run.steps


def check_settings(settings: RepoSettings) -> None:
    if settings.backend not in BACKENDS:
        raise InputError(f"unknown backend '{settings.backend}'; choose one of {sorted(BACKENDS)}")
    if not 1 <= settings.instances <= 64:
        raise InputError(f"--instances {settings.instances} is out of range; use 1..64 (instances per device)")
    if not 1 <= settings.max_batch <= 1024:
        raise InputError(f"--max-batch {settings.max_batch} is out of range; use 1..1024 (requests per batch)")
    if settings.threads is not None and settings.threads < 1:
        raise InputError(f"--threads {settings.threads} is out of range; give a positive thread count")
    check_guidance(settings.guidance)


def _text(value: str) -> str:
    """A protobuf text-format string literal."""
    if any(ord(c) < 32 for c in value):
        raise InputError(f"{value!r} contains control characters; use a plain path or name")
    return json.dumps(value, ensure_ascii=False)


def _decl(t: TensorDecl) -> str:
    dims = ", ".join(str(d) for d in t.dims) or "1"
    extra = (" reshape: { shape: [ ] }" if not t.dims else "") + (" optional: true" if t.optional else "")
    return f'  {{ name: "{t.name}" data_type: {t.dtype} dims: [ {dims} ]{extra} }}'


def config_text(bundle: Bundle, settings: RepoSettings, steps: int, bundle_ref: str,
                params: dict[str, str] | None = None) -> str:
    """``config.pbtxt`` of the model ``l2p``."""
    iface = interface(bundle)
    values = {"l2p_bundle": bundle_ref, "l2p_method": settings.method, "l2p_steps": str(steps),
              "l2p_full_steps": "" if settings.full_steps is None else str(settings.full_steps),
              "l2p_backend": settings.backend, "l2p_threads": "" if settings.threads is None else str(settings.threads),
              "l2p_guidance": repr(float(settings.guidance)), **(params or {})}
    lines = [f'name: "{MODEL_NAME}"', 'backend: "python"', f"max_batch_size: {settings.max_batch}",
             "input [", ",\n".join(_decl(t) for t in iface.inputs), "]",
             "output [", ",\n".join(_decl(t) for t in iface.outputs), "]",
             f"instance_group [ {{ kind: {settings.kind} count: {settings.instances} }} ]",
             f"dynamic_batching {{ max_queue_delay_microseconds: {settings.max_queue_delay_us} }}"]
    lines += [f"parameters: {{ key: {_text(k)} value: {{ string_value: {_text(v)} }} }}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _refuse_links(folder: str, names: list[str]) -> list[str]:
    """``copytree``'s ignore hook: a symbolic link anywhere in the bundle (predictors, plans...) is
    refused, never followed into the repository."""
    for name in names:
        if os.path.islink(os.path.join(folder, name)):
            raise ArtifactError(f"bundle copy: '{os.path.join(folder, name)}' is a symbolic link; l2p does not "
                                "follow links inside a bundle: replace it with the real file or folder")
    return []


def write_repository(bundle_path: str | os.PathLike[str], out: str | os.PathLike[str], settings: RepoSettings,
                     copy_bundle: bool = True, python_paths: Sequence[str] = (),
                     execution_env: str | None = None) -> Path:
    """Write the repository; returns ``out``.

    ``copy_bundle`` False references the bundle by absolute path (a repository for this machine);
    ``python_paths`` go first on the stub's ``sys.path``; ``execution_env`` becomes the backend's
    ``EXECUTION_ENV_PATH`` (both for ``l2p serve``).
    """
    check_settings(settings)
    bundle = open_bundle(bundle_path)
    steps = resolve_steps(bundle, settings)
    out = Path(out)
    if out.exists() and not (out / MODEL_NAME / MARKER).is_file():
        raise InputError(f"--out {out} exists and is not a repository l2p wrote; give a new folder")
    if out.exists():  # replacing deletes the old one: only what l2p wrote may be in it
        extra = sorted({e.name for e in out.iterdir()} - {MODEL_NAME}) + \
            sorted({e.name for e in (out / MODEL_NAME).iterdir()} - {"1", "config.pbtxt", "bundle", MARKER})
        if extra:
            raise InputError(f"--out {out} is a repository l2p wrote, but it now also holds {extra[:5]}; "
                             "replacing it would delete them: move them away or give a new folder")
    params = {"l2p_sys_path": os.pathsep.join(python_paths)} if python_paths else {}
    if execution_env:
        params["EXECUTION_ENV_PATH"] = execution_env
    ref = "bundle" if copy_bundle else str(bundle.root.resolve())
    text = config_text(bundle, settings, steps, ref, params)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model = tmp / MODEL_NAME
        (model / "1").mkdir(parents=True)
        shutil.copyfile(Path(__file__).with_name("triton_model.py"), model / "1" / "model.py")
        (model / "config.pbtxt").write_text(text)
        if copy_bundle:
            shutil.copytree(bundle.root, model / "bundle", copy_function=_link_or_copy, ignore=_refuse_links)
        (model / MARKER).write_text(json.dumps({"bundle": str(bundle.root.resolve()), "bundle_hash": bundle.hash,
                                                "steps": steps, **asdict(settings)}, indent=2) + "\n")
        old = None
        if out.exists():  # a repository we wrote before: swap it out, then delete it
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
