"""The predictor artifact: a folder that says what it was calibrated for.

Layout::

    PREDICTOR/
      coefficients.npz   W, U, V as float64 (no pickles)
      predictor.onnx     the baked graph (coefficients as float32 constants)
      io_spec.json       its IOSpec
      predictor.json     written LAST: a folder without it is not a predictor

``predictor.json`` holds the format and version, the name, the method (``"l2p"`` or a preset
name), the tapped feature, the step count and schedule, ``K``, whether latents are used, the
bundle hash, scheduler hash and classifier-free guidance (``cfg``: scale, forecast mode; absent
= unguided) it was calibrated for, free-form fit statistics, the settings that made it, and the
sha256 and size of every other file. :func:`load_predictor` verifies all of it and, given an
:class:`Expect`, refuses a predictor made for another bundle, scheduler config, step count,
budget, tap, feature shape or CFG with a :class:`~l2p.errors.MismatchError` that says how to
make a matching one. All these compatibility checks live there. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import save_npz, sha256_file, write_bytes, write_json
from ..errors import ArtifactError, InputError, MismatchError
from ..limits import within
from ..safe_io import read_json, safe_relpath
from ..spec import IOSpec, TensorSpec
from .files import COEFFICIENTS, FILES, IO_SPEC, MANIFEST, ONNX_FILE, REMAKE, bound_graph, load_table, verify_files
from .graph import build_predictor_graph, predictor_io_spec
from .table import CoefficientTable

FORMAT = "l2p-predictor"
FORMAT_VERSION = 1
_KEYS = {
    "format", "format_version", "l2p_version", "name", "method", "tap", "num_steps", "full_steps",
    "schedule", "K", "uses_latents", "bundle_hash", "scheduler_hash", "coefficient_dtype",
    "feature", "latent", "fit_stats", "created_by", "files",
}
_OPTIONAL_KEYS = {"cfg"}  # absent in predictors made before classifier-free guidance: unguided
COEFFICIENT_DTYPE = {"fit": "float64", "npz": "float64", "onnx": "float32"}
#: what a predictor forecasts under classifier-free guidance: the combined output, or each branch
CFG_FORECASTS = ("guided", "branches")
MAX_NAME = 64  # predictor names are folder names; file systems allow 255 bytes


@dataclass(frozen=True)
class Expect:
    """What a predictor is going to be used with (see :func:`load_predictor`); ``None`` skips a check.

    Attributes:
        bundle_hash: the bundle's :attr:`~l2p.bundle.Bundle.hash`.
        scheduler_hash: sha256 of the scheduler config (:attr:`~l2p.bundle.Bundle.scheduler_hash`).
        steps: sampling steps ``N``.
        full_steps: computed steps ``M`` (the budget).
        schedule: the computed steps themselves (``--schedule``), sorted.
        tap: the feature the caller wants forecast.
        features: the features the bundle provides, one :class:`~l2p.spec.TensorSpec` per tap,
            named by the tap (``"output"``, ``"residual"``); the predictor's tap must be one of
            them, with the same dtype and shape.
        cfg_scale, cfg_forecast: the run's classifier-free guidance scale (1.0: unguided) and
            forecast mode (compared only when both the run and the predictor are guided).
    """

    bundle_hash: str | None = None
    scheduler_hash: str | None = None
    steps: int | None = None
    full_steps: int | None = None
    tap: str | None = None
    features: tuple[TensorSpec, ...] | None = None
    schedule: tuple[int, ...] | None = None
    cfg_scale: float | None = None
    cfg_forecast: str | None = None


@dataclass(frozen=True, eq=False)
class Predictor:
    """A verified predictor folder. Make one with :func:`save_predictor`, open with :func:`load_predictor`.

    Attributes:
        root: the folder.
        name: predictor name (e.g. ``"l2p-k3"``).
        method: ``"l2p"`` for a learned table, or the preset name (``"taylorseer2"``, ...).
        tap: which feature the coefficients forecast (e.g. ``"output"``).
        table: the float64 coefficients and schedule.
        io_spec: I/O of ``predictor.onnx``.
        bundle_hash: the bundle it was calibrated for.
        scheduler_hash: sha256 of the scheduler config it was calibrated for.
        fit_stats: free-form fit statistics (residuals, ridge lambda, calibration size, time...).
        created_by: the settings that made it.
        graph: the serialized predictor graph, built from ``table`` (what engines should load:
            :func:`load_predictor` has checked that ``predictor.onnx`` is this same graph).
        cfg_scale: the classifier-free guidance scale it was calibrated at (1.0: unguided).
        cfg_forecast: what it forecasts under CFG: ``guided`` (the combined output) or ``branches``.
    """

    root: Path
    name: str
    method: str
    tap: str
    table: CoefficientTable
    io_spec: IOSpec
    bundle_hash: str
    scheduler_hash: str
    fit_stats: dict[str, Any] = field(default_factory=dict)
    created_by: dict[str, Any] = field(default_factory=dict)
    graph: bytes = b""
    cfg_scale: float = 1.0
    cfg_forecast: str = "guided"

    @property
    def onnx_path(self) -> Path:
        return self.root / ONNX_FILE

    @property
    def schedule(self) -> tuple[int, ...]:
        """The computed steps."""
        return self.table.computed

    @property
    def num_steps(self) -> int:
        return self.table.num_steps

    @property
    def K(self) -> int:
        return self.table.K

    @property
    def uses_latents(self) -> bool:
        return self.table.uses_latents


def remake_hint(name: str, method: str, num_steps: int, full_steps: int, tap: str, cfg_scale: float = 1.0,
                cfg_forecast: str = "guided") -> str:
    """The command that calibrates a predictor for the given settings."""
    if method != "l2p":  # fixed formulas need no calibration: they are built at sampling time
        return f"sample with --method {method} --steps {num_steps} --full-steps {full_steps} instead"
    cfg = f" --cfg-scale {cfg_scale:g}" + (f" --cfg-forecast {cfg_forecast}" if cfg_scale > 1 else "")
    return f"re-run: l2p calibrate BUNDLE --steps {num_steps} --full-steps {full_steps} --tap {tap} --name {name}{cfg}"


def save_predictor(
    directory: str | os.PathLike[str],
    *,
    table: CoefficientTable,
    feature_spec: TensorSpec,
    name: str,
    method: str,
    tap: str,
    bundle_hash: str,
    scheduler_hash: str,
    latent_spec: TensorSpec | None = None,
    fit_stats: dict[str, Any] | None = None,
    created_by: dict[str, Any] | None = None,
    cfg_scale: float = 1.0,
    cfg_forecast: str = "guided",
) -> Predictor:
    """Write a predictor folder atomically (``predictor.json`` last) and return it.

    Args:
        directory: the folder (created; an existing predictor there is replaced).
        table: the coefficients.
        feature_spec: one tapped feature (shape with symbolic dims, float32/float16).
        name, method, tap: see :class:`Predictor`.
        bundle_hash: the bundle's hash.
        scheduler_hash: sha256 of the scheduler config (:attr:`~l2p.bundle.Bundle.scheduler_hash`).
        latent_spec: one latent, required when ``table.uses_latents``.
        fit_stats, created_by: JSON-serialisable dicts.
        cfg_scale, cfg_forecast: the classifier-free guidance it was calibrated under.

    Raises:
        InputError: for empty names or non-JSON statistics/settings, bad specs or CFG settings.
    """
    if not _is_cfg({"scale": cfg_scale, "forecast": cfg_forecast}):
        raise InputError(f"save_predictor: cfg_scale {cfg_scale!r} / cfg_forecast {cfg_forecast!r}: need a scale "
                         f">= 1 and one of {list(CFG_FORECASTS)}")
    for what, value in (("name", name), ("method", method), ("tap", tap), ("bundle_hash", bundle_hash),
                        ("scheduler_hash", scheduler_hash)):
        if not isinstance(value, str) or not value:
            raise InputError(f"save_predictor: {what} must be a non-empty string, got {value!r}")
    fit_stats = dict(fit_stats or {})
    created_by = dict(created_by or {})
    for what, value in (("fit_stats", fit_stats), ("created_by", created_by)):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise InputError(f"save_predictor: {what} is not JSON-serialisable ({e}); use plain numbers, "
                             "strings, lists and dicts") from None
    io_spec = predictor_io_spec(table, feature_spec, latent_spec)
    graph = build_predictor_graph(table, feature_spec, latent_spec, name=f"l2p_predictor_{name}").SerializeToString()

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for rel in (MANIFEST, *FILES):
        safe_relpath(root, rel, f"predictor {root}")  # refuse links planted under our file names
    (root / MANIFEST).unlink(missing_ok=True)  # the folder is not a predictor until we finish
    save_npz(root / COEFFICIENTS, **table.arrays())
    write_bytes(root / ONNX_FILE, graph)
    write_json(root / IO_SPEC, io_spec.to_dict())
    files = {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size} for rel in FILES}
    from .. import __version__

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "l2p_version": __version__,
        "name": name,
        "method": method,
        "tap": tap,
        "num_steps": table.num_steps,
        "full_steps": len(table.computed),
        "schedule": list(table.computed),
        "K": table.K,
        "uses_latents": table.uses_latents,
        "bundle_hash": bundle_hash,
        "scheduler_hash": scheduler_hash,
        "coefficient_dtype": COEFFICIENT_DTYPE,
        "feature": feature_spec.to_dict(),
        "latent": latent_spec.to_dict() if (latent_spec is not None and table.uses_latents) else None,
        "cfg": {"scale": float(cfg_scale), "forecast": cfg_forecast},
        "fit_stats": fit_stats,
        "created_by": created_by,
        "files": files,
    }
    write_json(root / MANIFEST, manifest)
    return Predictor(root, name, method, tap, table, io_spec, bundle_hash, scheduler_hash, fit_stats, created_by,
                     graph, float(cfg_scale), cfg_forecast)


def load_predictor(directory: str | os.PathLike[str], expect: Expect | None = None) -> Predictor:
    """Open and verify a predictor folder, and check it fits what the caller will use it with.

    Args:
        directory: the folder holding ``predictor.json``.
        expect: the bundle, scheduler config, step counts, tap and features it will be used
            with (``None``, or a ``None`` field, skips that check).

    Raises:
        ArtifactError: not a predictor, unknown format/version, unknown or missing keys,
            missing/truncated/tampered files, symbolic links, coefficients that do not fit the
            table, or a ``predictor.onnx`` that is not the graph of its coefficients.
        MismatchError: made for another bundle, scheduler config, step count, budget, tap or
            feature shape.
    """
    root = Path(directory)
    expect = expect or Expect()
    m = _read_manifest(root)
    _check_expectations(root, m, expect)
    verify_files(root, m)
    table = load_table(root, m)
    try:
        feature_spec = TensorSpec.from_dict(m["feature"])
        latent_spec = None if m["latent"] is None else TensorSpec.from_dict(m["latent"])
        io_spec = IOSpec.from_dict(read_json(root / IO_SPEC, f"predictor {root}: {IO_SPEC}", REMAKE))
        expected_spec = predictor_io_spec(table, feature_spec, latent_spec)
    except (InputError, KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"predictor {root}: invalid feature/latent/io spec ({e}); {REMAKE}") from None
    if io_spec != expected_spec:
        raise ArtifactError(
            f"predictor {root}: {IO_SPEC} ({io_spec.describe()}) does not match its table and feature "
            f"({expected_spec.describe()}); {REMAKE}"
        )
    if expect.features is not None:
        _check_feature(m, feature_spec, expect)
    graph = bound_graph(root, m["name"], table, feature_spec, latent_spec)
    cfg = m["cfg"]
    return Predictor(root, m["name"], m["method"], m["tap"], table, io_spec, m["bundle_hash"],
                     m["scheduler_hash"], dict(m["fit_stats"]), dict(m["created_by"]), graph,
                     float(cfg["scale"]), str(cfg["forecast"]))


def fingerprint(directory: str | os.PathLike[str]) -> dict[str, str]:
    """The identity of a predictor folder: ``sha256`` of its ``predictor.json`` (which holds every
    other file's sha256, so it names the whole predictor) and ``coefficients_sha256`` (of
    ``coefficients.npz``, as ``predictor.json`` records it). Check the folder with
    :func:`load_predictor` first; this only reads ``predictor.json``."""
    root = Path(directory)
    raw = (root / MANIFEST).read_bytes()
    coeffs = json.loads(raw)["files"][COEFFICIENTS]["sha256"]
    return {"sha256": hashlib.sha256(raw).hexdigest(), "coefficients_sha256": str(coeffs)}


def check_name(name: str, flag: str = "--name") -> str:
    """A predictor name: a plain folder name (letters, digits, '-', '_'), never a path."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME \
            or not name.replace("-", "").replace("_", "").isalnum():
        text = str(name)
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
        raise InputError(f"{flag} {shown!r}: predictor names use 1..{MAX_NAME} letters, digits, '-' and '_'")
    return name


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not os.path.lexists(path):
        raise ArtifactError(
            f"{root} is not a predictor: it has no {MANIFEST} (calibration did not finish, or this is "
            "another folder); calibrate one with: l2p calibrate BUNDLE --name NAME"
        )
    m = read_json(safe_relpath(root, MANIFEST, f"predictor {root}"), f"predictor {root}: {MANIFEST}", REMAKE)
    if m.get("format") != FORMAT:
        raise ArtifactError(f"{root}: {MANIFEST} has format {m.get('format')!r}, expected '{FORMAT}'")
    version = m.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ArtifactError(
            f"predictor {root} has format version {version!r}; this l2p reads version {FORMAT_VERSION}: "
            + ("upgrade l2p" if newer else "re-calibrate it")
        )
    unknown, missing = sorted(set(m) - _KEYS - _OPTIONAL_KEYS), sorted(_KEYS - set(m))
    if unknown or missing:
        raise ArtifactError(
            f"predictor {root}: {MANIFEST} has unknown keys {unknown} and lacks keys {missing}; "
            "it was edited or made by another tool; re-calibrate it"
        )
    m.setdefault("cfg", {"scale": 1.0, "forecast": "guided"})  # made before l2p had CFG: unguided
    checks = {
        "name": isinstance(m["name"], str), "method": isinstance(m["method"], str),
        "tap": isinstance(m["tap"], str), "bundle_hash": isinstance(m["bundle_hash"], str),
        "scheduler_hash": isinstance(m["scheduler_hash"], str),
        "num_steps": within("num_steps", m["num_steps"]) and _is_int(m["num_steps"]),
        "K": within("predictor_K", m["K"]) and _is_int(m["K"]), "full_steps": _is_int(m["full_steps"]),
        "schedule": isinstance(m["schedule"], list) and all(_is_int(s) for s in m["schedule"]),
        "uses_latents": isinstance(m["uses_latents"], bool),
        "fit_stats": isinstance(m["fit_stats"], dict), "created_by": isinstance(m["created_by"], dict),
        "files": isinstance(m["files"], dict), "cfg": _is_cfg(m["cfg"]),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ArtifactError(f"predictor {root}: {MANIFEST} has invalid values for {bad}; re-calibrate it")
    return m


def _is_cfg(v: Any) -> bool:
    return (isinstance(v, dict) and set(v) == {"scale", "forecast"} and isinstance(v["scale"], (int, float))
            and not isinstance(v["scale"], bool) and 1.0 <= v["scale"] <= 1000.0 and v["forecast"] in CFG_FORECASTS)


def _hint(m: dict[str, Any], expect: Expect) -> str:
    """The command that makes a predictor like ``m`` for what ``expect`` asks."""
    steps = expect.steps if expect.steps is not None else m["num_steps"]
    full = expect.full_steps if expect.full_steps is not None else min(m["full_steps"], steps)
    cfg = m["cfg"]
    scale = expect.cfg_scale if expect.cfg_scale is not None else cfg["scale"]
    forecast = expect.cfg_forecast if expect.cfg_forecast is not None else cfg["forecast"]
    return remake_hint(m["name"], m["method"], steps, full, expect.tap if expect.tap is not None else m["tap"],
                       scale, forecast)


def _check_expectations(root: Path, m: dict[str, Any], expect: Expect) -> None:
    made = (f"predictor '{m['name']}' at {root} was calibrated for bundle {m['bundle_hash'][:12]}, "
            f"{m['num_steps']} steps ({m['full_steps']} computed), tap '{m['tap']}'")
    hint = _hint(m, expect)
    if expect.bundle_hash is not None and expect.bundle_hash != m["bundle_hash"]:
        raise MismatchError(f"{made}, but this bundle is {expect.bundle_hash[:12]}; {hint} (with this bundle)")
    if expect.steps is not None and expect.steps != m["num_steps"]:
        raise MismatchError(f"{made}, but {expect.steps} steps were asked for; {hint}")
    if expect.full_steps is not None and expect.full_steps != m["full_steps"]:
        raise MismatchError(f"{made}, but {expect.full_steps} full steps were asked for; drop --full-steps or {hint}")
    if expect.schedule is not None and tuple(expect.schedule) != tuple(m["schedule"]):
        want = ",".join(map(str, expect.schedule))  # the weights are fitted for the predictor's own steps
        raise MismatchError(f"{made} on steps {m['schedule']}, but --schedule {want} was asked for; drop --schedule "
                            f"or re-run: l2p calibrate BUNDLE --steps {m['num_steps']} --schedule {want} --name NAME")
    if expect.tap is not None and expect.tap != m["tap"]:
        raise MismatchError(f"{made}, but tap '{expect.tap}' was asked for; {hint}")
    cfg = m["cfg"]
    if expect.cfg_scale is not None and expect.cfg_scale != cfg["scale"]:
        raise MismatchError(f"{made}, at --cfg-scale {cfg['scale']:g}, but --cfg-scale {expect.cfg_scale:g} was asked "
                            f"for; {hint}")
    if (expect.cfg_forecast is not None and cfg["scale"] > 1 and expect.cfg_forecast != cfg["forecast"]
            and (expect.cfg_scale is None or expect.cfg_scale > 1)):
        raise MismatchError(f"{made}, forecasting the CFG {cfg['forecast']}, but --cfg-forecast "
                            f"{expect.cfg_forecast} was asked for; {hint}")
    # predictors made before the scheduler config had its own hash recorded the bundle hash here,
    # which pins the scheduler config as well
    if expect.scheduler_hash is not None and m["scheduler_hash"] not in (expect.scheduler_hash, m["bundle_hash"]):
        raise MismatchError(
            f"{made} with scheduler config {m['scheduler_hash'][:12]}, but the scheduler config is "
            f"{expect.scheduler_hash[:12]}; {hint} (with this scheduler config)"
        )


def _check_feature(m: dict[str, Any], got: TensorSpec, expect: Expect) -> None:
    """The predictor's tap must be a feature the bundle provides, with its dtype and shape (a
    forged tap would feed the graph the wrong feature)."""
    want = next((f for f in expect.features or () if f.name == m["tap"]), None)
    if want is None or (got.dtype, got.shape) != (want.dtype, want.shape):
        have = f"this bundle's is {want.dtype}{list(want.shape)}" if want else "this bundle's transformer has none"
        raise MismatchError(f"predictor '{m['name']}' forecasts tap '{m['tap']}' as {got.dtype}{list(got.shape)}, "
                            f"but {have}; {_hint(m, expect)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
