"""TensorRT plans: optimisation profiles from the IOSpec, a plan cache keyed by everything a plan
depends on, the build itself, and backend validation against ONNX Runtime CPU.

Cache layout (plans are tied to the TensorRT version and the GPU, so both are in the key)::

    BUNDLE/plans/<graph>/<key>.plan    serialized engine
    BUNDLE/plans/<graph>/<key>.json    sidecar: the key's fields + plan sha256 (written last)

``key = sha256(canonical JSON of onnx_sha256, trt_version, compute_capability, precision,
profiles)``. Everything except the build itself (and :func:`current_env`) runs without
TensorRT, so the cache logic is tested on CPU with the "current" environment injected.

Precision: on TensorRT >= 11 every network is strongly typed, so precision comes from the ONNX
graph; on TensorRT 10, fp16/bf16 graphs are built strongly typed and fp32 graphs weakly typed
with builder flags (see :func:`build_mode`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np

from ..atomic import sha256_file, write_bytes, write_json
from ..errors import ArtifactError, InputError, L2PError, MismatchError, missing_extra
from ..precision import Precision
from ..spec import IOSpec

PLAN_FORMAT = "l2p-trt-plan"
PLAN_FORMAT_VERSION = 1
#: dims per symbolic name, or per graph (``{"transformer": {...}}``), or both (globals + overrides)
DimsArg = Union[Mapping[str, int], Mapping[str, Mapping[str, int]], None]


# ---------------------------------------------------------------------------------------------
# dims and profiles


def parse_dims(text: str) -> dict[str, int]:
    """Parse ``"batch=1,img_seq=256"`` (CLI ``--min/--opt/--max``) into ``{"batch": 1, ...}``."""
    out: dict[str, int] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, sep, value = (p.strip() for p in item.partition("="))
        if not sep or not name.isidentifier() or not value.isdigit() or int(value) < 1:
            raise InputError(
                f"bad dims item '{item}' in '{text}'; expected NAME=POSITIVE_INT, e.g. batch=1,img_seq=256"
            )
        if name in out:
            raise InputError(f"dim '{name}' is given twice in '{text}'")
        out[name] = int(value)
    return out


class ProfileShape(NamedTuple):
    """min/opt/max shapes of one input in a TensorRT optimisation profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def input_dim_names(spec: IOSpec) -> list[str]:
    """Symbolic dims that appear in the inputs, in order of first appearance."""
    names: list[str] = []
    for t in spec.inputs:
        names += [d for d in t.shape if isinstance(d, str) and d not in names]
    return names


def derive_profiles(
    spec: IOSpec, min_dims: Mapping[str, int], opt_dims: Mapping[str, int], max_dims: Mapping[str, int]
) -> list[ProfileShape]:
    """One ``(name, min_shape, opt_shape, max_shape)`` per input of ``spec``.

    Every symbolic input dim needs a value in all three maps with ``1 <= min <= opt <= max``;
    extra names are ignored (global dims serve several graphs). Raises :class:`InputError`.
    """
    names = input_dim_names(spec)
    for label, dims in (("--min", min_dims), ("--opt", opt_dims), ("--max", max_dims)):
        missing = [n for n in names if n not in dims]
        if missing:
            raise InputError(
                f"{label} has no value for dims {missing}; this graph's inputs need {names} "
                f"({spec.describe()}); e.g. {label} " + ",".join(f"{n}=..." for n in names)
            )
    for n in names:
        lo, mid, hi = int(min_dims[n]), int(opt_dims[n]), int(max_dims[n])
        if not 1 <= lo <= mid <= hi:
            raise InputError(f"dim '{n}': need 1 <= min <= opt <= max, got min={lo}, opt={mid}, max={hi}")
    return [
        ProfileShape(t.name, t.concrete(min_dims), t.concrete(opt_dims), t.concrete(max_dims))
        for t in spec.inputs
    ]


def dims_from_profiles(spec: IOSpec, profiles: Sequence[ProfileShape], which: str = "min") -> dict[str, int]:
    """Recover dim values (``which`` = min/opt/max) from a plan's profiles."""
    shapes = {p.name: getattr(p, which) for p in profiles}
    dims: dict[str, int] = {}
    for t in spec.inputs:
        for d, v in zip(t.shape, shapes.get(t.name, ())):
            if isinstance(d, str):
                dims.setdefault(d, int(v))
    return dims


def dims_for_graph(dims: DimsArg, graph: str) -> dict[str, int]:
    """Global dims overlaid with the per-graph entry ``dims[graph]`` when there is one."""
    if not dims:
        return {}
    out = {k: int(v) for k, v in dims.items() if not isinstance(v, Mapping)}
    sub = dims.get(graph)
    if isinstance(sub, Mapping):
        out.update({k: int(v) for k, v in sub.items()})
    return out


def _fill_dims(
    min_d: dict[str, int], opt_d: dict[str, int], max_d: dict[str, int]
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Missing maps fall back to their neighbours: ``--opt`` alone gives a static profile."""
    opt = opt_d or max_d or min_d
    return (min_d or opt, opt, max_d or opt)


# ---------------------------------------------------------------------------------------------
# plan keys and the plan cache


def _profiles_json(profiles: Sequence[ProfileShape]) -> list[list[Any]]:
    return [[p.name, list(p.min), list(p.opt), list(p.max)] for p in profiles]


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
        "profiles": _profiles_json(profiles),
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
            "profiles": _profiles_json(self.profiles),
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
    """``BUNDLE/plans/<graph>``."""
    return Path(bundle_root) / "plans" / graph


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
    """Read and check a plan sidecar (``<key>.json``); raises :class:`ArtifactError`."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(
            f"TensorRT plan sidecar {path} is missing (an interrupted build?); {_rebuild_hint(path.parent)}"
        )
    try:
        info = json.loads(path.read_text())
        PlanFields.from_dict(info)
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"TensorRT plan sidecar {path} is unreadable ({e}); {_rebuild_hint(path.parent)}") from None
    if info.get("format") != PLAN_FORMAT or info.get("format_version") != PLAN_FORMAT_VERSION:
        raise ArtifactError(
            f"{path} is not an l2p TensorRT plan sidecar of format version {PLAN_FORMAT_VERSION}; "
            f"{_rebuild_hint(path.parent)}"
        )
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
        diffs.append(f"it was built for profile {_profiles_json(built.profiles)}, "
                     f"{_profiles_json(current.profiles)} was asked for")
    return diffs


def load_plan(plan_path: str | os.PathLike[str], current: PlanFields, check_profiles: bool = True) -> bytes:
    """Read a plan after checking its sidecar against ``current`` and its sha256.

    Raises :class:`MismatchError` (foreign TensorRT/GPU/graph/precision/profile) before the plan
    bytes are even read, and :class:`ArtifactError` for a tampered or truncated plan.
    """
    plan_path = Path(plan_path)
    info = read_sidecar(plan_path.with_suffix(".json"))
    diffs = plan_differences(PlanFields.from_dict(info), current, check_profiles)
    if diffs:
        raise MismatchError(f"TensorRT plan {plan_path} cannot be used: " + "; ".join(diffs)
                            + f"; {_rebuild_hint(plan_path.parent)}")
    if not plan_path.is_file():
        raise ArtifactError(
            f"TensorRT plan {plan_path} is missing next to its sidecar; {_rebuild_hint(plan_path.parent)}"
        )
    data = plan_path.read_bytes()
    if len(data) != info["plan_size"] or hashlib.sha256(data).hexdigest() != info["plan_sha256"]:
        raise ArtifactError(
            f"TensorRT plan {plan_path} does not match the sha256 in its sidecar: it is truncated or was "
            f"tampered with; refusing to deserialize it; {_rebuild_hint(plan_path.parent)}"
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
# graph identity and precision (torch-free, TensorRT-free)


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


def graph_precision(onnx_path: str | os.PathLike[str]) -> Precision:
    """Precision of a graph from its float initializers (most elements wins; none -> fp32)."""
    import onnx

    counts = {Precision.FP32: 0, Precision.FP16: 0, Precision.BF16: 0}
    kinds = {onnx.TensorProto.FLOAT: Precision.FP32, onnx.TensorProto.FLOAT16: Precision.FP16,
             onnx.TensorProto.BFLOAT16: Precision.BF16}
    model = onnx.load(str(onnx_path), load_external_data=False)
    for t in model.graph.initializer:
        if t.data_type in kinds:
            counts[kinds[t.data_type]] += int(np.prod(t.dims)) if len(t.dims) else 1
    best = max(counts, key=lambda p: counts[p])
    return best if counts[best] else Precision.FP32


def declared_precision(onnx_path: str | os.PathLike[str], manifest: Mapping[str, Any] | None) -> Precision:
    """The bundle manifest's ``precision`` when it has one, else :func:`graph_precision`."""
    declared = (manifest or {}).get("precision")
    return Precision.parse(declared) if isinstance(declared, str) else graph_precision(onnx_path)


def find_bundle(onnx_path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The bundle root and manifest that hold ``onnx_path`` (its folder or the one above), if any."""
    for root in list(Path(onnx_path).resolve().parents)[:2]:
        man = root / "manifest.json"
        if man.is_file():
            try:
                manifest = json.loads(man.read_text())
            except ValueError:
                return None
            if isinstance(manifest, dict) and manifest.get("format") == "l2p-bundle":
                return root, manifest
    return None


def graph_name_of(root: Path, manifest: Mapping[str, Any], onnx_path: str | os.PathLike[str]) -> str | None:
    """Name of the bundle graph whose ONNX file is ``onnx_path``."""
    rel = Path(os.path.relpath(Path(onnx_path).resolve(), root)).as_posix()
    for name, entry in manifest.get("graphs", {}).items():
        if entry.get("onnx") == rel:
            return str(name)
    return None


# ---------------------------------------------------------------------------------------------
# build mode (pure) and the build (TensorRT)


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


def import_tensorrt(what: str = "the tensorrt backend") -> Any:
    """Import tensorrt or raise MissingDependencyError: ``pip install 'l2p[tensorrt]'``."""
    try:
        import tensorrt as trt
    except ImportError:
        raise missing_extra("tensorrt", "tensorrt", what) from None
    return trt


_LOGGER: Any = None


def trt_logger(trt: Any) -> Any:
    """One TensorRT logger per process (builder and runtime must share it)."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def current_env(device: int = 0) -> tuple[str, str]:
    """``(TensorRT version, compute capability)`` of this machine; needs tensorrt + CUDA."""
    trt = import_tensorrt()
    from . import cuda

    return str(trt.__version__), cuda.compute_capability(device)


def build_plan_bytes(
    onnx_path: str | os.PathLike[str], profiles: Sequence[ProfileShape], mode: BuildMode,
    timing_cache: bytes | None = None,
) -> tuple[memoryview, bytes]:
    """Build a serialized engine for ``onnx_path``; returns ``(plan buffer, timing cache bytes)``."""
    trt = import_tensorrt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if mode.strongly_typed and strongly is not None:  # accepted and ignored on TensorRT 11
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external data
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT could not parse {onnx_path}: {errors}")
    net_inputs = sorted(network.get_input(i).name for i in range(network.num_inputs))
    if net_inputs != sorted(p.name for p in profiles):
        raise ArtifactError(f"{onnx_path} has inputs {net_inputs}, its io spec says {sorted(p.name for p in profiles)}")
    config = builder.create_builder_config()
    for name in mode.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in mode.clear_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache or b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # cache from another GPU/version
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise L2PError(f"TensorRT failed to build {onnx_path}; see the TensorRT log above")
    return memoryview(plan), bytes(config.get_timing_cache().serialize())  # the view keeps the plan alive


def build_plans(
    bundle_path: str | os.PathLike[str],
    precision: Precision | str | None = None,
    min_dims: DimsArg = None,
    opt_dims: DimsArg = None,
    max_dims: DimsArg = None,
    timing_cache: str | os.PathLike[str] | None = None,
    graphs: Sequence[str] | None = None,
    progress: bool = True,
    force: bool = False,
    device: int = 0,
) -> dict[str, Path]:
    """Build (or reuse) a TensorRT plan for every graph of the bundle; returns ``{graph: plan path}``.

    Dims are global (``{"batch": 1}``), per graph (``{"transformer": {...}}``) or both; a missing
    ``min``/``max`` map falls back to ``opt`` (static profile). Idempotent: a plan whose key and
    sha256 still match is kept. ``timing_cache`` is loaded if present and saved (atomically)
    after each build. Needs TensorRT + a GPU (MissingDependencyError otherwise).
    """
    from ..bundle import open_bundle

    bundle = open_bundle(bundle_path)
    names = list(graphs) if graphs else list(bundle.graphs)
    unknown = [g for g in names if not bundle.has(g)]
    if unknown:
        raise InputError(f"bundle {bundle.root} has no graphs {unknown}; it has {sorted(bundle.graphs)}")
    profiles: dict[str, list[ProfileShape]] = {}
    used: set[str] = set()
    for g in names:
        lo, mid, hi = _fill_dims(*(dims_for_graph(d, g) for d in (min_dims, opt_dims, max_dims)))
        profiles[g] = derive_profiles(bundle.spec(g), lo, mid, hi)
        used.update(input_dim_names(bundle.spec(g)))
    for d in (min_dims, opt_dims, max_dims):
        extra = [k for k, v in (d or {}).items() if not isinstance(v, Mapping) and k not in used]
        if extra:
            raise InputError(f"dims {extra} are not used by graphs {names} (they use {sorted(used)})")
        stray = [k for k, v in (d or {}).items() if isinstance(v, Mapping) and k not in names]
        if stray:
            raise InputError(f"per-graph dims for {stray}, but the graphs being built are {names}")
    graph_prec = {g: declared_precision(bundle.onnx_path(g), bundle.manifest) for g in names}
    trt_version, cc = current_env(device)
    modes = {g: build_mode(precision, graph_prec[g], trt_version) for g in names}  # refuse before building
    cache = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else None
    out: dict[str, Path] = {}
    for g in names:
        onnx_path = bundle.onnx_path(g)
        prec = Precision.parse(precision) if precision is not None else graph_prec[g]
        fields = PlanFields(graph_sha256(onnx_path, bundle.root, bundle.manifest.get("files")),
                            trt_version, cc, prec, tuple(profiles[g]))
        path = plans_dir(bundle.root, g) / f"{fields.key}.plan"
        if path.is_file() and not force:
            try:
                load_plan(path, fields)
                _say(progress, f"{g}: plan up to date ({path})")
                out[g] = path
                continue
            except ArtifactError as e:
                _say(progress, f"{g}: rebuilding ({e})")
        _say(progress, f"{g}: building TensorRT {trt_version} plan for {sm(cc)}, {prec.value}, "
                       f"profile {_profiles_json(profiles[g])} ...")
        t0 = time.perf_counter()
        plan, cache = build_plan_bytes(onnx_path, profiles[g], modes[g], cache)
        seconds = time.perf_counter() - t0
        out[g] = save_plan(plan_dir=path.parent, fields=fields, plan=plan, graph=g,
                           strongly_typed=modes[g].strongly_typed, build_seconds=round(seconds, 1))
        if timing_cache:
            write_bytes(timing_cache, cache)
        _say(progress, f"{g}: done in {seconds:.0f} s -> {out[g]}")
    return out


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[l2p build] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# validation of a GPU backend against ONNX Runtime CPU

#: max relative error (max |got - ref| / max |ref|) allowed per precision
TOLERANCES = {Precision.FP32: 1e-4, Precision.FP16: 2e-2, Precision.BF16: 5e-2}
VALIDATE_BACKENDS = ("tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt")


def compare_outputs(got: Mapping[str, Any], ref: Mapping[str, np.ndarray], rtol: float) -> dict[str, dict[str, Any]]:
    """Per output: ``max_abs``, ``max_rel`` (max abs error / max |ref|), ``ok`` (finite and <= rtol)."""
    from .device_array import to_host

    report: dict[str, dict[str, Any]] = {}
    for name, r in ref.items():
        g = to_host(got[name]).astype(np.float64)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape:
            report[name] = {"ok": False, "error": f"shape {list(g.shape)}, reference {list(r.shape)}"}
            continue
        max_abs = float(np.abs(g - r).max()) if r.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        ok = bool(np.isfinite(g).all()) and max_rel <= rtol
        report[name] = {"max_abs": max_abs, "max_rel": max_rel, "ok": ok}
    return report


def validate_backend(
    bundle_path: str | os.PathLike[str],
    backend: str = "tensorrt",
    precision: Precision | str | None = None,
    reference: str = "onnxruntime",
    dims: DimsArg = None,
    graphs: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run each graph on ``backend`` and on ONNX Runtime CPU with random inputs; compare outputs.

    ``dims`` (global and/or per graph) give the sample shapes; without them the TensorRT backend
    uses the min shapes of the bundle's built plans. Returns ``{"graphs": {graph: {..., "outputs":
    {name: {max_abs, max_rel, ok}}}}, "results": [flat rows: graph, output, max_abs, rel, limit,
    ok], "ok"}``. Raises MissingDependencyError when the backend is not installed (checked first).
    """
    from ..bundle import open_bundle
    from .onnxruntime_backend import PROVIDERS, OrtEngine

    if backend not in VALIDATE_BACKENDS:
        raise InputError(f"unknown backend '{backend}' to validate; choose one of {list(VALIDATE_BACKENDS)}")
    if reference != "onnxruntime":
        raise InputError(f"reference '{reference}' is not supported; the reference is onnxruntime (CPU)")
    if backend == "tensorrt":
        current_env()
    else:
        import onnxruntime as ort

        from .onnxruntime_backend import check_provider

        check_provider(PROVIDERS[backend], ort.get_available_providers())
    bundle = open_bundle(bundle_path)
    asked = Precision.parse(precision) if precision is not None else None
    report: dict[str, Any] = {"bundle": str(bundle.root), "backend": backend, "reference": reference,
                              "graphs": {}}
    for g in graphs or list(bundle.graphs):
        spec, onnx_path = bundle.spec(g), bundle.onnx_path(g)
        engine, plan, gdims = _validation_engine(bundle.root, g, onnx_path, spec, backend, asked,
                                                 dims_for_graph(dims, g))
        prec = getattr(engine, "precision", None) or asked or declared_precision(onnx_path, bundle.manifest)
        feed = spec.sample_inputs(gdims, seed=seed)
        try:
            got = engine.run(feed)
        finally:
            engine.close()
        ref = OrtEngine(onnx_path, spec, name=g).run(feed)
        outputs = compare_outputs(got, ref, TOLERANCES[prec])
        report["graphs"][g] = {"precision": prec.value, "rtol": TOLERANCES[prec], "dims": gdims, "plan": plan,
                               "outputs": outputs, "ok": all(o["ok"] for o in outputs.values())}
    report["results"] = [  # flat rows for tables: graph, output, max_abs, rel, limit, ok
        {"graph": g, "output": o, "max_abs": r.get("max_abs", float("nan")), "rel": r.get("max_rel", float("nan")),
         "limit": gr["rtol"], "ok": r["ok"]}
        for g, gr in report["graphs"].items() for o, r in gr["outputs"].items()
    ]
    report["ok"] = all(r["ok"] for r in report["graphs"].values())
    return report


def _validation_engine(root: Path, graph: str, onnx_path: Path, spec: IOSpec, backend: str,
                       precision: Precision | None, dims: dict[str, int]) -> tuple[Any, str | None, dict[str, int]]:
    if backend == "tensorrt":
        from .tensorrt_backend import TrtEngine

        if dims:  # an in-memory plan for exactly these shapes
            engine = TrtEngine(onnx_path, spec, name=graph, precision=precision,
                               min_dims=dims, opt_dims=dims, max_dims=dims)
            return engine, None, dims
        engine = TrtEngine(onnx_path, spec, name=graph, plan_dir=plans_dir(root, graph), precision=precision)
        return engine, str(engine.plan_path), dims_from_profiles(spec, engine.profiles, "min")
    if not dims:
        raise InputError(f"validating {backend} needs sample dims for '{graph}' (e.g. --dims batch=1,img_seq=64); "
                         f"its inputs are {spec.describe()}")
    from .onnxruntime_backend import PROVIDERS
    from .ort_device import OrtDeviceEngine

    return OrtDeviceEngine(onnx_path, spec, name=graph, provider=PROVIDERS[backend]), None, dims
