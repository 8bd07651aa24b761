"""What ``l2p export --out`` may replace, and which calibrated predictors survive a re-export.

``--out`` may be missing, an empty folder, an l2p bundle (its ``manifest.json`` says
``"format": "l2p-bundle"``), or a folder an interrupted export of an older l2p left (the
in-progress marker, no manifest). Any other folder, or a file, is refused before anything is
written. A bundle is replaced as a whole, only once the new one is complete
(:class:`l2p.staging.StagedFolder`).

What a bundle holds besides its listed files:

- ``predictors/``: a predictor records the hash of the bundle it was calibrated for, and that
  hash changes with any file or setting of the bundle. Its coefficients stay right for the new
  bundle exactly when everything that decides the denoising trajectory is byte-identical:
  the transformer and head graphs (with their I/O specs and external data), the scheduler
  config, and the family, model class, precision and latent layout (:func:`denoiser_key`).
  Such a predictor is *re-keyed*: copied into the new bundle and pointed at its hash, with a note
  in its ``fit_stats``. Every other entry (a predictor of another denoiser, one that was
  already stale or is damaged, a file that is no predictor) would be lost: export refuses
  unless ``--force`` and names them. The trajectory cache (``predictors/.cache``) is keyed by
  the bundle hash and is dropped.
- ``plans/``: TensorRT plans, a cache keyed by the graph hashes; dropped (``l2p build`` remakes them).
- files the manifest does not list (other than the lock and temp files): the user's; refused
  unless ``--force``.

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import FORMAT, MANIFEST, bundle_hash
from ..errors import ArtifactError, InputError, MismatchError
from ..locking import LOCK_NAME
from ..atomic import write_json
from ..predictor.artifact import MANIFEST as PREDICTOR_MANIFEST
from ..predictor.artifact import Expect, load_predictor

MARKER = ".l2p-export-in-progress"  # what older l2p versions left in a folder they were exporting to
#: the graphs the denoising loop runs (text encoders and the VAE decoder do not change a trajectory)
DENOISER_GRAPHS = ("transformer", "head")
_CACHES = ("predictors", "plans")


@dataclass
class OldOut:
    """What ``--out`` holds now."""

    path: Path
    manifest: dict[str, Any] | None = None  # None: missing, empty, or an interrupted older export
    predictors: dict[str, Path] = field(default_factory=dict)  # entries of predictors/ (not .cache)
    unlisted: list[str] = field(default_factory=list)  # files the manifest does not list: the user's
    plans: int = 0  # TensorRT plan files

    @property
    def hash(self) -> str:
        return bundle_hash(self.manifest) if self.manifest is not None else ""


def _is_own_scratch(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(".tmp"))


def inspect_out(out: Path) -> OldOut:
    """Classify ``--out`` without changing anything; refuse what export must not replace."""
    old = OldOut(out)
    if not out.exists():
        return old
    if not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the bundle")
    entries = [p for p in out.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return old
    man = out / MANIFEST
    if not man.exists():
        if (out / MARKER).is_file():
            return old  # an export of an older l2p was interrupted here: all its files are l2p's
        raise InputError(f"--out {out} is a folder that is not an l2p bundle (no {MANIFEST}); l2p replaces only "
                         "its own bundles: choose another --out, or an empty or new folder")
    try:
        manifest = json.loads(man.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise InputError(f"--out {out} holds a {MANIFEST} that is not an l2p bundle manifest (format "
                         f"'{FORMAT}'); l2p replaces only its own bundles: choose another --out")
    old.manifest = manifest
    listed = set(manifest["files"]) | {MANIFEST}
    for dirpath, dirs, names in os.walk(out):  # never follows symlinks
        here = Path(dirpath)
        for n in sorted(names) + sorted(d for d in dirs if (here / d).is_symlink()):
            rel = (here / n).relative_to(out).as_posix()
            top = rel.split("/", 1)[0]
            if rel in listed or _is_own_scratch(rel) or top == "predictors":
                continue
            if top == "plans":
                old.plans += 1
            else:
                old.unlisted.append(rel)
    pred_dir = out / "predictors"
    if pred_dir.is_dir() and not pred_dir.is_symlink():
        for p in sorted(pred_dir.iterdir()):
            if p.name != ".cache" and not (p.name.startswith(".") and p.name.endswith(".lock")):
                old.predictors[p.name] = p
    elif pred_dir.exists() or pred_dir.is_symlink():
        old.unlisted.append("predictors")
    return old


def denoiser_key(manifest: dict[str, Any]) -> str:
    """sha256 over what decides a denoising trajectory (see the module docstring)."""
    files = manifest.get("files", {})
    parts = {
        "files": {rel: info.get("sha256") for rel, info in sorted(files.items())
                  if rel.split("/", 1)[0] in DENOISER_GRAPHS or rel == manifest.get("scheduler")},
        **{k: manifest.get(k) for k in ("family", "model_class", "precision", "latent")},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stale_predictors(old: OldOut, new_manifest: dict[str, Any] | None = None,
                     settings_change: str = "") -> dict[str, str]:
    """Entries of ``predictors/`` that would not match the new bundle: ``{name: why}``.

    Before the export (``new_manifest`` None) only what is certain: entries that are no valid
    predictor of the old bundle, and every predictor when ``settings_change`` (a certain change of
    the transformer graph, e.g. another latent size) is given.
    """
    lost: dict[str, str] = {}
    same = new_manifest is None or denoiser_key(new_manifest) == denoiser_key(old.manifest or {})
    for name, path in old.predictors.items():
        if not path.is_dir() or path.is_symlink() or not (path / PREDICTOR_MANIFEST).is_file():
            lost[name] = "not a predictor"
            continue
        try:
            load_predictor(path, Expect(bundle_hash=old.hash))
        except MismatchError:
            lost[name] = "made for another bundle"
            continue
        except ArtifactError:
            lost[name] = "damaged"
            continue
        if settings_change:
            lost[name] = settings_change
        elif not same:
            lost[name] = "the new transformer graph, scheduler or latent layout differs from the one it was fitted to"
    return lost


def refuse_losses(old: OldOut, lost: dict[str, str], force: bool, log: Callable[[str], None]) -> None:
    """Stop unless ``--force`` when replacing ``old`` would delete predictors or the user's files."""
    what = [f"predictor '{n}' ({why})" for n, why in lost.items()]
    if old.unlisted:
        shown = ", ".join(old.unlisted[:5]) + (f" and {len(old.unlisted) - 5} more" if len(old.unlisted) > 5 else "")
        what.append(f"{len(old.unlisted)} file(s) the bundle does not list ({shown})")
    if not what:
        return
    if not force:
        raise InputError(
            f"--out {old.path} holds what replacing the bundle would delete: {'; '.join(what)}; move them away, "
            "or export to another --out, or give --force to delete them"
        )
    log(f"--force: deleting {'; '.join(what)}")


def carry_predictors(old: OldOut, new_root: Path, new_manifest: dict[str, Any], lost: dict[str, str],
                     log: Callable[[str], None]) -> list[str]:
    """Copy every predictor not in ``lost`` into the new bundle and re-key it to its hash."""
    kept = [n for n in old.predictors if n not in lost]
    new_hash = bundle_hash(new_manifest)
    for name in kept:
        dst = new_root / "predictors" / name
        shutil.copytree(old.predictors[name], dst, symlinks=True,
                        ignore=shutil.ignore_patterns(LOCK_NAME, ".*.tmp"))
        rekey_predictor(dst, old.hash, new_hash,
                        "re-export: transformer, head, scheduler and latent layout byte-identical")
    if kept:
        log(f"kept {len(kept)} predictor(s) ({', '.join(kept)}): the denoiser is byte-identical, re-keyed to the "
            "new bundle")
    if old.plans:
        log(f"dropped {old.plans} TensorRT plan file(s) of the old bundle (rebuild with: l2p build {old.path})")
    return kept


def settings_change(old: OldOut, model_class: str, latent_size: tuple[int, int], precision: str) -> str:
    """Why the new transformer graph certainly differs from the old bundle's ('' when it may not)."""
    if old.manifest is None:
        return ""
    ec = old.manifest.get("export_config")
    made = ec.get("settings") if isinstance(ec, dict) else None
    made = made if isinstance(made, dict) else {}
    if old.manifest.get("model_class") != model_class:
        return f"the model class changes from {old.manifest.get('model_class')} to {model_class}"
    if (made.get("latent_height"), made.get("latent_width")) != tuple(latent_size):
        return f"the latent size changes from {made.get('latent_height')}x{made.get('latent_width')} to " \
               f"{latent_size[0]}x{latent_size[1]}"
    if old.manifest.get("precision") != precision:
        return f"the precision changes from {old.manifest.get('precision')} to {precision}"
    return ""


def rekey_predictor(directory: Path, old_bundle_hash: str, new_bundle_hash: str, reason: str) -> None:
    """Point a verified predictor of bundle ``old_bundle_hash`` at ``new_bundle_hash``.

    Only for a new bundle whose denoiser is byte-identical to the old one (see
    :func:`denoiser_key`): the coefficients stay right, only the key changes. The re-keying is
    recorded in ``fit_stats["rekeyed"]``; the predictor's files are not touched.
    """
    load_predictor(directory, Expect(bundle_hash=old_bundle_hash))
    m = json.loads((directory / PREDICTOR_MANIFEST).read_text())
    m["bundle_hash"] = new_bundle_hash
    if m["scheduler_hash"] == old_bundle_hash:  # predictors that keyed the scheduler by the bundle hash
        m["scheduler_hash"] = new_bundle_hash
    m["fit_stats"]["rekeyed"] = [*m["fit_stats"].get("rekeyed", []),
                                 {"from": old_bundle_hash, "to": new_bundle_hash, "reason": reason}]
    write_json(directory / PREDICTOR_MANIFEST, m)
    load_predictor(directory, Expect(bundle_hash=new_bundle_hash))
