"""``l2p sample``: images from a bundle (torch-free)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..limits import check_bound
from ..sampling.settings import METHOD_CHOICES
from .options import (add_bundle_argument, add_cfg_options, add_conditioning_options, add_engine_options,
                      add_output_options, add_run_options, add_schedule_option, check_conditioning_args,
                      conditioning, open_sampler,
                      run_settings)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("sample", help="sample images from a bundle (torch-free)")
    add_bundle_argument(s)
    add_conditioning_options(s, prompt_file=False)
    s.add_argument("--index", type=int, metavar="ROW",
                   help="sample only this conditioning row (0-based): its images of the whole run, same seeds")
    s.add_argument("--num-images-per-prompt", type=int, default=1, metavar="N",
                   help=f"images per prompt or conditioning row (1..{MAX_IMAGES_PER_PROMPT}); row r's image j is "
                        "image r*N+j of the run (seed + r*N + j)")
    add_run_options(s)
    add_schedule_option(s, "the steps that run the transformer, as many as --full-steps (which it sets): a preset "
                           "runs on them; --method l2p:NAME checks that its predictor was calibrated for them")
    add_cfg_options(s)
    s.add_argument("--initial-latents", metavar="LATENTS.npz",
                   help="latents.npz of an earlier run: rerun from its 'initial' noise")
    add_engine_options(s)
    add_output_options(s, out="output folder for PNGs, latents.npz and run.json")
    s.set_defaults(func=run)


#: the most images per prompt of one run (rows x N is also bounded by the bounds table's cond_rows)
MAX_IMAGES_PER_PROMPT = 64


def check_images_per_prompt(n: int, rows: int) -> None:
    """``--num-images-per-prompt n`` for ``rows`` conditions: 1..64, and ``rows * n`` images in a run
    no more than the bounds table allows."""
    if not 1 <= n <= MAX_IMAGES_PER_PROMPT:
        raise InputError(f"--num-images-per-prompt {n} is out of range; use 1..{MAX_IMAGES_PER_PROMPT}")
    check_bound("cond_rows", rows * n, f"{rows} condition(s) x --num-images-per-prompt {n} (images in one run)",
                "sample in several runs (--index ROW, or fewer prompts)", error=InputError)


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
    per = a.num_images_per_prompt
    check_images_per_prompt(per, 1)
    check_run_out(Path(os.path.realpath(a.out)))  # a file, or a folder holding anything but an earlier run
    sampler = open_sampler(a, guidance=settings.guidance)
    cond = conditioning(sampler, a)
    rows = len(next(iter(cond.values())))
    first = 0  # the run's first image: images first.. of the whole run (seeds settings.seed + first + k)
    if a.index is not None:
        if not 0 <= a.index < rows:
            raise InputError(f"--index {a.index} is out of range: the conditioning has {rows} rows (0..{rows - 1})")
        cond, first = {k: v[a.index:a.index + 1] for k, v in cond.items()}, a.index * per
    check_images_per_prompt(per, len(next(iter(cond.values()))))
    cond = {k: np.repeat(v, per, axis=0) for k, v in cond.items()}  # row r's N images consecutive, as diffusers
    images = len(next(iter(cond.values())))
    initial, seeds = None, [settings.seed + first + k for k in range(images)]
    if a.initial_latents:
        try:
            initial = load_npz(a.initial_latents)["initial"]
        except KeyError:
            raise InputError(f"{a.initial_latents} has no array named 'initial'") from None
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read --initial-latents {a.initial_latents}: {e}") from None
        seeds = None  # the noise is the file's
    elif first:
        initial = sampler.rt.noise(settings.seed + first, images)
    out = Path(a.out)
    sampler.forecaster(settings)  # the method (a predictor's files) is checked before the transformer engine opens
    chunks = sampler.batch_plan(cond, settings).count  # the progress bar covers every chunk
    bar = terminal_bar(settings.steps * chunks, f"sampling ({settings.method})", "step")
    res = sampler.run(cond, settings, initial=initial, progress=lambda i: bar.update(1))
    bar.close()
    prompts = list(a.prompt or [])
    if a.index is not None and prompts:
        prompts = prompts[a.index:a.index + 1]
    prompts = [p for p in prompts for _ in range(per)]  # one per image
    threads = resolve_threads(a.threads) if a.backend.startswith("onnxruntime") else a.threads
    with run_folder(out) as stage:  # replaces an earlier run at --out as a whole, once this one is written
        paths = save_images(res.images, stage) if res.images is not None and res.images.size else []
        save_npz(stage / "latents.npz", initial=res.initial, final=res.final)
        record = run_record(sampler, settings, res, prompts=prompts, images=paths, threads=threads, index=a.index,
                            num_images_per_prompt=per, seeds=seeds, backend=a.backend, device=a.device,
                            negative_prompt=a.negative_prompt if prompts and sampler.cfg_scale_of(settings) > 1 else None,
                            conditioning=str(a.conditioning) if a.conditioning else None,
                            initial_latents=str(a.initial_latents) if a.initial_latents else None)
        write_json(stage / "run.json", {"format": RUN_FORMAT, **record})
    print(f"{len(paths)} image(s), {res.loop.computed_steps}/{settings.steps} full steps, {res.seconds:.2f} s "
          f"-> {out}/")
    return 0
