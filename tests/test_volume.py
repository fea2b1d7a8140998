"""The Volume type: validation, crops carrying their geometry, spectral slicing, laziness."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from volsr.errors import GeometryError, InvalidDataError
from volsr.volume import Volume, count_nonfinite


class CountingArray:
    """A NumPy-like stand-in for a file proxy that counts the voxels handed out."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.dtype = np.dtype(np.float32)
        self.ndim = len(shape)
        self.voxels_read = 0
        self._values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)

    def __getitem__(self, key):
        block = self._values[key]
        self.voxels_read += block.size
        return block


def _oblique_affine(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = (q * np.sign(np.diag(r))) @ np.diag(rng.uniform(0.5, 3.0, 3))
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    return affine


@pytest.mark.parametrize(
    ("shape", "axes", "error", "match"),
    [
        ((4, 4, 4), ("i", "j"), InvalidDataError, "do not match data with 3 dimensions"),
        ((4, 4, 4), ("i", "k", "j"), InvalidDataError, "need spatial axes"),
        ((4, 4), ("i", "band"), InvalidDataError, "need spatial axes"),
        ((4, 4, 2, 2), ("i", "j", "band", "channel"), InvalidDataError, "at most one"),
        ((4, 4, 2), ("i", "j", "time"), InvalidDataError, "at most one non-spatial axis"),
        ((4, 0, 4), ("i", "j", "k"), GeometryError, "zero-size axis"),
    ],
)
def test_axes_and_shape_are_validated(shape, axes, error, match):
    with pytest.raises(error, match=match):
        Volume(np.zeros(shape), np.eye(4), axes)


def test_affine_and_spectral_coordinates_are_validated():
    with pytest.raises(GeometryError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]), ("i", "j", "k"))
    with pytest.raises(GeometryError, match=r"must be \(4, 4\)"):
        Volume(np.zeros((2, 2, 2)), np.eye(3), ("i", "j", "k"))
    with pytest.raises(InvalidDataError, match="wavelengths has 2 values but the volume has 3"):
        Volume(np.zeros((2, 2, 3)), np.eye(4), ("i", "j", "band"), wavelengths=[400.0, 500.0])
    with pytest.raises(InvalidDataError, match="fwhm has 1 values but the volume has no bands"):
        Volume(np.zeros((2, 2, 3)), np.eye(4), ("i", "j", "k"), fwhm=[10.0])


def test_fields_are_read_only_copies():
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    volume = Volume(np.zeros((2, 2, 2)), affine, ("i", "j", "k"), meta={"a": 1})
    affine[0, 0] = 5.0
    assert volume.affine[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        volume.affine[0, 0] = 7.0
    with pytest.raises(TypeError, match="does not support item assignment"):
        volume.meta["a"] = 2
    np.testing.assert_allclose(volume.spacing, [1.0, 2.0, 3.0])


def test_crop_affine_is_affine_times_step_and_start():
    rng = np.random.default_rng(0)
    affine = _oblique_affine(rng)
    data = rng.random((9, 8, 7))
    volume = Volume(data, affine, ("i", "j", "k"))
    cropped = volume.crop((slice(2, 9, 3), slice(1, 7), slice(None, None, 2)))
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag([3, 1, 2])
    index_map[:3, 3] = [2, 1, 0]
    np.testing.assert_allclose(cropped.affine, affine @ index_map)
    np.testing.assert_array_equal(cropped.numpy(), data[2:9:3, 1:7, ::2])
    # Any voxel of the crop sits where its source voxel sits in the world.
    world = cropped.affine @ [1, 4, 3, 1]
    np.testing.assert_allclose(world, affine @ [2 + 3 * 1, 1 + 4, 2 * 3, 1])


def test_crop_errors():
    volume = Volume(np.zeros((4, 4, 4)), np.eye(4), ("i", "j", "k"))
    with pytest.raises(GeometryError, match="empty or reversed"):
        volume.crop((slice(3, 3),))
    with pytest.raises(GeometryError, match="empty or reversed"):
        volume.crop((slice(None, None, -1),))


def test_crop_slices_wavelengths_along_the_band_axis():
    wavelengths = np.linspace(400.0, 1000.0, 7)
    fwhm = np.linspace(5.0, 11.0, 7)
    volume = Volume(np.zeros((7, 3, 4)), np.eye(4), ("band", "i", "j"), wavelengths, fwhm)
    cropped = volume.crop((slice(1, 7, 2), slice(1, 3)))
    assert cropped.shape == (3, 2, 4) and cropped.spatial_shape == (2, 4)
    np.testing.assert_array_equal(cropped.wavelengths, wavelengths[1:7:2])
    np.testing.assert_array_equal(cropped.fwhm, fwhm[1:7:2])
    # The band axis does not enter the affine: spatial start (1, 0), unit steps.
    np.testing.assert_array_equal(cropped.affine[:3, 3], [1.0, 0.0, 0.0])


def test_count_nonfinite_matches_numpy():
    rng = np.random.default_rng(1)
    data = rng.random((6, 5, 4))
    data[rng.random(data.shape) < 0.2] = np.nan
    data[0, 0, :2] = [np.inf, -np.inf]
    volume = Volume(da.from_array(data, chunks=(2, 5, 4)), np.eye(4), ("i", "j", "k"))
    assert count_nonfinite(volume) == int(np.sum(~np.isfinite(data)))
    integers = Volume(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4), ("i", "j", "k"))
    assert count_nonfinite(integers) == 0


def test_header_facts_and_crops_read_no_voxel():
    proxy = CountingArray((8, 5, 6))
    volume = Volume(da.from_array(proxy, chunks=(2, 5, 6)), np.diag([2, 2, 2, 1]), ("i", "j", "k"))
    assert volume.shape == (8, 5, 6) and volume.spatial_shape == (8, 5, 6)
    np.testing.assert_allclose(volume.spacing, [2.0, 2.0, 2.0])
    assert volume.affine.shape == (4, 4) and volume.dtype == np.float32
    cropped = volume.crop((slice(1, 3), slice(None, None, 2)))
    np.testing.assert_allclose(cropped.affine[:3, 3], [2.0, 0.0, 0.0])
    assert proxy.voxels_read == 0
    values = cropped.numpy()
    np.testing.assert_array_equal(values, proxy._values[1:3, ::2])
    # Only the two chunks under the crop are read, not the whole array.
    assert 0 < proxy.voxels_read <= 2 * 2 * 5 * 6


@pytest.mark.parametrize("voxel_mm", [1e-3, 1e-6, 1e-9, 1e3])
def test_small_and_large_voxels_are_not_singular(voxel_mm):
    affine = _oblique_affine(np.random.default_rng(7))
    affine[:3, :3] *= voxel_mm  # micrometre, nanometre, picometre and metre voxels
    volume = Volume(np.zeros((2, 2, 2)), affine, ("i", "j", "k"))
    np.testing.assert_allclose(volume.spacing, np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-12)


@pytest.mark.parametrize("voxel_mm", [1e-6, 1.0, 1e3])
def test_degenerate_axes_are_singular_at_any_voxel_size(voxel_mm):
    collapsed = np.diag([1.0, 1.0, 1.0, 1.0])
    collapsed[:3, 2] = [1.0, 1e-12, 0.0]  # the k axis lies along i
    collapsed[:3, :3] *= voxel_mm
    with pytest.raises(GeometryError, match="affine is singular"):
        Volume(np.zeros((2, 2, 2)), collapsed, ("i", "j", "k"))


def test_count_nonfinite_streams_over_many_blocks():
    data = np.zeros((64, 64, 64), np.float32)
    data[::7, 3, ::5] = np.nan
    data[1, 2, 3] = -np.inf
    lazy = da.from_array(data, chunks=(2, 4, 4))  # 8192 blocks: more than one pass
    assert lazy.npartitions > 4096
    expected = int(np.sum(~np.isfinite(data)))
    assert count_nonfinite(Volume(lazy, np.eye(4), ("i", "j", "k"))) == expected


def test_nan_declared_as_no_data_is_not_counted_as_damage():
    data = np.array([[[np.nan, 1.0, np.inf]]])
    plain = Volume(data, np.eye(4), ("i", "j", "k"))
    declared = Volume(data, np.eye(4), ("i", "j", "k"), meta={"nodata": float("nan")})
    assert count_nonfinite(plain) == 2 and count_nonfinite(declared) == 1
