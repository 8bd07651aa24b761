"""Tests for the image-analysis checker (torch-free)."""

from __future__ import annotations

import numpy as np
import pytest

from l2p.tinymodel import data
from l2p.tinymodel.checker import check


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accepts_all_ground_truth_renders(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for combo in data.all_combos():
        img = data.render(combo, rng)
        res = check(img, data.caption(combo))
        assert res.ok, (combo, res.reason, res.features)
        assert (res.colour, res.shape, res.position) == combo


def _swap(combo: tuple[str, str, str], k: int, options) -> list[tuple[str, str, str]]:
    out = []
    for v in options:
        if v != combo[k]:
            c = list(combo)
            c[k] = v
            out.append(tuple(c))
    return out


def test_rejects_mismatched_captions() -> None:
    rng = np.random.default_rng(7)
    for combo in data.all_combos()[::4]:
        img = data.render(combo, rng)
        for k, options in ((0, data.COLOURS), (1, data.SHAPES), (2, data.POSITIONS)):
            for wrong in _swap(combo, k, options):
                res = check(img, data.caption(wrong))
                assert not res.ok, (combo, wrong)
                flags = (res.colour_ok, res.shape_ok, res.position_ok)
                assert flags == tuple(i != k for i in range(3)), (combo, wrong, flags)


def test_rejects_empty_and_double_images() -> None:
    blank = np.full((64, 64, 3), data.BACKGROUND, dtype=np.uint8)
    res = check(blank, "a red circle at the center")
    assert not res.ok and res.shape is None and "no object" in res.reason

    rng = np.random.default_rng(0)
    a = data.render("a red circle at the top left", rng)
    b = data.render("a red circle at the bottom right", rng)
    both = np.where((np.abs(b.astype(int) - data.BACKGROUND).max(axis=2) > 20)[..., None], b, a)
    assert not check(both, "a red circle at the top left").ok


def test_rejects_off_palette_colour() -> None:
    img = data.render("a red square at the center", np.random.default_rng(0))
    grayish = img.copy()
    fg = np.abs(img.astype(int) - data.BACKGROUND).max(axis=2) > 20
    grayish[fg] = (128, 128, 128)
    res = check(grayish, "a red square at the center")
    assert not res.ok


def test_robust_to_mild_noise() -> None:
    rng = np.random.default_rng(11)
    noise_rng = np.random.default_rng(12)
    for combo in data.all_combos()[::3]:
        img = data.render(combo, rng).astype(int)
        noisy = np.clip(img + noise_rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        assert check(noisy, data.caption(combo)).ok, combo


def test_rejects_non_uint8() -> None:
    with pytest.raises(ValueError):
        check(np.zeros((64, 64, 3), dtype=np.float32), "a red circle at the center")


def test_rejects_irregular_shapes() -> None:
    """A plus sign or a square with concave sides is none of circle / square / triangle."""
    from PIL import Image, ImageDraw

    for polygon in (
        # plus sign centred at (32, 32)
        [(28, 22), (36, 22), (36, 28), (42, 28), (42, 36), (36, 36), (36, 42), (28, 42), (28, 36), (22, 36), (22, 28), (28, 28)],
        # square with pinched (concave) sides
        [(22, 22), (32, 26), (42, 22), (38, 32), (42, 42), (32, 38), (22, 42), (26, 32)],
    ):
        img = Image.new("RGB", (64, 64), data.BACKGROUND)
        ImageDraw.Draw(img).polygon(polygon, fill=data.COLOURS["red"])
        arr = np.asarray(img, dtype=np.uint8)
        for shape in data.SHAPES:
            res = check(arr, f"a red {shape} at the center")
            assert not res.ok and res.shape is None and "irregular" in res.reason, res
            assert res.colour_ok and res.position_ok
