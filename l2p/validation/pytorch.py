"""``l2p validate --model``: the bundle's graphs and a whole sampling run against the PyTorch model.

Needs torch + diffusers (the ``export`` extra). Two checks:

1. per graph: exported engine vs. the original module on sample inputs (relative error
   ``||a - b|| / ||b||``, :func:`l2p.metrics.rel_error`);
2. a sampling run: the engine loop (numpy scheduler, ONNX Runtime) vs. diffusers' own pipeline
   (``FluxPipeline`` with diffusers' scheduler and the PyTorch transformer) from the same initial
   noise and conditioning: relative error of the latent after every step and PSNR of the final one
   (:func:`l2p.metrics.psnr_db`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import open_bundle
from ..errors import InputError
from ..export.exporter import _load
from ..families import family_of_model
from ..metrics import psnr_db, rel_error
from ..models import read_json, resolve_model
from ..precision import FORWARD_RTOL, Precision
from ..sampling.families.flux import FluxLatent
from ..sampling.pipeline import Sampler

#: minimum final-latent PSNR (dB) of a sampling run per precision
RUN_PSNR = {Precision.FP32: 60.0, Precision.FP16: 30.0, Precision.BF16: 25.0}


@dataclass
class Check:
    name: str
    metric: str
    value: float
    limit: float
    ok: bool


def _graph_checks(sampler: Sampler, src: Path, adapter: Any, prec: Precision) -> list[Check]:
    out: list[Check] = []
    rtol = FORWARD_RTOL[prec]
    bundle = sampler.bundle
    for seed in (0, 1):
        g = adapter.transformer_graph()
        dims = {**g.trace_dims, "batch": 2}
        feed = adapter.sample_feed(dims, seed=seed)
        tfeed = {k: feed[k] for k in bundle.spec("transformer").input_names}
        got = sampler.engine("transformer").run(tfeed)
        ref = adapter.reference(tfeed)
        e = rel_error(got["sample"], ref["sample"])
        out.append(Check(f"transformer[seed {seed}]", "rel", e, rtol, e <= rtol))
        if bundle.has("head") and "residual" in got:
            hfeed = {k: (got["residual"] if k == "residual" else feed[k]) for k in bundle.spec("head").input_names}
            e = rel_error(sampler.engine("head").run(hfeed)["sample"], ref["sample"])
            out.append(Check(f"head(residual)[seed {seed}]", "rel", e, rtol * 10, e <= rtol * 10))
    index = read_json(src / "model_index.json") if (src / "model_index.json").is_file() else {}
    for enc in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if not bundle.has(enc):
            continue
        model = _load(index[enc][1], src / enc, torch.float32)
        spec = bundle.spec(enc)
        length = int(spec.inputs[0].shape[1])
        ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, length)).astype(np.int64)
        got = sampler.engine(enc).run({"input_ids": ids})
        ref = _encoder_outputs(model, ids)
        for name in spec.output_names:
            e = rel_error(got[name], ref[name])
            out.append(Check(enc if name == "last_hidden_state" else f"{enc}.{name}", "rel", e, 1e-5, e <= 1e-5))
        out.append(_tokenizer_check(sampler, src, index, enc, length))
    if bundle.has("vae_decoder"):
        vae = _load(index["vae"][1], src / "vae", torch.float32)
        spec = bundle.spec("vae_decoder")
        shape = spec.inputs[0].concrete({"batch": 2})
        z = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        got = sampler.engine("vae_decoder").run({"latent": z})["image"]
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        with torch.no_grad():
            ref = vae.decode(torch.from_numpy(z) / vae.config.scaling_factor + shift, return_dict=False)[0]
        e = rel_error(got, ref.numpy())
        out.append(Check("vae_decoder", "rel", e, 1e-5, e <= 1e-5))
    return out


def _encoder_outputs(model: torch.nn.Module, ids: np.ndarray) -> dict[str, np.ndarray]:
    """A text encoder's outputs by the names of the exported graphs' outputs (:mod:`l2p.export.encoders`):
    CLIPTextModel's last hidden state and pooler output, CLIPTextModelWithProjection's penultimate
    hidden state and projection (what StableDiffusion3Pipeline takes), T5's last hidden state."""
    with torch.no_grad():
        r = model(torch.from_numpy(ids), output_hidden_states=True)
    out = {"last_hidden_state": r.last_hidden_state, "penultimate_hidden_state": r.hidden_states[-2]}
    for name in ("pooler_output", "text_embeds"):
        if getattr(r, name, None) is not None:
            out[name] = getattr(r, name)
    return {k: v.float().numpy() for k, v in out.items()}


def _tokenizer_check(sampler: Sampler, src: Path, index: dict[str, Any], enc: str, length: int) -> Check:
    """Token ids from the bundle's tokenizer.json vs. the transformers tokenizer of the pipeline."""
    from transformers import AutoTokenizer

    from ..sampling.text import load_tokenizers

    tok_dir = enc.replace("text_encoder", "tokenizer")  # text_encoder_2 -> tokenizer_2
    ref_tok = AutoTokenizer.from_pretrained(str(src / tok_dir))
    ours = load_tokenizers(sampler.bundle.root, {enc: sampler.bundle.manifest["tokenizers"][enc]})[enc]
    prompts = ["a red circle at the top left", "A photo of a cat, 4k", "x"]
    ref = ref_tok(prompts, padding="max_length", max_length=length, truncation=True)["input_ids"]
    untruncated = ref_tok(prompts, verbose=False)["input_ids"]
    bad = 0
    for prompt, want, whole in zip(prompts, ref, untruncated):
        try:
            got = ours([prompt])[0]
        except InputError:  # T5 in l2p refuses a prompt longer than the encoder takes instead of cutting it
            bad += int(len(whole) <= length)  # right only when the prompt really is too long
            continue
        bad += int((got != np.asarray(want)).sum())
    return Check(f"{tok_dir} ids", "mismatch", bad, 0, bad == 0)


def _reference_run(transformer: torch.nn.Module, bundle: Any, cond: dict[str, np.ndarray], initial: np.ndarray,
                   steps: int, guidance: float) -> list[np.ndarray]:
    """diffusers' FluxPipeline (PyTorch transformer, diffusers scheduler): latents after each step."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    sched = FlowMatchEulerDiscreteScheduler.from_config(bundle.scheduler_config())
    pipe = FluxPipeline(scheduler=sched, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    lat = FluxLatent.from_dict(bundle.manifest["latent"])
    per_step: list[np.ndarray] = []

    def grab(_pipe: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        per_step.append(kw["latents"].float().numpy().copy())
        return {}

    with torch.no_grad():
        pipe(prompt_embeds=torch.from_numpy(cond["encoder_hidden_states"]),
             pooled_prompt_embeds=torch.from_numpy(cond["pooled_projections"]),
             latents=torch.from_numpy(initial), num_inference_steps=steps, guidance_scale=guidance,
             height=lat.height * 8, width=lat.width * 8,
             output_type="latent", callback_on_step_end=grab)
    return per_step


def validate(bundle_path: str, model: str, conditioning: str | None = None, steps: int = 50,
             seed: int = 0, index: int = 0, guidance: float = 3.5) -> dict[str, Any]:
    """Run both checks; returns a JSON-able report with ``ok``."""
    bundle = open_bundle(bundle_path)
    src = resolve_model(model)
    cls_name = read_json(src / "transformer" / "config.json").get("_class_name", "")
    if cls_name != bundle.manifest["model_class"]:
        raise InputError(f"--model holds a {cls_name}, but the bundle was exported from a {bundle.manifest['model_class']}")
    prec = Precision.parse(bundle.manifest["precision"])
    sampler = Sampler(bundle, guidance_scale=guidance)
    transformer = _load(cls_name, src / "transformer", torch.float32)
    adapter = family_of_model(cls_name).adapter_class()(transformer, (sampler.rt.h, sampler.rt.w))
    checks = _graph_checks(sampler, src, adapter, prec)
    if bundle.family != "flux":  # the pipeline comparison below is FLUX's; the others are in tests/export
        return {"bundle": str(bundle.root), "bundle_hash": bundle.hash, "precision": prec.value,
                "checks": [c.__dict__ for c in checks], "per_step_rel_error": [], "max_step_rel_error": float("nan"),
                "final_psnr_db": float("nan"), "ok": all(c.ok for c in checks)}

    if conditioning:
        cond = sampler.load_conditioning(conditioning)
        if not 0 <= index < len(cond["pooled_projections"]):
            raise InputError(f"--index {index} is out of range for {len(cond['pooled_projections'])} rows")
        cond = {k: v[index:index + 1] for k, v in cond.items()}
    elif bundle.has("text_encoder_2"):
        cond = sampler.encode(["a red circle at the top left"])
    else:
        feed = adapter.sample_feed({"batch": 1, "txt_seq": 16}, seed=seed)
        cond = {k: feed[k] for k in sampler.rt.cond_names}
    got_steps: list[np.ndarray] = []
    initial = sampler.rt.noise(seed, 1)
    res = sampler.sample(cond, seed, steps, initial=initial, decode=False,
                         capture=lambda v: got_steps.append(v.latents))
    got_steps = got_steps[1:] + [res.final]  # latents after each step
    ref_steps = _reference_run(transformer, bundle, cond, initial, steps, guidance)
    per_step = [rel_error(g, r) for g, r in zip(got_steps, ref_steps)]
    final_psnr = psnr_db(res.final, ref_steps[-1])
    checks.append(Check(f"sampling run ({steps} steps)", "psnr_db", final_psnr, RUN_PSNR[prec],
                        final_psnr >= RUN_PSNR[prec]))
    return {
        "bundle": str(bundle.root), "bundle_hash": bundle.hash, "precision": prec.value,
        "checks": [c.__dict__ for c in checks], "per_step_rel_error": per_step,
        "max_step_rel_error": max(per_step), "final_psnr_db": final_psnr,
        "ok": all(c.ok for c in checks),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'check':34s} {'metric':8s} {'value':>12s} {'limit':>10s}  result"]
    for c in report["checks"]:
        cmp = ">=" if c["metric"] == "psnr_db" else "<="
        lines.append(f"{c['name']:34s} {c['metric']:8s} {c['value']:12.3e} {cmp}{c['limit']:9.3g}  "
                     f"{'ok' if c['ok'] else 'FAIL'}")
    if report["per_step_rel_error"]:
        lines.append(f"max per-step latent rel. error: {report['max_step_rel_error']:.3e}; "
                     f"final latent PSNR: {report['final_psnr_db']:.2f} dB")
    else:
        lines.append("sampling-run comparison: FLUX only here (other families: tests/export)")
    lines.append("PASSED" if report["ok"] else "FAILED")
    return "\n".join(lines)
