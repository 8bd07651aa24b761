"""Tiny shipped text-to-image model: procedural data set and image-analysis checker.

Torch-free: :mod:`l2p.tinymodel.data` renders captioned shapes (numpy + PIL) and
:mod:`l2p.tinymodel.checker` verifies that an image matches a caption (numpy + scikit-image).
The trained FLUX-architecture pipeline itself lives in ``l2p/assets/tiny-flux/`` and is
built by ``tools/train_tiny.py``; the SD3-architecture one (``l2p/assets/tiny-sd3/``, trained with
caption dropout for classifier-free guidance) by ``tools/train_tiny_sd3.py``; see
``l2p/tinymodel/README.md``.
"""

from l2p.tinymodel.data import (
    all_captions,
    heldout_captions,
    parse_caption,
    render,
    train_captions,
    train_combos,
)

__all__ = [
    "all_captions",
    "heldout_captions",
    "parse_caption",
    "render",
    "train_captions",
    "train_combos",
]
