"""``l2p export``: a diffusers model to an ONNX bundle (needs torch)."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .options import PRECISIONS, add_output_options, positive


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("export", help="export a diffusers model to an ONNX bundle (needs torch)",
                       description="Export a local diffusers folder (or a built-in model: tiny-flux, tiny-sd3) "
                                   "to a bundle.")
    e.add_argument("model", metavar="MODEL",
                   help="diffusers pipeline folder, transformer-only folder, or built-in name (tiny-flux, tiny-sd3)")
    add_output_options(e, out="bundle folder to write (an up-to-date bundle there is left alone)")
    e.add_argument("--latent-size", nargs=2, type=positive, metavar=("H", "W"),
                   help="VAE latent height and width (before FLUX's 2x2 packing)")
    e.add_argument("--height", type=positive, metavar="H", help="image height (pipeline folders)")
    e.add_argument("--width", type=positive, metavar="W", help="image width (pipeline folders)")
    e.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="compute precision inside the graph (fp32 for ONNX Runtime CPU)")
    e.add_argument("--max-sequence-length", type=positive, metavar="N",
                   help="T5 token length (default 512 or the model's)")
    e.add_argument("--no-check", action="store_true", help="skip the PyTorch comparison after export")
    e.add_argument("--force", action="store_true",
                   help="replace a bundle even when that deletes its predictors that do not match the new one, "
                        "or files it does not list")
    e.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..export.exporter import export_bundle

    if a.latent_size and (a.height or a.width):
        raise InputError("give either --latent-size H W or --height/--width, not both")
    if bool(a.height) != bool(a.width):
        raise InputError("give both --height and --width")
    export_bundle(a.model, a.out, latent_size=tuple(a.latent_size) if a.latent_size else None,
                  image_size=(a.height, a.width) if a.height else None, precision=a.precision,
                  max_sequence_length=a.max_sequence_length, check=not a.no_check, force=a.force)
    return 0
