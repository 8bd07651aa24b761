"""The bundle: a folder of ONNX graphs, their I/O specs, the scheduler config, tokenizers and a
manifest with the format version and the sha256 of every file.

Layout::

    BUNDLE/
      manifest.json                 written last: a bundle without it is not a bundle
      transformer/model.onnx        (+ model.onnx.data when large)
      transformer/io_spec.json
      text_encoder/ ...             optional (pipeline folders)
      vae_decoder/ ...              optional
      tokenizer/tokenizer.json      optional
      scheduler/scheduler_config.json
      predictors/NAME/ ...          calibrated predictors (not part of the bundle hash)

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import sha256_file, write_json
from .errors import ArtifactError, InputError
from .limits import check_bound
from .safe_io import make_dirs, open_regular, read_json, safe_relpath
from .locking import LOCK_NAME
from .spec import IOSpec

REEXPORT = "re-export the bundle"
PREDICTORS = "predictors"
FORMAT = "l2p-bundle"
#: 2: ``latent`` is a versioned :class:`~l2p.latent.LatentSpec` record (1 had an untyped dict)
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
_MANIFEST_KEYS = {
    "format", "format_version", "l2p_version", "family", "model_class", "model_config",
    "precision", "graphs", "scheduler", "tokenizers", "latent", "files", "export_config", "extra",
}


@dataclass(frozen=True)
class GraphEntry:
    """One exported graph: its ONNX file and I/O spec, relative to the bundle root."""

    onnx: str
    spec: str

    def to_dict(self) -> dict[str, str]:
        return {"onnx": self.onnx, "spec": self.spec}


@dataclass
class Bundle:
    """An opened, verified bundle. Use :func:`open_bundle` to get one."""

    root: Path
    manifest: dict[str, Any]
    specs: dict[str, IOSpec] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return str(self.manifest["family"])

    @property
    def graphs(self) -> dict[str, GraphEntry]:
        return {k: GraphEntry(**v) for k, v in self.manifest["graphs"].items()}

    @property
    def hash(self) -> str:
        """Identity of the bundle: sha256 over the manifest's file table and settings."""
        return bundle_hash(self.manifest)

    def has(self, graph: str) -> bool:
        return graph in self.manifest["graphs"]

    def onnx_path(self, graph: str) -> Path:
        if graph not in self.manifest["graphs"]:
            raise ArtifactError(
                f"bundle {self.root} has no '{graph}' graph (it has {sorted(self.manifest['graphs'])}); "
                "re-export from a full pipeline folder to get it"
            )
        return self.path(self.manifest["graphs"][graph]["onnx"], f"bundle {self.root}: graph '{graph}'")

    def spec(self, graph: str) -> IOSpec:
        if graph not in self.specs:
            rel = self.manifest["graphs"][graph]["spec"]
            what = f"bundle {self.root}: io spec of graph '{graph}'"
            self.specs[graph] = IOSpec.from_dict(read_json(self.path(rel, what), what, REEXPORT))
        return self.specs[graph]

    def path(self, rel: str, what: str = "bundle file") -> Path:
        """``root / rel``, refusing paths that leave the bundle or pass through a symbolic link."""
        return safe_relpath(self.root, rel, what)

    def scheduler_config(self) -> dict[str, Any]:
        what = f"bundle {self.root}: scheduler config"
        return dict(read_json(self.path(self.manifest["scheduler"], what), what, REEXPORT))

    @property
    def scheduler_hash(self) -> str:
        """sha256 of the scheduler config's canonical JSON: the config a predictor is fitted under."""
        return canonical_sha256(self.scheduler_config())

    @property
    def predictors_dir(self) -> Path:
        """``BUNDLE/predictors`` (refused when it is a symbolic link; it may not exist yet)."""
        return self.path(PREDICTORS, "bundle predictors folder")

    def predictor_dir(self, name: str, create: bool = False) -> Path:
        """``BUNDLE/predictors/NAME``, refusing links on the way; ``create`` makes the folders."""
        if not name or "/" in name or name in (".", ".."):
            raise InputError(f"predictor name {name!r} is not a folder name; use letters, digits, '-' and '_'")
        what = f"bundle {self.root}: predictor '{name}'"
        return make_dirs(self.root, f"{PREDICTORS}/{name}", what) if create else self.path(f"{PREDICTORS}/{name}", what)


def bundle_hash(manifest: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the manifest (which holds every file's sha256)."""
    return canonical_sha256(manifest)


def canonical_sha256(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces): the same for equal configs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX graph or function: initializers and node attributes, recursively."""
    yield from getattr(graph, "initializer", ())
    for sparse in getattr(graph, "sparse_initializer", ()):
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            yield from ([attr.t] if attr.HasField("t") else [])
            yield from attr.tensors
            for sparse in [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []), *attr.sparse_tensors]:
                yield from (sparse.values, sparse.indices)
            for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
                yield from _graph_tensors(sub)  # If/Loop/Scan bodies


def check_external_data(onnx_path: Path, root: Path, allowed: set[str], what: str,
                        fix: str = "re-export the bundle") -> None:
    """Refuse an ONNX file whose tensors point at data outside ``root`` or at files not in ``allowed``.

    Reads only the protobuf (``load_external_data=False``), before any runtime follows the
    references. ``allowed`` holds paths relative to ``root`` (the manifest's file table, whose
    files :func:`open_bundle` has checked to be regular files, not links); ``onnx_path`` lies under
    ``root``. Locations are compared as written, never resolved through the file system.
    """
    import onnx
    from google.protobuf.message import DecodeError

    fd = open_regular(onnx_path, what)
    try:
        with os.fdopen(fd, "rb") as f:
            model = onnx.load_model_from_string(f.read())
    except (DecodeError, ValueError, OSError) as e:
        raise ArtifactError(f"{what}: {onnx_path} is not a readable ONNX file ({e}); {fix}") from None
    folder = onnx_path.parent.relative_to(root).as_posix()
    tensors = [*_graph_tensors(model.graph), *(t for f in model.functions for t in _graph_tensors(f))]
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        rel = posixpath.normpath(posixpath.join(folder, loc))
        if not loc:
            problem = "an empty path"
        elif os.path.isabs(loc) or loc.startswith(("/", "\\")) or ":" in loc.split("/")[0]:
            problem = "an absolute path"
        elif rel == ".." or rel.startswith("../"):
            problem = "a path outside the artifact"
        elif rel not in allowed:
            problem = "a file not listed in the manifest"
        else:
            continue
        raise ArtifactError(
            f"{what}: tensor '{t.name}' in {onnx_path.name} reads external data from '{loc}', {problem}; "
            f"refusing to load it (external data must be a listed file next to the graph); {fix}"
        )


def open_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Open the bundle at ``path``, checking the format and (by default) every file's sha256.

    Every path the manifest names must be a regular file inside the bundle, reached without a
    symbolic link; metadata sizes are checked against :data:`l2p.limits.BOUNDS`.

    Raises :class:`ArtifactError` for a missing, truncated, tampered or out-of-bounds bundle.
    """
    root = Path(path)
    manifest = read_manifest(root)
    try:
        return _verified(root, manifest, verify)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a hand-edited manifest or io spec
        raise ArtifactError(f"{root / MANIFEST}: malformed manifest or io spec ({type(e).__name__}: {e}); "
                            "re-export the bundle") from None


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the bundle folder ``root``, its format and keys checked (files are not)."""
    man_path = root / MANIFEST
    if not root.is_dir():
        from .models import download_hint, local_name, looks_like_hub_id

        if looks_like_hub_id(str(root)):
            raise ArtifactError(
                f"bundle folder '{root}' does not exist; it looks like a model-hub id, but this command takes an "
                f"exported bundle: download the model ({download_hint(str(root))}), export it (l2p export "
                f"{local_name(str(root))} --out BUNDLE) and give BUNDLE; or write a bundle at this path: "
                f"l2p export MODEL --out {root}")
        raise ArtifactError(f"bundle folder '{root}' does not exist; create one with: l2p export MODEL --out {root}")
    if not os.path.lexists(man_path):
        raise ArtifactError(
            f"'{root}' has no {MANIFEST}: it is not a bundle or its export did not finish; "
            f"re-run: l2p export MODEL --out {root}"
        )
    manifest = read_json(safe_relpath(root, MANIFEST, f"bundle {root}"), str(man_path), REEXPORT)
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{man_path} is not an l2p bundle manifest (format != '{FORMAT}')")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{man_path}: bundle format version {manifest.get('format_version')} is not supported "
            f"(this l2p reads version {FORMAT_VERSION}); re-export with this version of l2p"
        )
    unknown = set(manifest) - _MANIFEST_KEYS
    if unknown:
        raise ArtifactError(f"{man_path}: unknown manifest keys {sorted(unknown)}")
    return manifest


def _verified(root: Path, manifest: dict[str, Any], verify: bool) -> Bundle:
    """Check every listed file, and that everything the bundle reads is listed (see open_bundle)."""
    files: dict[str, Any] = manifest.get("files", {})
    where = str(root / MANIFEST)
    if "transformer" not in manifest.get("graphs", {}):
        raise ArtifactError(f"{where} lists no 'transformer' graph (it has {sorted(manifest.get('graphs', {}))}); "
                            f"every bundle has one; {REEXPORT}")
    for rel, info in files.items():
        full = safe_relpath(root, rel, where, kind="file")
        size = full.stat().st_size  # a regular file, not a link (safe_relpath)
        if size != info["size"]:
            raise ArtifactError(
                f"bundle file '{rel}' has {size} bytes, the manifest says {info['size']}: "
                "it is truncated or was changed; re-export the bundle"
            )
        if verify and sha256_file(full) != info["sha256"]:
            raise ArtifactError(
                f"bundle file '{rel}' does not match its sha256 in the manifest: it was corrupted or "
                "tampered with; re-export the bundle"
            )
    refs = {f"graph '{n}' {k}": g[k] for n, g in manifest.get("graphs", {}).items() for k in ("onnx", "spec")}
    refs.update({f"tokenizer '{n}'": t["path"] for n, t in manifest.get("tokenizers", {}).items()})
    if "scheduler" in manifest:
        refs["scheduler config"] = manifest["scheduler"]
    for what, rel in refs.items():
        if rel not in files:
            raise ArtifactError(f"{what}: file '{rel}' is not listed in the manifest; re-export the bundle")
    check_metadata(manifest, where)
    for name, g in manifest.get("graphs", {}).items():
        check_external_data(root / g["onnx"], root, set(files), f"bundle graph '{name}'")
    bundle = Bundle(root=root, manifest=manifest)
    for name in manifest.get("graphs", {}):
        bundle.spec(name)
    if "scheduler" in manifest:
        bundle.scheduler_config()  # valid JSON (the sampler reads it on every run)
    return bundle


def check_metadata(manifest: dict[str, Any], where: str) -> None:
    """Check the sizes in the manifest that l2p allocates from (tokenizer lengths) against
    :data:`l2p.limits.BOUNDS`, before anything is allocated; graph names must be plain names (they
    name plan folders). The latent record is bounded by :class:`l2p.latent.LatentSpec`."""
    for name in manifest.get("graphs", {}):
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name):
            raise ArtifactError(f"{where}: graph name {name[:80]!r} is not a plain name (letters, digits, '_', "
                                f"'.', '-'); {REEXPORT}")
    for name, t in manifest.get("tokenizers", {}).items():
        check_bound("max_length", t["max_length"], f"{where}: tokenizer '{name}' max_length", REEXPORT)
        check_bound("token_id", t["pad_id"], f"{where}: tokenizer '{name}' pad_id", REEXPORT)


def write_manifest(root: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under ``root`` (except predictors/, temp and lock files) and write the manifest last."""
    root = Path(root)
    unknown = set(fields) - _MANIFEST_KEYS
    if unknown:
        raise InputError(f"unknown manifest fields {sorted(unknown)}")
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel == MANIFEST or rel.startswith("predictors/") or p.name.endswith(".tmp") \
                or p.name == LOCK_NAME:
            continue
        files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    from . import __version__

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "l2p_version": __version__,
        **fields,
        "files": files,
    }
    write_json(root / MANIFEST, manifest)
    return manifest


def bundle_of(path: str | os.PathLike[str]) -> Bundle | None:
    """The bundle that holds the file ``path`` (in its folder or the one above), or None.

    Opened with :func:`open_bundle` without re-hashing its files (sizes, references and I/O specs
    are still checked): a broken bundle is an :class:`ArtifactError`, not "no bundle".
    """
    for root in list(Path(path).resolve().parents)[:2]:
        if (root / MANIFEST).is_file():
            return open_bundle(root, verify=False)
    return None
