"""Separable resampling weights against SciPy, NumPy padding and naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from volsr.geometry import output_coordinates
from volsr.resample import (
    antialiased_cubic_matrix,
    apply_matrix,
    box_profile,
    gaussian_profile,
    interpolation_matrix,
    interpolation_matrix_at,
    kernel_matrix,
    keys_cubic,
    lanczos3,
)


def _triangle(d):
    return np.maximum(1.0 - np.abs(d), 0.0)


KERNELS = {
    "linear": (_triangle, 1.0),
    "keys": (keys_cubic, 2.0),
    "lanczos3": (lanczos3, 3.0),
    "gaussian": gaussian_profile(2.5),
    "box": box_profile(3.3),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_matrix_rows_sum_to_one(name):
    kernel, radius = KERNELS[name]
    positions = np.random.default_rng(0).uniform(-0.5, 11.5, 40)
    matrix = kernel_matrix(positions, 12, kernel, radius)
    assert matrix.shape == (40, 12)
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_matrix_folds_borders_like_symmetric_padding(name):
    kernel, radius = KERNELS[name]
    rng = np.random.default_rng(1)
    n, pad = 7, 8
    signal = rng.standard_normal(n)
    padded = np.pad(signal, pad, mode="symmetric")
    positions = np.concatenate([rng.uniform(-0.5, 1.5, 10), rng.uniform(n - 2.5, n - 0.5, 10)])
    expected = []
    for p in positions:
        taps = np.arange(math.floor(p - radius), math.ceil(p + radius) + 1)
        weights = np.where(np.abs(p - taps) <= radius, kernel(p - taps), 0.0)
        expected.append(weights @ padded[taps + pad] / weights.sum())
    np.testing.assert_allclose(kernel_matrix(positions, n, kernel, radius) @ signal, expected)


def test_kernel_matrix_refuses_rows_without_weight():
    with pytest.raises(ValueError, match="zero total weight"):
        kernel_matrix(np.array([0.5]), 4, lambda d: (np.abs(d) < 0.1) * 1.0, 0.1)


@pytest.mark.parametrize(("method", "order"), [("nearest", 0), ("linear", 1), ("cubic", 3)])
@pytest.mark.parametrize(("n_in", "n_out"), [(7, 14), (6, 9), (7, 23), (40, 132), (12, 7)])
def test_interpolation_matrix_matches_scipy(method, order, n_in, n_out):
    signal = np.random.default_rng(2).standard_normal(n_in)
    positions = output_coordinates(n_in, n_out)
    expected = ndi.map_coordinates(signal, positions[None], order=order, mode="reflect")
    result = interpolation_matrix(n_in, n_out, method) @ signal
    np.testing.assert_allclose(result, expected, atol=1e-7)


@pytest.mark.parametrize(("method", "order"), [("nearest", 0), ("linear", 1), ("cubic", 3)])
def test_interpolation_matrix_at_matches_scipy_inside_and_beyond_the_fov(method, order):
    rng = np.random.default_rng(3)
    signal = rng.standard_normal(11)
    positions = rng.uniform(-3.0, 13.0, 60)
    expected = ndi.map_coordinates(signal, positions[None], order=order, mode="reflect")
    matrix = interpolation_matrix_at(positions, 11, method)
    np.testing.assert_allclose(matrix @ signal, expected, atol=1e-7)


def test_interpolation_matrix_equals_interpolation_matrix_at_output_coordinates():
    for method in ("nearest", "linear", "cubic", "lanczos"):
        whole = interpolation_matrix(9, 31, method)
        at = interpolation_matrix_at(output_coordinates(9, 31), 9, method)
        np.testing.assert_array_equal(whole.toarray(), at.toarray())


def test_interpolation_matrix_errors():
    with pytest.raises(ValueError, match=r"method must be one of .*'cubic'.*got 'spline'"):
        interpolation_matrix(4, 8, "spline")
    with pytest.raises(ValueError, match="method must be one of"):
        interpolation_matrix_at([0.0], 4, "keys")
    with pytest.raises(ValueError, match="finite 1-D array"):
        interpolation_matrix_at([[0.0]], 4, "linear")
    with pytest.raises(ValueError, match="finite 1-D array"):
        interpolation_matrix_at([np.inf], 4, "linear")
    with pytest.raises(ValueError, match="n_in must be >= 1"):
        interpolation_matrix_at([0.0], 0, "linear")


def _naive_imresize_weights(n_in: int, n_out: int) -> np.ndarray:
    """MATLAB ``imresize`` contributions, written as its reference loop (0-based, dense)."""
    scale = n_out / n_in
    shrink = min(scale, 1.0)
    width = 4.0 / shrink
    weights = np.zeros((n_out, n_in))
    mirror = list(range(n_in)) + list(range(n_in - 1, -1, -1))
    for o in range(n_out):
        u = (o + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate
        left = math.floor(u - width / 2)
        row = []
        for tap in range(left, left + math.ceil(width) + 2):
            row.append((tap, shrink * keys_cubic(np.array(shrink * (u - tap)))))
        total = sum(w for _, w in row)
        for tap, w in row:
            weights[o, mirror[(tap - 1) % len(mirror)]] += w / total
    return weights


@pytest.mark.parametrize(("n_in", "n_out"), [(12, 6), (10, 3), (13, 10), (9, 9), (6, 13), (5, 20)])
def test_antialiased_cubic_matrix_matches_a_naive_loop(n_in, n_out):
    np.testing.assert_allclose(
        antialiased_cubic_matrix(n_in, n_out).toarray(), _naive_imresize_weights(n_in, n_out),
        atol=1e-12,
    )


def test_apply_matrix_numpy_and_torch_agree_on_any_axis():
    rng = np.random.default_rng(4)
    volume = rng.standard_normal((5, 6, 7))
    matrix = interpolation_matrix(6, 15, "cubic")
    result = apply_matrix(volume, matrix, 1)
    expected = np.einsum("oj,ijk->iok", matrix.toarray(), volume)
    np.testing.assert_allclose(result, expected, atol=1e-12)
    as_tensor = apply_matrix(torch.from_numpy(volume), matrix, 1)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float64
    np.testing.assert_allclose(as_tensor.numpy(), expected, atol=1e-12)
    integers = apply_matrix(np.arange(6).reshape(1, 6), interpolation_matrix(6, 3, "linear"), -1)
    assert integers.dtype == np.float64
    with pytest.raises(ValueError, match="axis 0 has 5 voxels, the weights expect 6"):
        apply_matrix(volume, matrix, 0)


def test_kernels_and_profiles_have_their_defining_properties():
    offsets = np.arange(-3, 4, dtype=np.float64)
    np.testing.assert_allclose(keys_cubic(offsets), (offsets == 0) * 1.0, atol=1e-15)
    np.testing.assert_allclose(lanczos3(offsets), (offsets == 0) * 1.0, atol=1e-15)
    shift = 0.3 + np.arange(-4, 4)
    assert keys_cubic(shift).sum() == pytest.approx(1.0)  # partition of unity
    kernel, radius = box_profile(3.3)
    assert kernel(np.arange(-3, 4, dtype=np.float64)).sum() == pytest.approx(3.3)
    assert radius == pytest.approx(2.15)
    gaussian, reach = gaussian_profile(2.0)
    assert float(gaussian(np.array([1.0]))[0]) == pytest.approx(0.5)
    assert reach == pytest.approx(4 * 2.0 / (2 * math.sqrt(2 * math.log(2))))
    with pytest.raises(ValueError, match="fwhm must be > 0"):
        gaussian_profile(0.0)
    with pytest.raises(ValueError, match="width must be > 0"):
        box_profile(-1.0)


@pytest.mark.parametrize("method", ["nearest", "linear", "cubic", "lanczos"])
def test_separable_interpolation_passes_factor_one_axes_through_untouched(method):
    from volsr.models.interpolation import SeparableInterpolation

    x = torch.rand(1, 2, 9, 10, 11, generator=torch.Generator().manual_seed(0))
    same = SeparableInterpolation(method=method)(x, (np.arange(9.0), np.arange(10.0), np.arange(11.0)))
    assert torch.equal(same, x)  # no float rounding from an identity product
    out = SeparableInterpolation(method=method)(x, (np.arange(9.0), np.arange(10.0), output_coordinates(11, 22)))
    reference = torch.from_numpy(apply_matrix(x.numpy(), interpolation_matrix(11, 22, method), 4))
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)  # the resampled axis still is


@pytest.mark.parametrize("method", ["nearest", "linear", "cubic", "lanczos"])
def test_separable_interpolation_crops_factor_one_axes_of_a_tile_with_its_halo(method):
    from volsr.models.interpolation import SeparableInterpolation

    x = torch.rand(1, 1, 30, 31, 12, generator=torch.Generator().manual_seed(1))
    # A tile's input box: 4 voxels of halo each side of the output rows / columns.
    grids = (np.arange(4.0, 26.0), np.arange(4.0, 27.0), output_coordinates(12, 30)[3:20])
    out = SeparableInterpolation(method=method)(x, grids)
    reference = x.numpy().astype(np.float64)
    for axis, grid in enumerate(grids):
        reference = apply_matrix(reference, interpolation_matrix_at(grid, x.shape[2 + axis], method), 2 + axis)
    torch.testing.assert_close(out, torch.from_numpy(reference).float(), rtol=0, atol=1e-6)
    # The factor-1 axes are copied, not multiplied: exact voxels of x where axis 2 is too.
    same = SeparableInterpolation(method=method)(x, (*grids[:2], np.arange(12.0)))
    assert torch.equal(same, x[:, :, 4:26, 4:27])
