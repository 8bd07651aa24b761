"""Deterministic image-analysis checker: does an image show what its caption says?

No neural network: the foreground object is found by its difference to the
background, its colour is the nearest reference colour (CIELAB) of its robust
(median) interior colour, its position is the 3x3 grid cell of its bounding-box
centre and its shape is classified from region properties (bounding-box fill
ratio, how much of the object lies in the top half of its box and the
coefficient of variation of the boundary's distance to the centroid).

Pure numpy + scikit-image; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import color, measure

from l2p.tinymodel.data import COLOURS, POSITIONS, parse_caption

__all__ = ["CheckResult", "analyze", "check"]

# A pixel is foreground when its largest per-channel difference to the background exceeds this.
_FG_THRESHOLD = 48
# Smallest object area accepted (pixels at 64x64; rendered shapes have >= ~90).
_MIN_AREA = 30
# Largest object area accepted (a rendered circle has at most ~290 pixels).
_MAX_AREA = 700
# A second blob larger than this fraction of the main one counts as a second object.
_SECOND_OBJECT_FRACTION = 0.35
# Largest CIELAB distance between the object's colour and the nearest reference colour.
_MAX_COLOUR_DIST = 60.0

_CROSS = ndimage.generate_binary_structure(2, 1)  # 3x3 cross (disk of radius 1)

_REF_LAB = {
    name: color.rgb2lab(np.array(rgb, dtype=np.float64).reshape(1, 1, 3) / 255.0).reshape(3)
    for name, rgb in COLOURS.items()
}


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check`.

    Attributes:
        ok: True iff exactly one object was found and its colour, shape and position all match the caption.
        colour, shape, position: detected attributes (``None`` when no object was found).
        colour_ok, shape_ok, position_ok: per-attribute agreement with the caption.
        reason: human-readable explanation ("ok" when ``ok``).
        expected: the ``(colour, shape, position)`` the caption asks for.
        features: the measured quantities (area, extent, top fraction, centre, colour distance, ...).
    """

    ok: bool
    colour: str | None
    shape: str | None
    position: str | None
    colour_ok: bool
    shape_ok: bool
    position_ok: bool
    reason: str
    expected: tuple[str, str, str]
    features: dict[str, float]


@dataclass(frozen=True)
class _Detection:
    colour: str | None
    shape: str | None
    position: str | None
    problem: str | None
    features: dict[str, float]


def _background(img: np.ndarray) -> np.ndarray:
    """Median colour of the 2-pixel image border, float ``(3,)``."""
    border = np.concatenate(
        [img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3), img[:, :2].reshape(-1, 3), img[:, -2:].reshape(-1, 3)]
    )
    return np.median(border.astype(np.float64), axis=0)


def _radial_cv(box: np.ndarray, centroid: tuple[float, float]) -> float:
    """Coefficient of variation of the boundary's distance to the centroid.

    ``box``: bool ``(bh, bw)`` object mask; ``centroid``: ``(row, col)`` in box coordinates.
    Renders: circles 0.02-0.04, squares 0.09-0.10, triangles 0.18-0.21.
    """
    contours = measure.find_contours(np.pad(box, 1).astype(np.float64), 0.5)
    contour = max(contours, key=len) - 1.0  # (K, 2) row/col, undo the padding
    d = np.hypot(contour[:, 0] - centroid[0], contour[:, 1] - centroid[1])
    return float(d.std() / max(d.mean(), 1e-6))


def _classify_shape(extent: float, top_fraction: float, radial_cv: float) -> str | None:
    """Shape from box fill ratio, share of the object in the top half of its box and radial CV.

    Reference values on renders (extent, top_fraction, radial_cv): circle (0.68-0.85, 0.5, 0.02-0.04),
    square (0.98, 0.5, 0.09-0.10), triangle (0.55-0.62, 0.28-0.32, 0.18-0.21). Returns ``None`` for
    an irregular blob that fits none of them (e.g. a square with concave sides).
    """
    if top_fraction < 0.4 and extent < 0.75:
        return "triangle"
    if radial_cv < 0.065 and 0.65 < extent < 0.9:
        return "circle"
    if 0.065 <= radial_cv <= 0.125 and extent >= 0.85:
        return "square"
    return None


def _position(cx: float, cy: float, h: int, w: int) -> str:
    col = min(2, max(0, int(cx * 3 // w)))
    row = min(2, max(0, int(cy * 3 // h)))
    return POSITIONS[3 * row + col]


def analyze(image: np.ndarray) -> _Detection:
    """Detect the single foreground object in ``image`` (uint8 ``(H, W, 3)``)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    img = image.astype(np.float64)
    h, w = img.shape[:2]
    bg = _background(img)
    diff = np.abs(img - bg).max(axis=2)  # (H, W)
    mask = diff > _FG_THRESHOLD
    mask = ndimage.binary_opening(mask, structure=_CROSS)
    labels = measure.label(mask, connectivity=2)
    regions = sorted(measure.regionprops(labels), key=lambda r: r.area, reverse=True)
    feats: dict[str, float] = {"n_blobs": float(len(regions))}
    if not regions or regions[0].area < _MIN_AREA:
        return _Detection(None, None, None, "no object found", feats)
    obj = regions[0]
    r0, c0, r1, c1 = obj.bbox
    cy, cx = (r0 + r1 - 1) / 2.0, (c0 + c1 - 1) / 2.0
    box = obj.image  # (bh, bw) bool
    bh = box.shape[0]
    top_fraction = float(box[: bh // 2].sum() + (box[bh // 2].sum() / 2.0 if bh % 2 else 0.0)) / float(obj.area)
    radial_cv = _radial_cv(box, tuple(obj.centroid_local))
    feats.update(
        area=float(obj.area),
        radial_cv=radial_cv,
        extent=float(obj.extent),
        solidity=float(obj.solidity),
        top_fraction=top_fraction,
        cx=cx,
        cy=cy,
        bg_r=bg[0],
        bg_g=bg[1],
        bg_b=bg[2],
    )
    # Robust colour: median over the object's interior (edges are anti-aliased).
    obj_mask = labels == obj.label
    interior = ndimage.binary_erosion(obj_mask, structure=_CROSS)
    if interior.sum() < 10:
        interior = obj_mask
    rgb = np.median(img[interior], axis=0)  # (3,)
    lab = color.rgb2lab((rgb / 255.0).reshape(1, 1, 3)).reshape(3)
    dists = {name: float(np.linalg.norm(lab - ref)) for name, ref in _REF_LAB.items()}
    colour = min(dists, key=dists.__getitem__)
    feats.update(r=rgb[0], g=rgb[1], b=rgb[2], colour_dist=dists[colour])
    shape = _classify_shape(float(obj.extent), top_fraction, radial_cv)
    position = _position(cx, cy, h, w)

    problem = None
    if dists[colour] > _MAX_COLOUR_DIST:
        problem = f"colour {tuple(int(v) for v in rgb)} is far from every reference colour"
    elif shape is None:
        problem = (
            f"irregular shape (extent {obj.extent:.2f}, top fraction {top_fraction:.2f}, radial cv {radial_cv:.3f})"
        )
    elif obj.area > _MAX_AREA:
        problem = f"object too large ({obj.area} px)"
    elif len(regions) > 1 and regions[1].area > _SECOND_OBJECT_FRACTION * obj.area:
        problem = f"more than one object ({regions[1].area} px second blob)"
    return _Detection(colour, shape, position, problem, feats)


def check(image: np.ndarray, caption: str) -> CheckResult:
    """Check that ``image`` shows exactly what ``caption`` describes.

    Args:
        image: uint8 RGB array of shape ``(H, W, 3)`` (normally 64x64) showing one shape on a plain background.
        caption: ``"a <colour> <shape> at the <position>"`` (see :func:`l2p.tinymodel.data.parse_caption`).

    Returns:
        A :class:`CheckResult`; ``ok`` requires colour, shape and position to all match.
    """
    expected = parse_caption(caption)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    det = analyze(image)
    colour_ok = det.colour == expected[0]
    shape_ok = det.shape == expected[1]
    position_ok = det.position == expected[2]
    if det.problem is not None:
        reason = det.problem
        ok = False
    else:
        wrong = [
            f"{name} is {got!r}, expected {want!r}"
            for name, got, want, good in (
                ("colour", det.colour, expected[0], colour_ok),
                ("shape", det.shape, expected[1], shape_ok),
                ("position", det.position, expected[2], position_ok),
            )
            if not good
        ]
        ok = not wrong
        reason = "ok" if ok else "; ".join(wrong)
    return CheckResult(
        ok=ok,
        colour=det.colour,
        shape=det.shape,
        position=det.position,
        colour_ok=colour_ok,
        shape_ok=shape_ok,
        position_ok=position_ok,
        reason=reason,
        expected=expected,
        features=det.features,
    )
