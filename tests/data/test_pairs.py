"""Tests for volsr.data.pairs: the pair geometry against whole-volume degradation and slicing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from volsr.data.pairs import (
    PatchParams,
    foreground_centre,
    lr_tile_length,
    reorient,
    slice_weights,
    source_box,
    tile_positions,
)
from volsr.degrade import thick_slice
from volsr.geometry import downsampled_grid, output_coordinates
from volsr.noise import NoiseParams


@pytest.mark.parametrize(
    ("n", "factor", "profile", "ratio"),
    [(24, 2.0, "gaussian", 1.0), (30, 3.0, "box", 0.7), (40, 2.5, "gaussian", 1.4), (36, 4.0, "box", 1.2)],
)
def test_slice_weights_are_rows_of_the_whole_volume_thick_slice(n, factor, profile, ratio) -> None:
    # thick_slice of the identity matrix is its (n_lr, n) weight matrix.
    whole = thick_slice(np.eye(n), axis=0, factor=factor, thickness=ratio * factor, profile=profile)
    n_lr, n_cov = downsampled_grid(n, factor)
    assert n_cov == n_lr * factor
    for first in range(0, n_lr - 2):
        origin = round(first * factor)
        if origin != first * factor:
            continue  # only lattice points of the whole volume
        tile = slice_weights(
            n, origin=origin, factor=factor, thickness=ratio * factor, profile=profile,
            lr_length=min(3, n_lr - first), halo=0,
        )  # fmt: skip
        np.testing.assert_allclose(tile.toarray(), whole[first : first + tile.shape[0]], atol=1e-12)


def test_tile_length_and_positions_follow_the_engine_contract() -> None:
    for size, factor, halo in itertools.product((16, 17, 64), (1.0, 2.0, 2.5, 3.0, 3.3), (0, 1, 2)):
        m = lr_tile_length(size, factor, halo=halo)
        positions = tile_positions(size, factor, halo=halo)
        # Every patch voxel lies inside the tile, with `halo` slices of context on each side.
        assert positions[0] >= halo - 0.5 and positions[-1] <= m - halo - 0.5 + 1e-9
        assert m == math.ceil(size / factor - 1e-9) + 2 * halo
    n_lr, n_cov = downsampled_grid(60, 3.0)
    np.testing.assert_allclose(
        tile_positions(12, 3.0, halo=1), output_coordinates(n_lr, n_cov)[9:21] - (3 - 1), atol=1e-12
    )


def test_source_box_and_reorient_equal_slicing_the_reoriented_volume() -> None:
    volume = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    needed = [(1, 4), (0, 2), (2, 5)]
    for permutation in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            frame = np.transpose(volume, permutation)
            frame = np.flip(frame, axis=[d for d in range(3) if flips[d]])
            shape = frame.shape
            box, matrices = source_box(needed, shape, shape, permutation=permutation, flips=flips)
            assert matrices == [None, None, None]
            region = reorient(volume[tuple(slice(*b) for b in box)], permutation=permutation, flips=flips)
            np.testing.assert_array_equal(region, frame[tuple(slice(*b) for b in needed)])
    with pytest.raises(ValueError, match="outside axis"):
        source_box([(0, 9), (0, 1), (0, 1)], (5, 6, 7), (5, 6, 7), permutation=(0, 1, 2), flips=(False,) * 3)


def test_foreground_centre_lands_in_the_only_foreground_cell() -> None:
    foreground = np.zeros((3, 4, 2), bool)
    foreground[2, 1, 0] = True  # voxels [8, 12) x [4, 8) x [0, 4) of a (12, 16, 8) volume
    rng = np.random.default_rng(0)
    shape = (12, 16, 8)
    for permutation in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            frame = [shape[p] for p in permutation]
            centre = foreground_centre(
                rng, foreground, cell=4, centres=[(0, n - 1) for n in frame], original=frame,
                zoomed=frame, permutation=permutation, flips=flips,
            )  # fmt: skip
            voxel = [0, 0, 0]
            for d in range(3):
                voxel[permutation[d]] = frame[d] - 1 - centre[d] if flips[d] else centre[d]
            assert 8 <= voxel[0] < 12 and 4 <= voxel[1] < 8 and 0 <= voxel[2] < 4
    none = foreground_centre(
        rng, foreground, cell=4, centres=[(0, 3), (0, 15), (0, 7)], original=shape,
        zoomed=shape, permutation=(0, 1, 2), flips=(False,) * 3,
    )  # fmt: skip
    assert none is None


def test_patch_params_record_and_validation() -> None:
    noise = NoiseParams(snr_db=20.0, sigma=0.1, seed=5)
    record = PatchParams(
        volume=2, origin=(1, 2, 3), axis=1, factor=2.5, thickness=2.0, profile="box",
        zoom=0.8, permutation=(2, 0, 1), flips=(True, False, True), noise=noise, augment_seed=9,
    ).as_dict()  # fmt: skip
    assert record["origin_2"] == 3 and record["profile"] == 1 and record["noise_seed"] == 5
    assert record["perm_0"] == 2 and record["flip_1"] == 0 and record["snr_db"] == 20.0
    assert all(isinstance(v, (int, float)) for v in record.values())
    with pytest.raises(ValueError, match="factor must be finite and >= 1"):
        PatchParams(volume=0, origin=(0, 0, 0), axis=0, factor=0.5, thickness=1.0)
    with pytest.raises(ValueError, match="permutation of 0, 1, 2"):
        PatchParams(volume=0, origin=(0, 0, 0), axis=0, factor=2.0, thickness=1.0, permutation=(0, 0, 1))
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        PatchParams(volume=0, origin=(0, 0, 0), axis=3, factor=2.0, thickness=1.0)
