"""The bounds table: every size l2p reads from metadata it did not write itself is checked here,
before anything is allocated from it.

Bundles and predictors are shared artifacts, so their metadata is untrusted input: a re-signed
manifest can claim a 1e6 x 1e6 latent, a tokenizer ``max_length`` of 1e12 or a scheduler with 1e10
training timesteps, and a ``.npy`` header can claim 1e9 rows. Each such number is checked against
one row of :data:`BOUNDS` first. The bounds are far above every supported model (FLUX.1, SD3,
PixArt, DiT, Qwen-Image at up to 4096 px) and far below what would exhaust a machine.

=========================  ==========  ================================================================
bound                      value       why
=========================  ==========  ================================================================
json_bytes                 64 MiB      a metadata JSON file (manifest, io spec, scheduler config, ...)
json_depth                 64          nesting of a metadata JSON file (real ones nest < 8 deep)
latent_side                1 .. 1024   latent height / width in cells (8192 px at VAE factor 8)
latent_channels            1 .. 1024   latent channels (FLUX/SD3: 16; Qwen-Image: 16)
latent_elements            2**24       cells x channels of one latent (FLUX 4096 px: 2**20)
patch_size                 1 .. 16     transformer patch size (2 for SD3/PixArt/DiT)
num_classes                1 .. 10**6  class labels of a class-conditional model (DiT: 1000)
list_items                 0 .. 8      items of a list in a latent record (RoPE axes: 3)
rope_axis                  1 .. 4096   one RoPE axis dimension (FLUX: 16, 56, 56)
rope_theta                 1 .. 10**9  RoPE base frequency (10000)
vae_scale_factor           1 .. 64     pixels per latent cell (8)
max_length                 1 .. 8192   a tokenizer's fixed sequence length (T5 in FLUX.1-dev: 512)
token_id                   0 .. 2**31  a tokenizer's padding id
num_train_timesteps        1 .. 10**5  a scheduler's training timesteps (1000)
cond_rows                  1 .. 1024   rows (conditions) of one conditioning set / prompt list
cond_tokens                1 .. 8192   text tokens per condition (as ``max_length``)
prompt_chars               0 .. 10**4  characters of one prompt
npz_members                256         arrays in one ``.npz`` file
npz_bytes                  16 GiB      bytes of all arrays of one ``.npz`` file (trajectory caches)
spec_tensors               256         inputs + outputs of one io spec
spec_rank                  8           dimensions of one tensor in an io spec
spec_dim                   2**31       one fixed dimension of an io spec
num_steps                  1 .. 1000   denoising steps of a run or a predictor
predictor_K                1 .. 16     history length of a predictor (what calibration tries)
=========================  ==========  ================================================================

Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ArtifactError


@dataclass(frozen=True)
class Bound:
    """An inclusive range ``lo..hi`` for one number and why it is so."""

    lo: float
    hi: float
    why: str


BOUNDS: dict[str, Bound] = {
    "json_bytes": Bound(0, 64 << 20, "bytes of a metadata JSON file"),
    "json_depth": Bound(1, 64, "nesting depth of a metadata JSON file"),
    "latent_side": Bound(1, 1024, "latent cells per side (8192 px at VAE factor 8)"),
    "latent_channels": Bound(1, 1024, "latent channels"),
    "latent_elements": Bound(1, 1 << 24, "cells x channels of one latent"),
    "patch_size": Bound(1, 16, "transformer patch size"),
    "num_classes": Bound(1, 10**6, "class labels"),
    "list_items": Bound(0, 8, "items of a list field"),
    "rope_axis": Bound(1, 4096, "RoPE axis dimension"),
    "rope_theta": Bound(1, 1e9, "RoPE base frequency"),
    "vae_scale_factor": Bound(1, 64, "pixels per latent cell"),
    "max_length": Bound(1, 8192, "tokens of a tokenizer's fixed sequence length"),
    "token_id": Bound(0, 2**31 - 1, "token id"),
    "num_train_timesteps": Bound(1, 10**5, "scheduler training timesteps"),
    "cond_rows": Bound(1, 1024, "conditions (rows) in one run"),
    "cond_tokens": Bound(1, 8192, "text tokens per condition"),
    "prompt_chars": Bound(0, 10**4, "characters of one prompt"),
    "npz_members": Bound(0, 256, "arrays in one .npz file"),
    "npz_bytes": Bound(0, 16 << 30, "bytes of the arrays of one .npz file"),
    "spec_tensors": Bound(1, 256, "tensors of one io spec"),
    "spec_rank": Bound(0, 8, "dimensions of one tensor"),
    "spec_dim": Bound(0, 2**31 - 1, "one fixed tensor dimension"),
    "num_steps": Bound(1, 1000, "denoising steps"),
    "predictor_K": Bound(1, 16, "predictor history length"),
}


def within(name: str, value: Any) -> bool:
    """Whether ``value`` is a real number (not bool) inside the bound ``name``."""
    b = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and b.lo <= value <= b.hi


def check_bound(name: str, value: Any, where: str, fix: str, integer: bool = True,
                error: type[Exception] = ArtifactError) -> Any:
    """Return ``value`` when it is inside the bound ``name`` (an int when ``integer``), else raise
    ``error`` (default :class:`ArtifactError`) saying what was found, the range and ``fix``."""
    b = BOUNDS[name]
    ok = within(name, value) and (not integer or isinstance(value, int))
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        lo, hi = (int(b.lo), int(b.hi)) if integer else (b.lo, b.hi)
        kind = "an integer" if integer else "a number"
        raise error(f"{where} is {shown}; expected {kind} in {lo}..{hi} ({b.why}); {fix}")
    return value
