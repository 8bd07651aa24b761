"""``l2p sample``: images from a bundle (torch-free)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError
from ..sampling.settings import METHOD_CHOICES
from .options import (add_bundle_argument, add_cfg_options, add_conditioning_options, add_engine_options,
                      add_output_options, add_run_options, add_schedule_option, check_conditioning_args,
                      conditioning, open_sampler,
                      run_settings)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("sample", help="sample images from a bundle (torch-free)")
    add_bundle_argument(s)
    add_conditioning_options(s, prompt_file=False)
    s.add_argument("--index", type=int, metavar="ROW", help="sample only this conditioning row (0-based)")
    add_run_options(s)
    add_schedule_option(s, "the steps that run the transformer, as many as --full-steps (which it sets): a preset "
                           "runs on them; --method l2p:NAME checks that its predictor was calibrated for them")
    add_cfg_options(s)
    s.add_argument("--initial-latents", metavar="LATENTS.npz",
                   help="latents.npz of an earlier run: rerun from its 'initial' noise")
    add_engine_options(s)
    add_output_options(s, out="output folder for PNGs, latents.npz and run.json")
    s.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..atomic import load_npz, save_npz, write_json
    from ..engine.onnxruntime_backend import resolve_threads
    from ..progress import terminal_bar
    from ..run_record import run_record
    from ..sampling.pipeline import save_images
    from ..sampling.run_dir import RUN_FORMAT, check_run_out, run_folder

    settings = run_settings(a)
    if settings.parsed_method.kind == "full" and settings.full_steps not in (None, settings.steps):
        raise InputError(f"--full-steps {settings.full_steps} with --method full: full compute runs the transformer "
                         f"on all {settings.steps} steps; drop --full-steps, or choose a cached method "
                         f"({', '.join(METHOD_CHOICES[1:])})")
    check_conditioning_args(a)
    check_run_out(Path(os.path.realpath(a.out)))  # a file, or a folder holding anything but an earlier run
    sampler = open_sampler(a, guidance=settings.guidance)
    cond = conditioning(sampler, a)
    rows = len(next(iter(cond.values())))
    if a.index is not None:
        if not 0 <= a.index < rows:
            raise InputError(f"--index {a.index} is out of range: the conditioning has {rows} rows (0..{rows - 1})")
        cond = {k: v[a.index:a.index + 1] for k, v in cond.items()}
    initial = None
    if a.initial_latents:
        try:
            initial = load_npz(a.initial_latents)["initial"]
        except KeyError:
            raise InputError(f"{a.initial_latents} has no array named 'initial'") from None
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read --initial-latents {a.initial_latents}: {e}") from None
    out = Path(a.out)
    bar = terminal_bar(settings.steps, f"sampling ({settings.method})", "step")
    res = sampler.run(cond, settings, initial=initial, progress=lambda i: bar.update(1))
    bar.close()
    prompts = list(a.prompt or [])
    if a.index is not None and prompts:
        prompts = prompts[a.index:a.index + 1]
    threads = resolve_threads(a.threads) if a.backend.startswith("onnxruntime") else a.threads
    with run_folder(out) as stage:  # replaces an earlier run at --out as a whole, once this one is written
        paths = save_images(res.images, stage) if res.images is not None and res.images.size else []
        save_npz(stage / "latents.npz", initial=res.initial, final=res.final)
        record = run_record(sampler, settings, res, prompts=prompts, images=paths, threads=threads, index=a.index,
                            backend=a.backend, device=a.device,
                            negative_prompt=a.negative_prompt if prompts and sampler.cfg_scale_of(settings) > 1 else None,
                            conditioning=str(a.conditioning) if a.conditioning else None,
                            initial_latents=str(a.initial_latents) if a.initial_latents else None)
        write_json(stage / "run.json", {"format": RUN_FORMAT, **record})
    print(f"{len(paths)} image(s), {res.loop.computed_steps}/{settings.steps} full steps, {res.seconds:.2f} s "
          f"-> {out}/")
    return 0
