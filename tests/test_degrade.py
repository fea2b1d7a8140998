"""Tests for volsr.degrade: grids against geometry, values against independent references."""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from volsr import degrade
from volsr.errors import GeometryError
from volsr.geometry import downsampled_grid, resampled_affine, resampled_shape
from volsr.volume import Volume

FACTORS = (2, 3, 4, 2.5, 3.3)



def _centres(n: int, factor: float) -> np.ndarray:
    """LR centres from the contract written out: LR voxel k spans HR [k f_e, (k+1) f_e)."""
    n_lr = math.floor(n / factor + 1e-9)
    f_eff = math.floor(n_lr * factor + 0.5 + 1e-9) / n_lr
    return np.arange(n_lr) * f_eff + (f_eff - 1) / 2


def _mirror(j: int, n: int) -> int:
    return -j - 1 if j < 0 else (2 * n - 1 - j if j >= n else j)


def naive_thick_slice(x: np.ndarray, factor: float, thickness: float) -> np.ndarray:
    """Brute-force Gaussian slice profile (FWHM = thickness, 4 sigma cut, mirrored borders)."""
    sigma = thickness / (2 * math.sqrt(2 * math.log(2)))
    out = []
    for c in _centres(len(x), factor):
        num = den = 0.0
        for j in range(math.floor(c - 5 * sigma), math.ceil(c + 5 * sigma) + 1):
            if abs(c - j) <= 4 * sigma:
                w = math.exp(-0.5 * ((c - j) / sigma) ** 2)
                num += w * x[_mirror(j, len(x))]
                den += w
        out.append(num / den)
    return np.array(out)


# --- thick_slice -------------------------------------------------------------------------


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("axis", [0, 2])
def test_thick_slice_grid_round_trips_to_hr_affine(real_hr: Volume, factor: float, axis: int) -> None:
    lr = degrade.thick_slice(real_hr, axis=axis, factor=factor)
    n_lr, n_cov = downsampled_grid(real_hr.spatial_shape[axis], factor)
    covered = list(real_hr.spatial_shape)
    covered[axis] = n_cov
    scale = [1.0, 1.0, 1.0]
    scale[axis] = factor
    assert lr.spatial_shape[axis] == n_lr
    assert resampled_shape(lr.spatial_shape, scale) == tuple(covered)
    back = resampled_affine(lr.affine, lr.spatial_shape, covered)
    np.testing.assert_allclose(back, real_hr.affine, atol=1e-9)
    np.testing.assert_allclose(back @ [0, 0, 0, 1], real_hr.affine @ [0, 0, 0, 1], atol=1e-9)
    assert dict(lr.meta) == dict(real_hr.meta)


def naive_box_slice(x: np.ndarray, factor: float, thickness: float) -> np.ndarray:
    """Box slice profile by numerical integration of the piecewise-constant HR signal."""
    t = (np.arange(200_000) + 0.5) / 200_000 - 0.5  # midpoints over one unit interval
    out = []
    for c in _centres(len(x), factor):
        samples = c + thickness * t
        out.append(x[np.floor(samples + 0.5).astype(int)].mean())
    return np.array(out)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("profile", ["gaussian", "box"])
def test_thick_slice_of_ramp_is_ramp_at_lr_centres(factor: float, profile: str) -> None:
    n = 60
    ramp = np.broadcast_to(3.0 + 0.5 * np.arange(n), (2, 3, n))
    lr = degrade.thick_slice(ramp, axis=2, factor=factor, profile=profile)
    expected = 3.0 + 0.5 * _centres(n, factor)
    interior = slice(3, -3)
    if profile == "box":
        # The box averages the piecewise-constant HR signal: exact for a ramp when the slab
        # is symmetric about the voxel grid (integer factors); otherwise it matches the
        # numerical integral of that signal.
        reference = expected if factor == int(factor) else naive_box_slice(ramp[0, 0], factor, factor)
        np.testing.assert_allclose(lr[1, 2, interior], reference[interior], atol=1e-4)
        return
    # The Gaussian cut at 4 sigma biases the centroid by ~1e-4 HR voxels.
    np.testing.assert_allclose(lr[1, 2, interior], expected[interior], atol=2e-3)


@pytest.mark.parametrize("factor, thickness", [(2, 2), (3.3, 3.3), (2.5, 1.5), (3, 4.5)])
def test_thick_slice_gaussian_matches_brute_force(factor: float, thickness: float) -> None:
    x = np.random.default_rng(1).normal(size=37)
    got = degrade.thick_slice(x, axis=0, factor=factor, thickness=thickness)
    np.testing.assert_allclose(got, naive_thick_slice(x, factor, thickness), atol=1e-12)


def test_thick_slice_box_with_gap_reads_only_the_slab() -> None:
    x = np.zeros(12)
    x[1::4] = 1.0  # HR voxels 1, 5, 9: the centre of each 4-voxel LR slab is at 1.5, 5.5, 9.5
    got = degrade.thick_slice(x, axis=0, factor=4, thickness=1.0, profile="box")
    np.testing.assert_allclose(got, [0.5, 0.5, 0.5])  # a 1-voxel slab straddles voxels 1 and 2


def test_thick_slice_identity_box_factor_one() -> None:
    x = np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32)
    out = degrade.thick_slice(x, axis=1, factor=1, thickness=1, profile="box")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_thick_slice_volume_is_lazy_and_equals_array_path() -> None:
    calls = []
    source = np.random.default_rng(3).normal(size=(6, 5, 12))

    def load() -> np.ndarray:
        calls.append(1)
        return source

    lazy = da.from_delayed(dask.delayed(load)(), source.shape, dtype=source.dtype)
    volume = Volume(lazy, np.diag([1.0, 1.0, 1.0, 1.0]), ("i", "j", "k"), meta={"id": 7})
    lr = degrade.thick_slice(volume, axis=2, factor=3)
    assert calls == [] and lr.shape == (6, 5, 4) and lr.meta["id"] == 7
    np.testing.assert_allclose(lr.numpy(), degrade.thick_slice(source, axis=2, factor=3))
    assert calls == [1]


def test_thick_slice_errors() -> None:
    x = np.zeros((4, 8))
    with pytest.raises(ValueError, match="profile must be one of"):
        degrade.thick_slice(x, axis=1, factor=2, profile="sinc")
    with pytest.raises(ValueError, match="thickness must be finite and > 0"):
        degrade.thick_slice(x, axis=1, factor=2, thickness=0)
    with pytest.raises(GeometryError, match="factor must be >= 1"):
        degrade.thick_slice(x, axis=1, factor=0.5)
    with pytest.raises(GeometryError, match="too short"):
        degrade.thick_slice(x, axis=0, factor=5)
    with pytest.raises(ValueError, match="axes must be distinct integers"):
        degrade.thick_slice(x, axis=2, factor=2)


def test_slice_factor_from_mm() -> None:
    assert degrade.slice_factor_from_mm(0.5, thickness_mm=2.0, gap_mm=1.0) == (6.0, 4.0)
    factor, thickness = degrade.slice_factor_from_mm(1.0, thickness_mm=3.0, gap_mm=-0.5)
    assert (factor, thickness) == (2.5, 3.0)  # overlapping slices
    with pytest.raises(ValueError, match="finer than hr_spacing"):
        degrade.slice_factor_from_mm(2.0, thickness_mm=1.0)
    with pytest.raises(ValueError, match="thickness_mm must be finite and > 0"):
        degrade.slice_factor_from_mm(1.0, thickness_mm=-1.0)


# --- kspace_truncate ---------------------------------------------------------------------


def _cosines(t: np.ndarray, n: int) -> np.ndarray:
    return 5.0 + 2.0 * np.cos(2 * np.pi * 3 * t / n + 0.7) + np.sin(2 * np.pi * 2 * t / n)


@pytest.mark.parametrize("factor", FACTORS)
def test_kspace_lr_samples_band_limited_signal_at_lr_centres(factor: float) -> None:
    n = round(20 * factor)  # n_cov == n, so the cosines are periodic on the covered FOV
    assert downsampled_grid(n, factor) == (20, n)
    x = _cosines(np.arange(n, dtype=np.float64), n)
    got = degrade.kspace_truncate(x, factors=factor)
    np.testing.assert_allclose(got, _cosines(_centres(n, factor), n), atol=1e-10)


def test_kspace_lr_is_separable_over_axes() -> None:
    rows, cols = np.meshgrid(np.arange(40.0), np.arange(50.0), indexing="ij")
    x = _cosines(rows, 40) * _cosines(cols, 50)
    got = degrade.kspace_truncate(x, factors=(2, 2.5))
    r, c = np.meshgrid(_centres(40, 2), _centres(50, 2.5), indexing="ij")
    np.testing.assert_allclose(got, _cosines(r, 40) * _cosines(c, 50), atol=1e-9)


def test_kspace_removes_frequencies_outside_the_central_fraction() -> None:
    t = np.arange(40.0)
    x = 5.0 + np.cos(2 * np.pi * 15 * t / 40)  # |m| = 15 > 40 / 2 / 2
    np.testing.assert_allclose(degrade.kspace_truncate(x, factors=2), np.full(20, 5.0), atol=1e-12)
    hr = degrade.kspace_truncate(x, factors=2, grid="hr")
    np.testing.assert_allclose(hr, np.full(40, 5.0), atol=1e-12)


def test_kspace_lr_equals_hr_grid_at_integer_centres() -> None:
    # For f = 3 the LR centres are HR voxels 1, 4, 7, ...: both grids keep the same band.
    x = np.random.default_rng(4).uniform(1, 2, size=(60, 7))
    lr = degrade.kspace_truncate(x, factors=3, axes=(0,))
    hr = degrade.kspace_truncate(x, factors=3, axes=(0,), grid="hr")
    np.testing.assert_allclose(lr, hr[1::3], atol=1e-12)


@pytest.mark.parametrize("factor", [2.5, 3.3])
def test_kspace_keeps_constants_and_crops_to_covered_voxels(factor: float) -> None:
    x = np.full((23, 4), 7.0, np.float32)
    out = degrade.kspace_truncate(x, factors=factor, axes=[0])
    assert out.dtype == np.float32 and out.shape == (downsampled_grid(23, factor)[0], 4)
    np.testing.assert_allclose(out, 7.0, rtol=1e-5)


@pytest.mark.parametrize("grid", ["lr", "hr"])
def test_kspace_identity_factor_one(grid: str) -> None:
    x = np.random.default_rng(5).uniform(0, 1, size=(6, 8))
    np.testing.assert_allclose(degrade.kspace_truncate(x, factors=1, grid=grid), x, atol=1e-12)


def test_kspace_volume_grids(real_hr: Volume) -> None:
    lr = degrade.kspace_truncate(real_hr, factors=(1, 1, 4))
    np.testing.assert_allclose(lr.affine, degrade.thick_slice(real_hr, axis=2, factor=4).affine)
    hr = degrade.kspace_truncate(real_hr, factors=(1, 1, 4), grid="hr")
    assert hr.shape == real_hr.shape and np.array_equal(hr.affine, real_hr.affine)
    assert float(hr.numpy().min()) >= 0.0


def test_kspace_errors() -> None:
    with pytest.raises(ValueError, match="grid must be one of"):
        degrade.kspace_truncate(np.ones(8), factors=2, grid="full")
    with pytest.raises(ValueError, match="factors needs 1 or 2 values"):
        degrade.kspace_truncate(np.ones((8, 8)), factors=(2, 2, 2))


# --- gaussian_decimate -------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [None, 1.0])
def test_gaussian_decimate_odd_factor_matches_scipy(sigma: float | None) -> None:
    x = np.random.default_rng(6).normal(size=(31, 4))
    s = 3 / 2.3548200450309493 if sigma is None else sigma
    blurred = ndi.gaussian_filter1d(x, s, axis=0, mode="reflect", truncate=4.0)
    got = degrade.gaussian_decimate(x, factors=3, axes=(0,), sigma=sigma)
    np.testing.assert_allclose(got, blurred[1:30:3], atol=1e-12)


def test_gaussian_decimate_even_factor_reads_between_voxels() -> None:
    x = np.random.default_rng(7).normal(size=24)
    blurred = ndi.gaussian_filter1d(x, 1.0, mode="reflect", truncate=4.0)
    got = degrade.gaussian_decimate(x, factors=2, sigma=1.0)
    np.testing.assert_allclose(got, 0.5 * (blurred[0::2] + blurred[1::2]), atol=1e-12)


def test_gaussian_decimate_identity_and_constants() -> None:
    x = np.random.default_rng(8).normal(size=(5, 6))
    np.testing.assert_array_equal(degrade.gaussian_decimate(x, factors=1, sigma=0), x)
    out = degrade.gaussian_decimate(np.full((20, 21), 2.0), factors=(2.5, 3.3))
    assert out.shape == (8, 6)
    np.testing.assert_allclose(out, 2.0, atol=1e-12)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        degrade.gaussian_decimate(x, factors=2, sigma=-1.0)


# --- bicubic_downsample ------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 3, 2.5])
def test_bicubic_matches_pil_in_the_interior(factor: float) -> None:
    # PIL uses the same antialiased Keys a=-0.5 kernel but renormalises at the borders
    # instead of mirroring, so only pixels whose support stays inside are compared.
    x = np.random.default_rng(9).uniform(size=(40, 60)).astype(np.float32)
    got = degrade.bicubic_downsample(x, factors=factor)
    (rows, rows_cov), (cols, cols_cov) = downsampled_grid(40, factor), downsampled_grid(60, factor)
    pil = Image.fromarray(x[:rows_cov, :cols_cov], mode="F").resize((cols, rows), Image.BICUBIC)
    margin = math.ceil(2 + 1)
    inner = (slice(margin, -margin), slice(margin, -margin))
    np.testing.assert_allclose(got[inner], np.asarray(pil)[inner], atol=1e-5)


def test_bicubic_matches_matlab_reference() -> None:
    """MATLAB ``imresize(uint8(in), 0.5, "bicubic", "Antialiasing", true)``.

    Reference values from the GNU Octave image package test suite, ``inst/imresize.m``
    ("Test bicubic interpolations against some reference results from matlab"; mirror
    tojtoj/octave-image, commit a8dc36b57a001ff5a1d39fd7eae7dc7c72098f64). MATLAB rounds to
    uint8, so the suite allows a difference of 1.
    """
    inp = np.array(
        [[116, 227, 153, 69, 146, 194, 59, 130, 139, 106],
         [2, 47, 137, 249, 90, 75, 16, 24, 158, 44],
         [155, 68, 46, 84, 166, 156, 69, 204, 32, 152],
         [71, 221, 137, 230, 210, 153, 192, 115, 30, 118],
         [107, 143, 108, 52, 51, 73, 101, 21, 175, 90],
         [54, 158, 143, 77, 26, 168, 113, 229, 165, 225],
         [9, 47, 133, 135, 130, 207, 236, 43, 19, 73],
         [129, 60, 59, 243, 64, 181, 249, 56, 32, 86]], dtype=np.uint8)  # fmt: skip
    matlab = np.array(
        [[105, 140, 126, 81, 109],
         [110, 134, 153, 114, 93],
         [108, 108, 94, 127, 146],
         [67, 126, 162, 149, 62]])  # fmt: skip
    got = np.clip(np.round(degrade.bicubic_downsample(inp, factors=2)), 0, 255)
    assert np.abs(got - matlab).max() <= 1


@pytest.mark.parametrize("factor", [2, 3, 4, 2.5])
def test_bicubic_constant_and_ramp(factor: float) -> None:
    np.testing.assert_allclose(degrade.bicubic_downsample(np.full((30, 31), 4.0), factors=factor), 4.0)
    n = 80
    got = degrade.bicubic_downsample(1.0 + 0.25 * np.arange(n), factors=factor)
    expected = 1.0 + 0.25 * _centres(n, factor)
    reach = 3  # the kernel reaches 2 f HR voxels = 2 LR voxels
    # Integer factors put the taps symmetrically about each centre, so the ramp is exact;
    # a non-integer stretch of the Keys kernel (as in MATLAB and PIL) is off by < 0.01 voxel.
    tol = 1e-12 if factor == int(factor) else 0.25 * 0.01
    np.testing.assert_allclose(got[reach:-reach], expected[reach:-reach], atol=tol)


def test_bicubic_identity_and_bands_untouched() -> None:
    cube = np.random.default_rng(10).uniform(size=(12, 16, 5))
    np.testing.assert_allclose(degrade.bicubic_downsample(cube, factors=1), cube, atol=1e-15)
    out = degrade.bicubic_downsample(cube, factors=4, axes=(0, 1))
    assert out.shape == (3, 4, 5)
    for band in range(5):
        np.testing.assert_allclose(out[..., band], degrade.bicubic_downsample(cube[..., band], factors=4))
    volume = Volume(cube, np.eye(4), ("i", "j", "band"), wavelengths=np.arange(5.0) + 400)
    lazy = degrade.bicubic_downsample(volume, factors=4)
    assert lazy.shape == (3, 4, 5) and lazy.wavelengths.tolist() == [400, 401, 402, 403, 404]
    np.testing.assert_allclose(lazy.numpy(), out)


def test_degrade_is_lazy_and_matches_the_functions_it_names() -> None:
    calls = []
    source = np.random.default_rng(4).uniform(10, 20, size=(6, 5, 16)).astype(np.float32)

    def load() -> np.ndarray:
        calls.append(1)
        return source

    lazy = da.from_delayed(dask.delayed(load)(), source.shape, dtype=source.dtype)
    volume = Volume(lazy, np.diag([1.0, 1.0, 0.5, 1.0]), ("i", "j", "k"))
    # 1.5 mm slices every 2 mm on a 0.5 mm axis: factor 4, thickness 3 HR voxels
    lr = degrade.degrade(volume, factors=(1, 1, 4), thickness_mm=1.5, gap_mm=0.5, profile="box",
                         snr_db=20.0, seed=9)
    assert calls == [] and lr.shape == (6, 5, 4) and lr.dtype == np.float32
    clean = degrade.thick_slice(source, axis=2, factor=4, thickness=3, profile="box")
    sigma = degrade.foreground_mean(clean) / 10.0  # 20 dB
    expected = degrade.add_rician_noise(clean, sigma=sigma, rng=np.random.default_rng(9))
    np.testing.assert_allclose(lr.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(lr.affine, degrade.thick_slice(volume, axis=2, factor=4).affine)
    integers = Volume(source.astype(np.int16), np.eye(4), ("i", "j", "k"))
    bicubic = degrade.degrade(integers, factors=(2, 1, 2), method="bicubic")
    assert bicubic.dtype == np.float32
    np.testing.assert_allclose(bicubic.numpy(), degrade.bicubic_downsample(source.astype(np.int16), factors=(2, 1, 2)),
                               rtol=1e-6)  # fmt: skip


def test_degrade_refuses_contradictory_options() -> None:
    volume = Volume(np.ones((8, 8, 8), np.float32), np.eye(4), ("i", "j", "k"))
    cases = [
        (dict(factors=(1, 2, 2)), "method slice thickens exactly one axis"),
        (dict(factors=(1, 1, 4), thickness_mm=3.0, gap_mm=2.0), r"thickness 3.0 mm \+ gap 2.0 mm = 5.0 mm"),
        (dict(factors=(2, 2, 1), method="gaussian", gap_mm=1.0), "apply to method slice only"),
        (dict(factors=(1, 1, 0.5)), "must be finite and >= 1"),
        (dict(factors=(1, 2)), "needs 1 or 3 values"),
        (dict(factors=(1, 1, 2), method="sinc"), "method must be one of"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            degrade.degrade(volume, **options)
