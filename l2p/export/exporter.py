"""``l2p export``: a diffusers folder -> a bundle (ONNX graphs, I/O specs, tokenizers, scheduler,
manifest written last).

Idempotent: a bundle whose manifest records the same export settings and source fingerprint is
left alone. The new bundle is written beside ``--out`` and swapped in once complete
(:mod:`l2p.staging`); what may be replaced is decided in :mod:`l2p.export.out_dir`.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..atomic import write_json
from ..bundle import MANIFEST, open_bundle, write_manifest
from ..engine.registry import open_engine
from ..errors import ArtifactError, InputError, L2PError
from ..metrics import rel_error
from ..failures import first_line
from ..families import Family, family_of_model
from ..models import model_defaults, read_json, resolve_model
from ..precision import FORWARD_RTOL, Precision, torch_dtype
from ..staging import StagedFolder
from .base import ExportGraph, FamilyAdapter
from .encoders import clip_graph, clip_projection_graph, t5_graph, trace_args, vae_decoder_graph
from .onnx_export import export_graph
from .out_dir import MARKER, carry_predictors, inspect_out, refuse_losses, settings_change, stale_predictors

__all__ = ["MARKER", "ExportConfig", "export_bundle"]

#: text encoder and tokenizer folders of a pipeline folder (FLUX uses the first two, SD3 all three)
TEXT_ENCODERS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"), ("text_encoder_3", "tokenizer_3"))

#: bounds checked before anything is loaded or allocated
MAX_LATENT = 1024
MAX_TEXT_LENGTH = 4096


@dataclass(frozen=True)
class ExportConfig:
    """Settings of one export (saved in the manifest; a rerun with the same settings is a no-op)."""

    latent_height: int
    latent_width: int
    precision: str = "fp32"
    max_sequence_length: int = 512
    check: bool = True


def _fingerprint(folder: Path) -> str:
    """sha256 over the folder's files: full content for small files, name+size for big weights."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            size = p.stat().st_size
            h.update(str(size).encode())
            if size < (64 << 20):
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _load(cls_name: str, path: Path, dtype: torch.dtype) -> torch.nn.Module:
    import diffusers
    import transformers

    # their "Loading weights" bars would interleave with our log lines; loading a checkpoint is quick
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    cls = getattr(diffusers, cls_name, None) or getattr(transformers, cls_name, None)
    if cls is None:
        raise InputError(f"{path}: unknown class '{cls_name}'")
    kw: dict[str, Any] = {"low_cpu_mem_usage": True}
    kw["torch_dtype" if hasattr(diffusers, cls_name) else "dtype"] = dtype
    try:
        return cls.from_pretrained(str(path), **kw).eval()
    except Exception as e:  # diffusers/transformers/safetensors raise many types for a damaged folder
        raise InputError(f"cannot load {cls_name} from {path}: {type(e).__name__}: {first_line(e)}; the model "
                         "folder is incomplete or damaged: copy or download it again") from e


def _save_graph(graph: ExportGraph, out: Path, precision: Precision, args: tuple[torch.Tensor, ...]) -> dict[str, str]:
    folder = out / graph.name
    export_graph(graph, folder / "model.onnx", precision, args)
    write_json(folder / "io_spec.json", graph.spec.to_dict())
    return {"onnx": f"{graph.name}/model.onnx", "spec": f"{graph.name}/io_spec.json"}


def _check_graph(adapter: FamilyAdapter, graph: ExportGraph, out: Path, precision: Precision) -> float:
    """Relative error of the exported transformer vs. the diffusers forward on sample inputs."""
    feed = adapter.sample_feed(graph.trace_dims, seed=1)
    feed = {k: feed[k] for k in graph.spec.input_names}
    engine = open_engine("onnxruntime", out / graph.name / "model.onnx", graph.spec, name=graph.name)
    err = rel_error(engine.run(feed)["sample"], adapter.reference(feed)["sample"])
    if not err <= FORWARD_RTOL[precision] * 10:
        raise L2PError(f"exported {graph.name} differs from PyTorch: relative error {err:.3g}")
    return err


def _tokenizer(src: Path, dst: Path, max_length: int) -> dict[str, Any]:
    """Copy/convert a tokenizer to ``tokenizer.json`` and record padding settings."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    dst.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(dst / "tokenizer.json"))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return {"path": f"{dst.name}/tokenizer.json", "max_length": int(max_length), "pad_id": int(pad)}


def export_bundle(model: str, out: str | Path, latent_size: tuple[int, int] | None = None,
                  image_size: tuple[int, int] | None = None, precision: str = "fp32",
                  max_sequence_length: int | None = None, check: bool = True, force: bool = False,
                  log: Callable[[str], None] = print) -> Path:
    """Export ``model`` (a diffusers folder or built-in name) to the bundle folder ``out``.

    Every argument is checked before the disk is touched. An existing bundle at ``out`` is
    replaced only once the new one is complete; its calibrated predictors are kept when the new
    denoiser is byte-identical, and export refuses to delete any other predictor or a file the
    bundle does not list unless ``force`` (see :mod:`l2p.export.out_dir`).
    """
    src = resolve_model(model)
    out = Path(os.path.realpath(out))  # --out given as a symlink: write where it points
    prec = Precision.parse(precision)
    defaults = model_defaults(src)
    pipeline = (src / "model_index.json").is_file()
    tcfg = read_json(src / "transformer" / "config.json")
    cls_name = str(tcfg.get("_class_name", ""))
    fam = family_of_model(cls_name)
    adapter_cls = fam.adapter_class()

    vae_factor = None
    if pipeline and (src / "vae" / "config.json").is_file():
        vae_factor = 2 ** (len(read_json(src / "vae" / "config.json")["block_out_channels"]) - 1)
    if latent_size is None:
        if image_size is None and "height" in defaults:
            image_size = (int(defaults["height"]), int(defaults["width"]))
        if image_size is not None:
            if vae_factor is None:
                raise InputError("--height/--width need a pipeline folder with a VAE; give --latent-size H W")
            if image_size[0] % vae_factor or image_size[1] % vae_factor:
                raise InputError(f"image size {image_size} must be divisible by the VAE factor {vae_factor}")
            latent_size = (image_size[0] // vae_factor, image_size[1] // vae_factor)
        elif vae_factor is not None:
            latent_size = (1024 // vae_factor, 1024 // vae_factor)
        else:
            raise InputError("a transformer-only folder needs --latent-size H W (the VAE latent size)")
    _check_latent_size(adapter_cls, tcfg, latent_size)
    _check_text_length(src, pipeline, max_sequence_length)
    max_len = int(max_sequence_length or defaults.get("max_sequence_length", 512))
    cfg = ExportConfig(latent_size[0], latent_size[1], prec.value, max_len, check)
    old = inspect_out(out)  # refuses a file or a foreign folder before anything is written
    change = settings_change(old, cls_name, latent_size, prec.value)
    if change:  # the export will certainly replace the bundle: refuse losses before the long part
        refuse_losses(old, stale_predictors(old, settings_change=change), force, log=lambda s: None)
    fingerprint = _fingerprint(src)

    with StagedFolder(out, f"bundle {out}") as staged:
        if _up_to_date(out, cfg, fingerprint):
            log(f"bundle {out} is up to date (same model and settings); nothing to do")
            return out
        old = inspect_out(out)  # again, under the lock
        change = settings_change(old, cls_name, latent_size, prec.value)
        refuse_losses(old, stale_predictors(old, settings_change=change), force, log=lambda s: None)
        stage = staged.begin()
        manifest = _write_bundle(src, stage, model, fam, cls_name, tcfg, cfg, prec, pipeline, defaults,
                                 fingerprint, log)
        lost = stale_predictors(old, new_manifest=manifest, settings_change=change)
        refuse_losses(old, lost, force, log)  # with --force: says what it deletes
        carry_predictors(old, stage, manifest, lost, log)
        staged.commit()
    log(f"wrote bundle {out}")
    return out


def _check_latent_size(adapter_cls: type[FamilyAdapter], tcfg: dict[str, Any], latent_size: tuple[int, int]) -> None:
    """The adapter's latent-size check on the transformer config alone, before any weights are loaded."""
    import diffusers

    if not all(1 <= d <= MAX_LATENT for d in latent_size):
        raise InputError(f"latent size {latent_size[0]}x{latent_size[1]} is out of range; use 1..{MAX_LATENT} "
                         "per side (images: the latent size times the VAE factor, usually 8)")
    init = inspect.signature(getattr(diffusers, str(tcfg["_class_name"])).__init__).parameters.values()
    config = {p.name: p.default for p in init if p.default is not inspect.Parameter.empty}
    probe = object.__new__(adapter_cls)  # check_latent_size reads only .model.config and .latent_size
    probe.model = SimpleNamespace(config=SimpleNamespace(**{**config, **tcfg}))  # type: ignore[assignment]
    probe.latent_size = latent_size
    probe.check_latent_size()


def _check_text_length(src: Path, pipeline: bool, max_sequence_length: int | None) -> None:
    if max_sequence_length is None:
        return
    if not 1 <= max_sequence_length <= MAX_TEXT_LENGTH:
        raise InputError(f"--max-sequence-length {max_sequence_length} is out of range; use 1..{MAX_TEXT_LENGTH} "
                         "(T5 tokens; FLUX.1 uses 512)")
    index = read_json(src / "model_index.json") if pipeline else {}
    if not any(str((index.get(enc) or [None, None])[1]).startswith("T5") for enc, _ in TEXT_ENCODERS):
        raise InputError(f"--max-sequence-length sets the token length of a pipeline's T5 text encoder, and {src} "
                         "has none (a transformer-only folder takes its conditioning from COND.npz); drop it")


def _up_to_date(out: Path, cfg: ExportConfig, fingerprint: str) -> bool:
    """Whether ``out`` is a sound bundle made from the same source with the same settings."""
    if not (out / MANIFEST).is_file():
        return False
    try:
        ec = open_bundle(out, verify=True).manifest.get("export_config", {})
    except ArtifactError:
        return False
    return bool(ec.get("settings") == asdict(cfg) and ec.get("source_fingerprint") == fingerprint)


def _write_bundle(src: Path, out: Path, model: str, fam: Family, cls_name: str, tcfg: dict[str, Any],
                  cfg: ExportConfig, prec: Precision, pipeline: bool, defaults: dict[str, Any], fingerprint: str,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Export every graph, tokenizer and the scheduler into the empty folder ``out``; manifest last."""
    latent_size, max_len, check = (cfg.latent_height, cfg.latent_width), cfg.max_sequence_length, cfg.check
    adapter_cls = fam.adapter_class()
    dtype = torch_dtype(prec) if prec is not Precision.FP32 else torch.float32
    log(f"loading {cls_name} from {src / 'transformer'}")
    transformer = _load(cls_name, src / "transformer", torch.float32 if prec is Precision.FP32 else dtype)
    adapter = adapter_cls(transformer.float(), latent_size)
    latent = adapter.latent_spec()
    graphs: dict[str, dict[str, str]] = {}
    checks: dict[str, float] = {}
    for g in adapter.graphs():
        log(f"exporting {g.name} ({prec.value}) ...")
        feed = adapter.sample_feed(g.trace_dims)  # a superset of the graph's inputs
        args = tuple(torch.from_numpy(feed[n]) for n in g.spec.input_names)
        graphs[g.name] = _save_graph(g, out, prec, args)
        if g.name == "transformer":
            adapter.model.float()
            if check and prec is Precision.BF16:
                import onnx

                onnx.checker.check_model(str(out / g.name / "model.onnx"))
                log("  bf16 graph: ONNX Runtime CPU has no bf16 kernels, numeric check skipped "
                    "(run l2p validate --backend tensorrt on a GPU)")
            elif check:
                checks[g.name] = _check_graph(adapter, g, out, prec)
                log(f"  transformer vs. PyTorch on sample inputs: relative error {checks[g.name]:.2e}")
    del transformer, adapter

    tokenizers: dict[str, Any] = {}
    extra: dict[str, Any] = {"pipeline": pipeline, "defaults": defaults}
    if pipeline:
        index = read_json(src / "model_index.json")
        extra["pipeline_class"] = index.get("_class_name")
        extra.update(_export_pipeline_parts(src, out, index, latent_size, max_len, graphs, tokenizers, log))
    sched_dir = out / "scheduler"
    sched_src = src / "scheduler" / "scheduler_config.json"
    sched = read_json(sched_src) if sched_src.is_file() else dict(fam.default_scheduler)
    write_json(sched_dir / "scheduler_config.json", sched)

    latent = replace(latent, vae_scale_factor=extra.pop("vae_scale_factor", None))
    return write_manifest(out, {
        "family": fam.name, "model_class": cls_name,
        "model_config": {k: v for k, v in tcfg.items() if not k.startswith("_")},
        "precision": prec.value, "graphs": graphs, "scheduler": "scheduler/scheduler_config.json",
        "tokenizers": tokenizers, "latent": latent.to_dict(),
        "export_config": {"settings": asdict(cfg), "source": str(model), "source_fingerprint": fingerprint,
                          "checks": checks},
        "extra": extra,
    })


def _export_pipeline_parts(src: Path, out: Path, index: dict[str, Any], latent_size: tuple[int, int],
                           max_len: int, graphs: dict[str, dict[str, str]], tokenizers: dict[str, Any],
                           log: Callable[[str], None]) -> dict[str, Any]:
    """Text encoders + tokenizers + VAE decoder of a pipeline folder (fp32: they are cheap)."""
    extra: dict[str, Any] = {}
    for enc, tok in TEXT_ENCODERS:
        if enc not in index or index[enc] is None or index[enc][0] is None:
            continue
        cls_name = index[enc][1]
        model = _load(cls_name, src / enc, torch.float32)
        if cls_name.startswith("CLIPTextModel"):
            kind, length = "clip", int(getattr(model.config, "max_position_embeddings", 77))
            make = clip_projection_graph if cls_name == "CLIPTextModelWithProjection" else clip_graph
            g = make(enc, model, length)
        elif cls_name.startswith("T5"):
            kind, length = "t5", max_len
            g = t5_graph(enc, model, length)
        else:
            raise InputError(f"text encoder class {cls_name} is not supported for --prompt export")
        log(f"exporting {enc} ({cls_name}) ...")
        vocab = int(getattr(model.config, "vocab_size", 2))
        graphs[enc] = _save_graph(g, out, Precision.FP32, trace_args(g, vocab))
        tokenizers[enc] = {**_tokenizer(src / tok, out / tok, length), "kind": kind}
    if index.get("vae") and index["vae"][0] is not None:
        vae = _load(index["vae"][1], src / "vae", torch.float32)
        g, extra["vae_scale_factor"] = vae_decoder_graph(vae, latent_size)
        log("exporting vae_decoder ...")
        graphs["vae_decoder"] = _save_graph(g, out, Precision.FP32, trace_args(g))
    return extra
