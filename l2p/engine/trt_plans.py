"""TensorRT plans without TensorRT: the key of everything a plan depends on, the plan cache,
graph identity and the precision rules. Pure Python (numpy, onnx): tested on CPU with the
"current" environment injected; the build itself is :mod:`l2p.engine.trt_build`.

Cache layout (plans are tied to the TensorRT version and the GPU, so both are in the key)::

    BUNDLE/plans/<graph>/<key>.plan    serialized engine
    BUNDLE/plans/<graph>/<key>.json    sidecar: the key's fields + plan sha256 and size (written last)

Plans get the integrity rules of the rest of the bundle before TensorRT deserializes a byte:
no symbolic links on the way (``plans``, ``plans/<graph>``, the files), regular files only, the
sidecar named after the key of its own fields, whose ``onnx_sha256`` must be the bundle
manifest's graph hash (so a plan belongs to exactly this bundle graph), the plan's size checked
against the sidecar and :func:`max_plan_bytes` before reading, its sha256 against the sidecar
after. The runtime refuses plans that carry host code (``engine_host_code_allowed = False``).

``key = sha256(canonical JSON of onnx_sha256, trt_version, compute_capability, precision,
profiles)``.

Precision: on TensorRT >= 11 every network is strongly typed, so precision comes from the ONNX
graph; on TensorRT 10, fp16/bf16 graphs are built strongly typed and fp32 graphs weakly typed
with builder flags (see :func:`build_mode`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import sha256_file, write_bytes, write_json
from ..bundle import Bundle
from ..errors import ArtifactError, InputError, MismatchError
from ..safe_io import open_regular, read_json, safe_relpath
from ..precision import Precision
from .trt_profiles import ProfileShape, profiles_json

PLAN_FORMAT = "l2p-trt-plan"
PLAN_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# plan keys and the plan cache


def plan_key(
    onnx_sha256: str, trt_version: str, compute_capability: str, precision: Precision | str,
    profiles: Sequence[ProfileShape],
) -> str:
    """sha256 of the canonical JSON of everything a TensorRT plan depends on."""
    blob = {
        "format": f"{PLAN_FORMAT}/{PLAN_FORMAT_VERSION}",
        "onnx_sha256": onnx_sha256,
        "trt_version": str(trt_version),
        "compute_capability": str(compute_capability),
        "precision": Precision.parse(precision).value,
        "profiles": profiles_json(profiles),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class PlanFields:
    """The fields of a plan key (what the plan was built from and for)."""

    onnx_sha256: str
    trt_version: str
    compute_capability: str
    precision: str
    profiles: tuple[ProfileShape, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision.parse(self.precision).value)
        object.__setattr__(self, "profiles", tuple(ProfileShape(*p) for p in self.profiles))

    @property
    def key(self) -> str:
        return plan_key(self.onnx_sha256, self.trt_version, self.compute_capability, self.precision, self.profiles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx_sha256": self.onnx_sha256, "trt_version": self.trt_version,
            "compute_capability": self.compute_capability, "precision": self.precision,
            "profiles": profiles_json(self.profiles),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlanFields:
        profiles = tuple(ProfileShape(n, tuple(a), tuple(b), tuple(c)) for n, a, b, c in d["profiles"])
        return cls(str(d["onnx_sha256"]), str(d["trt_version"]), str(d["compute_capability"]),
                   str(d["precision"]), profiles)


def sm(compute_capability: str) -> str:
    """``"9.0"`` -> ``"sm_90"``."""
    return "sm_" + compute_capability.replace(".", "")


def plans_dir(bundle_root: str | os.PathLike[str], graph: str) -> Path:
    """``BUNDLE/plans/<graph>``, refusing graph names that are paths and symbolic links on the way."""
    if not graph or "/" in graph or graph in (".", ".."):
        raise ArtifactError(f"graph name {graph!r} cannot name a plan folder; re-export the bundle")
    return safe_relpath(bundle_root, f"plans/{graph}", "TensorRT plan folder")


def max_plan_bytes(onnx_path: str | os.PathLike[str]) -> int:
    """The largest plan l2p reads for a graph: twice its weights (``.onnx`` + external data) + 1 GiB
    of kernels. A plan holds the weights once (in the graph's precision or lower) plus its tactics."""
    onnx_path = Path(onnx_path)
    files = [onnx_path, *(onnx_path.parent / loc for loc in _external_locations(onnx_path))]
    return 2 * sum(f.stat().st_size for f in files if f.is_file()) + (1 << 30)


def _rebuild_hint(plan_dir: Path) -> str:
    bundle = plan_dir.parent.parent if plan_dir.parent.name == "plans" else "BUNDLE"
    return f"rebuild with: l2p build {bundle}"


def save_plan(plan_dir: str | os.PathLike[str], fields: PlanFields, plan: bytes | memoryview, **info: Any) -> Path:
    """Write ``<key>.plan`` then its ``<key>.json`` sidecar (last, both atomic); return the plan path."""
    plan_dir = Path(plan_dir)
    path = plan_dir / f"{fields.key}.plan"
    write_bytes(path, plan)  # type: ignore[arg-type]  # any buffer: no copy of a multi-GB plan
    sidecar = {
        "format": PLAN_FORMAT, "format_version": PLAN_FORMAT_VERSION, "key": fields.key,
        **fields.to_dict(),
        "plan_sha256": hashlib.sha256(plan).hexdigest(), "plan_size": memoryview(plan).nbytes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info,
    }
    write_json(path.with_suffix(".json"), sidecar)
    return path


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a plan sidecar (``<key>.json``); raises :class:`ArtifactError`.

    The sidecar must be a regular file (not a link) named after the key of its own fields, and
    hold the plan's sha256 and size.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise ArtifactError(
            f"TensorRT plan sidecar {path} is missing (an interrupted build?); {_rebuild_hint(path.parent)}"
        )
    fix = _rebuild_hint(path.parent)
    info = read_json(path, f"TensorRT plan sidecar {path}", fix)
    try:
        key = PlanFields.from_dict(info).key
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"TensorRT plan sidecar {path} is unreadable ({e}); {fix}") from None
    if info.get("format") != PLAN_FORMAT or info.get("format_version") != PLAN_FORMAT_VERSION:
        raise ArtifactError(
            f"{path} is not an l2p TensorRT plan sidecar of format version {PLAN_FORMAT_VERSION}; {fix}"
        )
    sha, size = info.get("plan_sha256"), info.get("plan_size")
    if info.get("key") != key or path.stem != key or not (isinstance(sha, str) and len(sha) == 64) \
            or not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        raise ArtifactError(f"TensorRT plan sidecar {path} does not describe its plan (its key, file name, "
                            f"plan sha256 and size must agree with its fields); {fix}")
    return dict(info)


def plan_differences(built: PlanFields, current: PlanFields, check_profiles: bool = True) -> list[str]:
    """Human-readable reasons why a plan built for ``built`` cannot run as ``current``."""
    diffs = []
    if (built.trt_version, built.compute_capability) != (current.trt_version, current.compute_capability):
        diffs.append(
            f"it was built for TensorRT {built.trt_version} on {sm(built.compute_capability)}; "
            f"this machine has TensorRT {current.trt_version} on {sm(current.compute_capability)}"
        )
    if built.onnx_sha256 != current.onnx_sha256:
        diffs.append(
            f"it was built from another ONNX graph (sha256 {built.onnx_sha256[:12]}..., "
            f"the bundle's graph is {current.onnx_sha256[:12]}...)"
        )
    if built.precision != current.precision:
        diffs.append(f"it was built for precision {built.precision}, {current.precision} was asked for")
    if check_profiles and built.profiles != current.profiles:
        diffs.append(f"it was built for profile {profiles_json(built.profiles)}, "
                     f"{profiles_json(current.profiles)} was asked for")
    return diffs


def load_plan(plan_path: str | os.PathLike[str], current: PlanFields, check_profiles: bool = True,
              max_bytes: int | None = None) -> bytearray:
    """Read a plan after checking its sidecar against ``current`` and its sha256.

    The plan and its sidecar must be regular files, not symbolic links; the plan's size must be
    the sidecar's (and at most ``max_bytes``, see :func:`max_plan_bytes`) before a byte of it is
    read, and its sha256 the sidecar's before TensorRT sees it.

    Raises :class:`MismatchError` (foreign TensorRT/GPU/graph/precision/profile) before the plan
    bytes are even read, and :class:`ArtifactError` for a tampered, truncated or oversized plan.
    """
    plan_path = Path(plan_path)
    fix = _rebuild_hint(plan_path.parent)
    info = read_sidecar(plan_path.with_suffix(".json"))
    diffs = plan_differences(PlanFields.from_dict(info), current, check_profiles)
    if diffs:
        raise MismatchError(f"TensorRT plan {plan_path} cannot be used: " + "; ".join(diffs) + f"; {fix}")
    if not os.path.lexists(plan_path):
        raise ArtifactError(f"TensorRT plan {plan_path} is missing next to its sidecar; {fix}")
    size = int(info["plan_size"])
    if max_bytes is not None and size > max_bytes:
        raise ArtifactError(f"TensorRT plan {plan_path}: its sidecar says {size} bytes, more than a plan of this "
                            f"graph can be ({max_bytes}); refusing to read it; {fix}")
    with os.fdopen(open_regular(plan_path, "TensorRT plan"), "rb") as f:
        data = bytearray(size) if os.fstat(f.fileno()).st_size == size else None
        if data is None or f.readinto(data) != size or hashlib.sha256(data).hexdigest() != info["plan_sha256"]:
            raise ArtifactError(
                f"TensorRT plan {plan_path} does not match the size and sha256 in its sidecar: it is truncated "
                f"or was tampered with; refusing to deserialize it; {fix}"
            )
    return data


def select_plan(
    plan_dir: str | os.PathLike[str], onnx_sha256: str, trt_version: str, compute_capability: str,
    precision: Precision | str | None = None, profiles: Sequence[ProfileShape] | None = None,
) -> tuple[Path, PlanFields]:
    """Pick the plan in ``plan_dir`` for this graph and machine (the newest if several match).

    ``precision``/``profiles`` of None match any. Raises :class:`MismatchError` when plans exist
    but were built for another TensorRT/GPU/graph/precision/profile, :class:`ArtifactError` when
    there is none.
    """
    plan_dir = Path(plan_dir)
    sidecars = sorted(plan_dir.glob("*.json")) if plan_dir.is_dir() else []
    if not sidecars:
        raise ArtifactError(f"no TensorRT plan in {plan_dir}; build one with: l2p build "
                            f"{plan_dir.parent.parent if plan_dir.parent.name == 'plans' else 'BUNDLE'}")
    matches, reasons = [], []
    for sc in sidecars:
        info = read_sidecar(sc)
        built = PlanFields.from_dict(info)
        want = PlanFields(onnx_sha256, trt_version, compute_capability,
                          precision if precision is not None else built.precision,
                          tuple(profiles) if profiles is not None else built.profiles)
        diffs = plan_differences(built, want)
        if diffs:
            reasons.append(f"{sc.with_suffix('.plan').name}: " + "; ".join(diffs))
        else:
            matches.append((str(info.get("created", "")), sc.name, sc.with_suffix(".plan"), built))
    if not matches:
        raise MismatchError(f"no usable TensorRT plan in {plan_dir}: " + " | ".join(reasons)
                            + f"; {_rebuild_hint(plan_dir)}")
    _, _, path, fields = max(matches)
    return path, fields


# ---------------------------------------------------------------------------------------------
# graph identity and precision


def _external_locations(onnx_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    locs: set[str] = set()

    def visit(graph: Any) -> None:
        tensors = list(graph.initializer)
        for node in graph.node:
            for a in node.attribute:
                tensors += ([a.t] if a.HasField("t") else []) + list(a.tensors)
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    visit(g)
        for t in tensors:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                locs.update(e.value for e in t.external_data if e.key == "location")

    visit(model.graph)
    return sorted(locs)


def graph_sha256(onnx_path: str | os.PathLike[str], bundle_root: str | os.PathLike[str] | None = None,
                 manifest_files: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Identity of an ONNX graph: sha256 over the sha256 of the ``.onnx`` file and its external data.

    File hashes come from the bundle manifest when given (cheap for multi-GB weights), else the
    files are hashed. Both routes give the same value for the same bytes.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"ONNX file {onnx_path} does not exist")
    entries: dict[str, str] = {}
    for name in [onnx_path.name, *_external_locations(onnx_path)]:
        path = onnx_path.parent / name
        rel = Path(os.path.relpath(path, bundle_root)).as_posix() if bundle_root is not None else ""
        if manifest_files is not None and rel in manifest_files:
            entries[name] = str(manifest_files[rel]["sha256"])
        elif path.is_file():
            entries[name] = sha256_file(path)
        else:
            raise ArtifactError(f"external data file {path} of {onnx_path} is missing; re-export the bundle")
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def graph_precision(onnx_path: str | os.PathLike[str] | Any) -> Precision:
    """Precision of a graph (an ``.onnx`` path or a loaded ``ModelProto``) from its float
    initializers (most elements wins; none -> fp32)."""
    import onnx

    counts = {Precision.FP32: 0, Precision.FP16: 0, Precision.BF16: 0}
    kinds = {onnx.TensorProto.FLOAT: Precision.FP32, onnx.TensorProto.FLOAT16: Precision.FP16,
             onnx.TensorProto.BFLOAT16: Precision.BF16}
    model = onnx_path if isinstance(onnx_path, onnx.ModelProto) else onnx.load(str(onnx_path),
                                                                             load_external_data=False)
    for t in model.graph.initializer:
        if t.data_type in kinds:
            counts[kinds[t.data_type]] += int(np.prod(t.dims)) if len(t.dims) else 1
    best = max(counts, key=lambda p: counts[p])
    return best if counts[best] else Precision.FP32


def declared_precision(onnx_path: str | os.PathLike[str], manifest: Mapping[str, Any] | None) -> Precision:
    """The bundle manifest's ``precision`` when it has one, else :func:`graph_precision`."""
    declared = (manifest or {}).get("precision")
    return Precision.parse(declared) if isinstance(declared, str) else graph_precision(onnx_path)


def graph_name_of(bundle: Bundle, onnx_path: str | os.PathLike[str]) -> str | None:
    """Name of the bundle graph whose ONNX file is ``onnx_path``."""
    target = Path(onnx_path).resolve()
    return next((g for g in bundle.graphs if bundle.onnx_path(g).resolve() == target), None)


# ---------------------------------------------------------------------------------------------
# build mode


@dataclass(frozen=True)
class BuildMode:
    """How to build: strongly typed network or builder flags to set/clear (``BuilderFlag`` names)."""

    strongly_typed: bool
    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()


def trt_major(trt_version: str) -> int:
    return int(str(trt_version).split(".")[0])


def build_mode(requested: Precision | str | None, graph: Precision | str, trt_version: str) -> BuildMode:
    """Decide strong typing and builder flags; refuse precisions the graph cannot give.

    - TensorRT >= 11: always strongly typed; ``requested`` must equal the graph's precision.
    - TensorRT 10: fp16/bf16 graphs strongly typed (same rule); fp32 graphs weakly typed with
      the FP16/BF16 flag for a lower requested precision.
    - fp32 clears TF32 so fp32 plans match ONNX Runtime to ~1e-4.
    """
    graph = Precision.parse(graph)
    req = Precision.parse(requested) if requested is not None else graph
    strongly = trt_major(trt_version) >= 11 or graph is not Precision.FP32
    if strongly and req is not graph:
        why = (f"TensorRT {trt_version} networks are always strongly typed" if trt_major(trt_version) >= 11
               else f"{graph.value} graphs are built strongly typed")
        raise InputError(
            f"the bundle's graphs are {graph.value} but precision {req.value} was asked for; {why}, so "
            f"precision comes from the ONNX graph: export the bundle with `l2p export --precision {req.value}` "
            f"(or build with --precision {graph.value})"
        )
    if strongly:
        return BuildMode(True, clear_flags=("TF32",) if req is Precision.FP32 else ())
    return {
        Precision.FP32: BuildMode(False, clear_flags=("TF32",)),
        Precision.FP16: BuildMode(False, set_flags=("FP16",)),
        Precision.BF16: BuildMode(False, set_flags=("BF16",)),
    }[req]
