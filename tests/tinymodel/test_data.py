"""Tests for the procedural captioned-shapes data set (torch-free)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from l2p.tinymodel import data


def test_combo_counts_and_heldout_split() -> None:
    combos = data.all_combos()
    assert len(combos) == len(data.COLOURS) * len(data.SHAPES) * len(data.POSITIONS)
    assert len(set(combos)) == len(combos)
    held = set(data.HELDOUT_COMBOS)
    train = data.train_combos()
    assert held.isdisjoint(train)
    assert len(held) + len(train) == len(combos)
    assert 0.08 <= len(held) / len(combos) <= 0.15


def test_every_attribute_and_pair_is_in_training() -> None:
    train = data.train_combos()
    assert {c for c, _, _ in train} == set(data.COLOURS)
    assert {s for _, s, _ in train} == set(data.SHAPES)
    assert {p for _, _, p in train} == set(data.POSITIONS)
    pairs = [(0, 1), (0, 2), (1, 2)]
    for a, b in pairs:
        all_pairs = {(c[a], c[b]) for c in data.all_combos()}
        assert {(c[a], c[b]) for c in train} == all_pairs


def test_captions_roundtrip() -> None:
    for combo, cap in zip(data.all_combos(), data.all_captions()):
        assert data.parse_caption(cap) == combo
        assert data.parse_caption(cap.upper() + ".") == combo
    assert data.caption(("red", "circle", "top left")) == "a red circle at the top left"
    assert set(data.heldout_captions()).isdisjoint(data.train_captions())
    words = set(data.vocabulary())
    for cap in data.all_captions():
        assert set(cap.split()) <= words


@pytest.mark.parametrize("bad", ["a red circle", "a pink circle at the top", "a red star at the top", "a red circle at the middle"])
def test_parse_caption_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        data.parse_caption(bad)


def test_render_shape_dtype_and_determinism() -> None:
    img = data.render("a red circle at the top left", np.random.default_rng(3))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    again = data.render(("red", "circle", "top left"), np.random.default_rng(3))
    np.testing.assert_array_equal(img, again)
    other = data.render("a red circle at the top left", np.random.default_rng(4))
    assert not np.array_equal(img, other)


def test_render_places_object_in_its_cell() -> None:
    rng = np.random.default_rng(0)
    bg = np.array(data.BACKGROUND)
    for combo in data.all_combos():
        img = data.render(combo, rng)
        fg = np.abs(img.astype(int) - bg).max(axis=2) > 60
        ys, xs = np.nonzero(fg)
        assert 60 < len(ys) < 400
        row, col = divmod(data.POSITIONS.index(combo[2]), 3)
        assert int(xs.mean() * 3 // 64) == col and int(ys.mean() * 3 // 64) == row
        # the object's colour is the named colour (up to jitter)
        mean = img[fg].mean(axis=0)
        assert np.abs(mean - np.array(data.COLOURS[combo[0]])).max() < 30


def test_render_batch_matches_sequential_render() -> None:
    combos = data.train_combos()[:5]
    batch = data.render_batch(combos, np.random.default_rng(1))
    rng = np.random.default_rng(1)
    for i, c in enumerate(combos):
        np.testing.assert_array_equal(batch[i], data.render(c, rng))


def test_module_is_torch_free() -> None:
    code = "import sys, l2p.tinymodel.data, l2p.tinymodel.checker; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_builtin_prompt_check_accepts_every_caption_and_names_unknown_words() -> None:
    from l2p.errors import InputError
    from l2p.models import check_builtin_prompts

    check_builtin_prompts("tiny-flux", data.all_captions())  # every caption the model was made for
    check_builtin_prompts("tiny-flux", ["A Red circle at the top left."])  # case and a final full stop
    with pytest.raises(InputError, match=r"prompt 1 'a cat on a mat': unknown word\(s\) cat, on, mat"):
        check_builtin_prompts("tiny-flux", ["a red circle at the top left", "a cat on a mat"])
    with pytest.raises(InputError, match="not a caption"):
        check_builtin_prompts("tiny-flux", ["circle red a"])
