"""Procedural captioned shapes: the data set the shipped tiny FLUX model is trained on.

Every image is a 64x64 RGB picture of one filled shape on a plain dark-gray
background, described by a caption such as ``"a red circle at the top left"``.
A caption names exactly one *combo* ``(colour, shape, position)``.

A fixed set of combos (:data:`HELDOUT_COMBOS`) is never used for training, so that
compositional generalisation can be measured; every colour, shape and position
(and every colour/position and shape/position pair) still appears in training.

Pure numpy + PIL; no torch.
"""

from __future__ import annotations

import re
from typing import Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "Combo",
    "HELDOUT_COMBOS",
    "IMAGE_SIZE",
    "POSITIONS",
    "SHAPES",
    "all_captions",
    "all_combos",
    "caption",
    "heldout_captions",
    "parse_caption",
    "position_center",
    "render",
    "render_batch",
    "train_captions",
    "train_combos",
    "vocabulary",
]

IMAGE_SIZE: int = 64
"""Side length of the square images, in pixels."""

BACKGROUND: tuple[int, int, int] = (32, 32, 32)
"""Background colour (dark gray), RGB uint8."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (50, 190, 60),
    "blue": (50, 100, 235),
    "yellow": (235, 210, 40),
    "purple": (175, 60, 215),
}
"""Reference colour of every colour word, RGB uint8."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
"""Shape words; triangles point up."""

POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
"""Position phrases, row-major over the 3x3 grid (index = 3 * row + col)."""

Combo = tuple[str, str, str]
"""``(colour, shape, position)``."""

# Shape half-size range (pixels at 64x64), position jitter (pixels) and colour jitter (per channel).
_HALF_SIZE = (7.0, 9.5)
_POS_JITTER = 1.5
_COLOUR_JITTER = 10
_SUPERSAMPLE = 4


def _heldout() -> tuple[Combo, ...]:
    """15 of the 135 combos (11%): each (colour, shape) pair exactly once.

    ``i -> (colour i mod 5, shape i mod 3, position 7i mod 9)``: as 5 and 3 are
    coprime every (colour, shape) pair is held out at exactly one position, each
    (colour, position) pair at most once and each (shape, position) pair at most
    twice, so all single attributes and pairs stay in the training set.
    """
    colours = list(COLOURS)
    return tuple(
        (colours[i % len(colours)], SHAPES[i % len(SHAPES)], POSITIONS[(7 * i) % len(POSITIONS)])
        for i in range(len(colours) * len(SHAPES))
    )


HELDOUT_COMBOS: tuple[Combo, ...] = _heldout()
"""Combos never rendered for training."""


def caption(combo: Combo) -> str:
    """Caption of a combo, e.g. ``("red", "circle", "top left") -> "a red circle at the top left"``."""
    colour, shape, position = combo
    return f"a {colour} {shape} at the {position}"


def all_combos() -> list[Combo]:
    """All ``len(COLOURS) * len(SHAPES) * len(POSITIONS)`` combos in a fixed order."""
    return [(c, s, p) for c in COLOURS for s in SHAPES for p in POSITIONS]


def train_combos() -> list[Combo]:
    """All combos except :data:`HELDOUT_COMBOS`, in the order of :func:`all_combos`."""
    held = set(HELDOUT_COMBOS)
    return [c for c in all_combos() if c not in held]


def all_captions() -> list[str]:
    """Captions of :func:`all_combos`."""
    return [caption(c) for c in all_combos()]


def train_captions() -> list[str]:
    """Captions of :func:`train_combos`."""
    return [caption(c) for c in train_combos()]


def heldout_captions() -> list[str]:
    """Captions of :data:`HELDOUT_COMBOS`."""
    return [caption(c) for c in HELDOUT_COMBOS]


def vocabulary() -> list[str]:
    """Every word that can occur in a caption, sorted."""
    words = {"a", "at", "the"}
    words.update(COLOURS)
    words.update(SHAPES)
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)


_CAPTION_RE = re.compile(r"^\s*an?\s+(\w+)\s+(\w+)\s+(?:at|in)\s+the\s+(.+?)\s*\.?\s*$")


def parse_caption(text: str) -> Combo:
    """Parse ``"a <colour> <shape> at the <position>"`` (case-insensitive) into a combo.

    Raises:
        ValueError: if the text does not follow the template or names an unknown word.
    """
    m = _CAPTION_RE.match(text.lower())
    if m is None:
        raise ValueError(f"caption does not match 'a <colour> <shape> at the <position>': {text!r}")
    colour, shape, position = m.group(1), m.group(2), " ".join(m.group(3).split())
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r} in {text!r}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} in {text!r}")
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r} in {text!r}")
    return colour, shape, position


def position_center(position: str, size: int = IMAGE_SIZE) -> tuple[float, float]:
    """Nominal centre ``(x, y)`` in pixels of a grid cell."""
    idx = POSITIONS.index(position)
    row, col = divmod(idx, 3)
    return (col + 0.5) * size / 3.0, (row + 0.5) * size / 3.0


def _as_combo(caption_or_combo: Union[str, Combo]) -> Combo:
    if isinstance(caption_or_combo, str):
        return parse_caption(caption_or_combo)
    colour, shape, position = caption_or_combo
    if colour not in COLOURS or shape not in SHAPES or position not in POSITIONS:
        raise ValueError(f"unknown combo {caption_or_combo!r}")
    return colour, shape, position


def render(caption_or_combo: Union[str, Combo], rng: np.random.Generator) -> np.ndarray:
    """Render one image.

    Args:
        caption_or_combo: a caption (see :func:`parse_caption`) or a ``(colour, shape, position)`` combo.
        rng: source of the size, position and colour jitter; the same generator state gives the same image.

    Returns:
        ``np.ndarray`` of dtype uint8 and shape ``(64, 64, 3)`` (H, W, RGB).
    """
    colour, shape, position = _as_combo(caption_or_combo)
    half = float(rng.uniform(*_HALF_SIZE))
    dx, dy = rng.uniform(-_POS_JITTER, _POS_JITTER, size=2)
    jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))

    s = _SUPERSAMPLE
    cx0, cy0 = position_center(position)
    cx, cy, h = (cx0 + dx) * s, (cy0 + dy) * s, half * s
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        a = 0.9 * h  # squares slightly smaller so that all shapes have similar visual weight
        draw.rectangle([cx - a, cy - a, cx + a, cy + a], fill=fill)
    else:  # triangle, pointing up, bounding box centred on (cx, cy)
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8).copy()


def render_batch(combos: list[Combo], rng: np.random.Generator) -> np.ndarray:
    """Render ``combos`` in order with one generator; returns uint8 ``(N, 64, 64, 3)``."""
    out = np.empty((len(combos), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, combo in enumerate(combos):
        out[i] = render(combo, rng)
    return out
