"""``l2p inspect``: what is in a bundle, as data (``--json``) or as text.

For every graph its ONNX file, size, precision, opset, node count and I/O (names, dtypes,
shapes with symbolic dims); the tokenizers of the text encoders; the scheduler (class and its
config); every predictor under ``predictors/`` (steps, budget, schedule, K, tap, fit and
calibration score), each checked against the bundle as sampling checks it, a broken or foreign
one listed with its error; and the TensorRT plans under ``plans/``. What Polygraphy's
``inspect model`` gives for one graph, for a whole bundle.

Torch-free: the ONNX protobufs are read without their external data.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from .bundle import Bundle, open_bundle
from .errors import L2PError
from .models import BUILTIN

#: scheduler config keys shown in the text report (all of them are in the JSON)
SCHEDULER_KEYS = ("num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift",
                  "prediction_type", "beta_schedule", "timestep_spacing", "solver_order", "flow_shift")


def inspect_bundle(path: str | os.PathLike[str], verify: bool = False) -> dict[str, Any]:
    """A JSON-ready description of the bundle at ``path``.

    Args:
        verify: also check every file's sha256 (slow for large bundles); sizes and references
            are always checked, as :func:`~l2p.bundle.open_bundle` does.

    Raises:
        ArtifactError: the folder is not a readable bundle. Predictors and plans that fail their
            checks do not raise: they are listed with their ``error``.
    """
    bundle = open_bundle(path, verify=verify)
    m = bundle.manifest
    files = m.get("files", {})
    source = m.get("export_config", {}).get("source")
    return {
        "bundle": {
            "path": str(bundle.root), "format_version": m["format_version"], "l2p_version": m.get("l2p_version"),
            "hash": bundle.hash, "verified": "sha256" if verify else "sizes", "family": bundle.family,
            "model_class": m.get("model_class"), "precision": m.get("precision"), "source": source,
            "builtin_model": source in BUILTIN, "files": len(files),
            "bytes": sum(int(f["size"]) for f in files.values()), "latent": m.get("latent", {}),
        },
        "graphs": {name: graph_info(bundle, name) for name in bundle.graphs},
        "text_encoders": tokenizer_info(bundle),
        "scheduler": bundle.scheduler_config() if "scheduler" in m else None,
        "predictors": predictor_info(bundle),
        "plans": plan_info(bundle),
    }


def graph_info(bundle: Bundle, name: str) -> dict[str, Any]:
    """One graph: files, bytes (the ``.onnx`` and its external data), precision, opset, nodes, I/O."""
    import onnx

    from .engine.trt_plans import graph_precision

    onnx_path = bundle.onnx_path(name)
    entry = bundle.graphs[name]
    folder = Path(entry.onnx).parent.as_posix() + "/"
    data_files = {rel: int(f["size"]) for rel, f in bundle.manifest.get("files", {}).items()
                  if rel.startswith(folder) and rel != entry.spec}
    model = onnx.load(str(onnx_path), load_external_data=False)
    spec = bundle.spec(name)
    return {
        "onnx": entry.onnx, "files": sorted(data_files), "bytes": sum(data_files.values()),
        "precision": graph_precision(model).value,
        "opset": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
        "nodes": len(model.graph.node),
        "ops": dict(Counter(n.op_type for n in model.graph.node).most_common()),
        "inputs": [t.to_dict() for t in spec.inputs], "outputs": [t.to_dict() for t in spec.outputs],
    }


def tokenizer_info(bundle: Bundle) -> dict[str, Any]:
    """Text encoder name -> its tokenizer (kind, file, vocabulary size, token length, pad id)."""
    from .sampling.text import load_tokenizers

    entries = bundle.manifest.get("tokenizers", {})
    toks = load_tokenizers(bundle.root, entries) if entries else {}
    return {enc: {"kind": e.get("kind"), "tokenizer": e["path"], "vocab_size": toks[enc].tok.get_vocab_size(),
                  "max_length": int(e["max_length"]), "pad_id": int(e["pad_id"]),
                  "truncates": toks[enc].truncate}
            for enc, e in entries.items()}


def predictor_info(bundle: Bundle) -> list[dict[str, Any]]:
    """Every predictor folder of the bundle, checked as sampling checks it (bundle, scheduler
    config, feature shapes, every file's sha256); one that fails is listed with its ``error``."""
    from .predictor.artifact import fingerprint, load_predictor
    from .sampling.methods import expectation

    root = bundle.predictors_dir
    if not root.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            pred = load_predictor(folder, expect=expectation(bundle))
        except L2PError as e:
            out.append({"name": folder.name, "error": str(e)})
            continue
        st = pred.fit_stats
        out.append({
            "name": pred.name, "method": pred.method, "tap": pred.tap, "steps": pred.num_steps,
            "full_steps": len(pred.schedule), "schedule": list(pred.schedule), "K": pred.K,
            "uses_latents": pred.table.uses_latents, "chosen": st.get("chosen"),
            "calibration_psnr_db": st.get("calibration_psnr_db"), "calibration_metric": st.get("calibration_metric"),
            "calibration_seeds": pred.created_by.get("seeds"),
            "holdout_psnr_db": (st.get("holdout") or {}).get("psnr_db"), **fingerprint(folder),
        })
    return out


def plan_info(bundle: Bundle) -> list[dict[str, Any]]:
    """Every TensorRT plan sidecar under ``BUNDLE/plans/``: graph, key, TensorRT version, GPU,
    precision, size, and whether it was built from the bundle's current graph."""
    from .engine.trt_plans import graph_sha256, read_sidecar

    root = bundle.root / "plans"
    if not root.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for sidecar in sorted(root.glob("*/*.json")):
        graph = sidecar.parent.name
        plan = sidecar.with_suffix(".plan").relative_to(bundle.root).as_posix()
        item: dict[str, Any] = {"graph": graph, "file": plan}
        try:
            info = read_sidecar(sidecar)
        except L2PError as e:
            out.append({**item, "error": str(e)})
            continue
        current = bundle.has(graph) and info["onnx_sha256"] == graph_sha256(
            bundle.onnx_path(graph), bundle.root, bundle.manifest.get("files"))
        out.append({**item, "key": info["key"], "trt_version": info["trt_version"],
                    "compute_capability": info["compute_capability"], "precision": info["precision"],
                    "bytes": info.get("plan_size"), "profiles": info["profiles"], "current": current})
    return out


# text ---------------------------------------------------------------------------------------
def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def _tensor(t: dict[str, Any]) -> str:
    return f"{t['name']:24s} {t['dtype']:8s} [{', '.join(str(d) for d in t['shape'])}]"


def _fit_words(chosen: dict[str, Any] | None) -> str:
    """``, exact to degree 1, latent terms`` for a calibrated table's chosen fit ("" for presets)."""
    if not chosen:
        return ""
    exact = chosen.get("exact")
    words = {None: "", -1: ", free weights", 0: ", weights sum to 1"}.get(exact, f", exact to degree {exact}")
    start = chosen.get("start")
    return (words + (", latent terms" if chosen.get("latents") else "")
            + (f", started from {start}" if start not in (None, "least squares") else ""))


def _section(title: str, items: list[dict[str, Any]], describe: Any, empty: str) -> list[str]:
    """A titled list: ``describe(item)`` lines per item, its error instead when it has one."""
    out = ["", title]
    for it in items:
        label = it.get("name") or it.get("file")
        out += [f"  {label}: cannot be used: {it['error']}"] if "error" in it else describe(it)
    return out + ([f"  none ({empty})"] if not items else [])


def _predictor_lines(p: dict[str, Any]) -> list[str]:
    score = p["calibration_psnr_db"]
    scored = f", calibration {score:.2f} dB ({p['calibration_metric']} PSNR)" if score is not None else ""
    held = p.get("holdout_psnr_db")
    scored += f", held-out {held:.2f} dB" if held is not None else ""
    return [f"  {p['name']}: {p['method']}, tap {p['tap']}, {p['full_steps']}/{p['steps']} full steps, "
            f"K={p['K']}{_fit_words(p['chosen'])}{scored}, sha256 {p['sha256'][:12]}",
            f"    schedule {p['schedule']}"]


def _plan_lines(t: dict[str, Any]) -> list[str]:
    return [f"  {t['graph']}: key {t['key'][:12]}, TensorRT {t['trt_version']}, sm {t['compute_capability']}, "
            f"{t['precision']}, {_mb(t['bytes'])}{'' if t['current'] else ', STALE (graph changed)'}"]


def format_inspection(r: dict[str, Any]) -> str:
    """The report of :func:`inspect_bundle` as text, one section per part of the bundle."""
    b = r["bundle"]
    src = f"{b['source']} (built-in model)" if b["builtin_model"] else b["source"] or "?"
    lat = b["latent"]
    lines = [f"bundle {b['path']}  (format {b['format_version']}, l2p {b['l2p_version']}, hash {b['hash'][:12]}, "
             f"files checked: {b['verified']})",
             f"  {b['family']} / {b['model_class']}, precision {b['precision']}, exported from {src}",
             f"  {b['files']} files, {_mb(b['bytes'])}"]
    if lat:
        lines.append("  latent: " + ", ".join(f"{k} {v}" for k, v in lat.items() if k != "version" and v is not None))
    lines += ["", "graphs"]
    for name, g in r["graphs"].items():
        ops = ", ".join(f"{k} {v}" for k, v in list(g["ops"].items())[:4])
        opset = ", ".join(f"{d} {v}" for d, v in g["opset"].items())
        lines.append(f"  {name}: {g['onnx']}, {_mb(g['bytes'])}, {g['precision']}, opset {opset}, "
                     f"{g['nodes']} nodes ({ops}, ...)")
        lines += [f"    in   {_tensor(t)}" for t in g["inputs"]]
        lines += [f"    out  {_tensor(t)}" for t in g["outputs"]]
    lines += ["", "text encoders"]
    for enc, t in r["text_encoders"].items():
        longer = "longer prompts are cut" if t["truncates"] else "longer prompts refused"
        lines.append(f"  {enc}: {t['kind']} tokenizer {t['tokenizer']}, vocabulary {t['vocab_size']}, "
                     f"{t['max_length']} tokens ({longer}), pad id {t['pad_id']}")
    if not r["text_encoders"]:
        lines.append("  none (sample with --conditioning)")
    lines += ["", "scheduler"]
    sch = r["scheduler"]
    if sch is None:
        lines.append("  none")
    else:
        shown = [k for k in SCHEDULER_KEYS if sch.get(k) not in (None, False)]
        if not sch.get("use_dynamic_shifting"):  # base/max shift only matter with dynamic shifting
            shown = [k for k in shown if k not in ("base_shift", "max_shift")]
        key = ", ".join(f"{k}={sch[k]}" for k in shown)
        lines.append(f"  {sch.get('_class_name', '?')}: {key}")
    lines += _section("predictors", r["predictors"], _predictor_lines,
                      f"make one with: l2p calibrate {b['path']} ... --name NAME")
    lines += _section("TensorRT plans", r["plans"], _plan_lines,
                      f"build them on a GPU with: l2p build {b['path']} --opt DIMS")
    return "\n".join(lines)
