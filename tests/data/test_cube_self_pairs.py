"""Pairs cut from the cube to upsample (volsr/data/cube_self_pairs.py): protocol LR, held-out block."""

from __future__ import annotations

import numpy as np
import pytest

from volsr.data.cube_self_pairs import MIN_INPUT, cube_self_pairs, holdout_split
from volsr.degrade import bicubic_downsample


def _cube(shape=(64, 40, 6), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_a_pairs_input_is_the_protocols_bicubic_of_its_target():
    cube = _cube()
    pairs = cube_self_pairs(cube, scale=4, patch=32, batch_size=2, seed=0)
    axis, start, stop = pairs.slab
    assert (axis, stop) == (0, 64) and start == 48
    held = cube[start:]
    np.testing.assert_array_equal(pairs.held_out.hr, held[:, :40])
    np.testing.assert_array_equal(pairs.held_out.lr, bicubic_downsample(held, factors=4, axes=(0, 1)))
    for pair in pairs.training.pairs:  # every shifted grid: a crop of the rest, and its bicubic
        rows, cols = pair.hr.shape[:2]
        offset = next((dr, dc) for dr in range(4) for dc in range(4)
                      if np.array_equal(pair.hr, cube[dr:dr + rows, dc:dc + cols]))
        assert offset[0] + rows <= start
        source = cube[offset[0]:start, offset[1]:]
        np.testing.assert_array_equal(pair.lr, bicubic_downsample(source, factors=4, axes=(0, 1)))
    assert len(pairs.training.pairs) == 16


def test_no_training_pair_reads_a_held_out_pixel():
    cube = _cube()
    other = cube.copy()
    other[48:] = np.random.default_rng(9).random(other[48:].shape)
    first, second = (cube_self_pairs(c, scale=4, patch=32, batch_size=2, seed=3) for c in (cube, other))
    for index in range(4):
        a, b = first.training.batch(index), second.training.batch(index)
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in ("lr", "hr"))


def test_the_split_holds_out_the_longer_axis_and_fits_the_patch():
    assert holdout_split((40, 100, 5), scale=2, patch=64) == ((1, 76, 100), 19)
    assert holdout_split((64, 64, 5), scale=4, patch=32) == ((0, 48, 64), 8)
    assert holdout_split((64, 64, 5), scale=4, patch=16) == ((0, 48, 64), 4)
    with pytest.raises(ValueError, match="too small for self-supervised pairs at x4"):
        holdout_split((25, 25, 189), scale=4, patch=32)
    with pytest.raises(ValueError, match=f"at least {MIN_INPUT * 4} pixels"):
        holdout_split((64, 64, 5), scale=4, patch=12)


def test_batches_are_a_function_of_the_seed_and_index():
    cube = _cube((48, 48, 12))
    pairs = [cube_self_pairs(cube, scale=2, patch=16, batch_size=3, seed=s) for s in (1, 1, 2)]
    batches = [p.training.batch(5) for p in pairs]
    assert np.array_equal(batches[0]["lr"].numpy(), batches[1]["lr"].numpy())
    assert not np.array_equal(batches[0]["hr"].numpy(), batches[2]["hr"].numpy())
    assert batches[0]["lr"].shape[1] == 12 and batches[0]["cubes"] == ["array 0"] * 3  # fewer bands than 24
