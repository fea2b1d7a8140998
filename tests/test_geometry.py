"""Grid geometry: an invariant test per public function, naive oracles, error cases.

Each ``test_<name>_invariant`` covers one function of ``geometry.__all__`` (checked by
``test_every_function_has_an_invariant_test``); the ``_naive_*`` oracles below recompute the
formulas point by point, the slow way, without calling ``volsr.geometry``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from volsr import geometry
from volsr.errors import GeometryError
from volsr.geometry import (
    check_affine,
    crop_affine,
    downsampled_grid,
    effective_scale,
    grid_factor,
    input_window,
    output_coordinates,
    per_axis,
    pyramid_affine,
    pyramid_shape,
    pyramid_transform,
    resampled_affine,
    resampled_shape,
    sample_coordinates,
    scale_for_target_spacing,
    voxel_spacing,
)
from volsr.resample import INTERPOLATION_METHODS, interpolation_matrix, interpolation_matrix_at


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _oblique(rng: np.random.Generator) -> np.ndarray:
    """A random oblique, anisotropic, possibly left-handed voxel-to-world affine."""
    affine = np.eye(4)
    shear = np.eye(3) + np.triu(rng.uniform(-0.2, 0.2, (3, 3)), 1)
    affine[:3, :3] = _rotation(rng) @ shear @ np.diag(rng.uniform(0.5, 4.0, 3))
    affine[:3, 3] = rng.uniform(-100, 100, 3)
    return affine


def _world(affine: np.ndarray, voxel) -> np.ndarray:
    return (affine @ np.array([*voxel, 1.0]))[:3]


def _naive_positions(n_in: int, n_out: int) -> np.ndarray:
    step = n_in / n_out
    return np.array([(o + 0.5) * step - 0.5 for o in range(n_out)])


def _naive_resampled_affine(affine, shape_in, shape_out) -> np.ndarray:
    """Fit the affine that maps output voxel indices to the world positions of their centres."""
    axes = [_naive_positions(n, m) for n, m in zip(shape_in, shape_out, strict=True)]
    indices, worlds = [], []
    for combo in itertools.product(*[range(min(m, 3)) for m in shape_out]):
        source = [axes[d][o] for d, o in enumerate(combo)]
        padded = list(combo) + [0] * (3 - len(combo))
        indices.append([*padded, 1.0])
        worlds.append(_world(affine, source + [0.0] * (3 - len(source))))
    fitted, *_ = np.linalg.lstsq(np.array(indices), np.array(worlds), rcond=None)
    out = np.array(affine, dtype=np.float64)
    out[:3, : len(shape_in)] = fitted[: len(shape_in)].T
    out[:3, 3] = fitted[3]
    return out


SHAPE_SCALES = [((5, 6, 7), (2.0, 1.5, 3.3)), ((55, 9, 4), (1.0, 2.7, 0.5)), ((8, 3), (4.0, 1.25))]


def test_every_function_has_an_invariant_test():
    missing = [n for n in geometry.__all__ if f"test_{n}_invariant" not in globals()]
    assert missing == []


# --- check_affine -------------------------------------------------------------------------


def test_check_affine_invariant():
    rng = np.random.default_rng(0)
    for _ in range(5):
        affine = _oblique(rng)
        checked = check_affine(affine.tolist())
        assert checked.dtype == np.float64
        np.testing.assert_array_equal(checked, affine)
        np.testing.assert_allclose(checked @ np.linalg.inv(checked), np.eye(4), atol=1e-12)
        checked[0, 0] = 99.0
        assert affine[0, 0] != 99.0  # a copy, not a view


@pytest.mark.parametrize(
    ("affine", "match"),
    [
        (np.eye(3), r"must be \(4, 4\)"),
        (np.diag([1.0, np.nan, 1.0, 1.0]), "NaN or Inf"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]]), "last row"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
        (np.array([[1, 2, 3, 0], [2, 4, 6, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "singular"),
    ],
)
def test_check_affine_errors(affine, match):
    with pytest.raises(GeometryError, match=match):
        check_affine(affine)


# --- voxel_spacing ------------------------------------------------------------------------


def test_voxel_spacing_invariant():
    rng = np.random.default_rng(1)
    for _ in range(5):
        affine = _oblique(rng)
        spin = np.eye(4)
        spin[:3, :3] = _rotation(rng)
        spin[:3, 3] = rng.uniform(-10, 10, 3)
        np.testing.assert_allclose(voxel_spacing(spin @ affine), voxel_spacing(affine))
        naive = [np.linalg.norm(_world(affine, np.eye(3)[d]) - _world(affine, [0, 0, 0]))
                 for d in range(3)]
        np.testing.assert_allclose(voxel_spacing(affine), naive)


def test_voxel_spacing_errors():
    with pytest.raises(GeometryError, match="singular"):
        voxel_spacing(np.diag([1.0, 0.0, 1.0, 1.0]))


# --- scale_for_target_spacing -------------------------------------------------------------


def test_scale_for_target_spacing_invariant():
    spacing = [0.9375, 0.9375, 3.3]
    target = [1.0, 0.5, 1.1]
    scale = scale_for_target_spacing(spacing, target)
    assert isinstance(scale, tuple) and all(isinstance(s, float) for s in scale)
    np.testing.assert_allclose(np.divide(spacing, scale), target)
    assert scale_for_target_spacing(spacing, spacing) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("spacing", "target", "match"),
    [
        ([1.0, 1.0], [1.0, 1.0, 1.0], "target_spacing needs 1 or 2 values"),
        ([1.0, 0.0], [1.0, 1.0], "spacing must be finite and > 0"),
        ([1.0, 1.0], [1.0, -1.0], "target_spacing must be finite and > 0"),
        ([1.0, 1.0], [1.0, np.inf], "target_spacing must be finite"),
    ],
)
def test_scale_for_target_spacing_errors(spacing, target, match):
    with pytest.raises(GeometryError, match=match):
        scale_for_target_spacing(spacing, target)


# --- per_axis ---------------------------------------------------------------------------


def test_per_axis_invariant():
    rng = np.random.default_rng(11)
    for count in (1, 2, 3):
        values = tuple(float(v) for v in rng.uniform(1.0, 6.0, count))
        assert per_axis(values, count) == values  # count values: kept, in order
        assert per_axis(values[0], count) == (values[0],) * count  # one value: every axis
        assert per_axis([values[0]], count) == (values[0],) * count
    assert per_axis(np.array([1, 1, 4]), 3) == (1.0, 1.0, 4.0)
    assert per_axis((0.5, 2.0), 2) == (0.5, 2.0)  # "> 0": a downsampling scale is fine
    assert per_axis((-3.0, 0.0), 2, check="none") == (-3.0, 0.0)


@pytest.mark.parametrize(
    ("values", "kwargs", "error", "match"),
    [
        ((1, 2), {}, GeometryError, r"scale needs 1 or 3 values \(one per axis\), got \(1.0, 2.0\)"),
        ((1, 0, 2), {}, GeometryError, r"scale must be finite and > 0, got \(1.0, 0.0, 2.0\)"),
        ((1, 1, 0.5), {"check": ">= 1", "name": "--factor"}, GeometryError, "--factor must be finite and >= 1"),
        ((1, np.inf, 1), {"check": "none"}, GeometryError, "must be finite"),
        ("1,1,4", {}, TypeError, "scale must be a number or a sequence of numbers"),
        ((1, "a", 2), {}, TypeError, "a sequence of numbers"),
    ],
)
def test_per_axis_errors(values, kwargs, error, match):
    with pytest.raises(error, match=match):
        per_axis(values, 3, **kwargs)


# --- resampled_shape / effective_scale ----------------------------------------------------


def test_resampled_shape_invariant():
    rng = np.random.default_rng(2)
    for _ in range(50):
        shape = tuple(int(n) for n in rng.integers(1, 300, 3))
        scale = tuple(float(s) for s in rng.uniform(0.05, 8.0, 3))
        naive = tuple(max(1, int(n * s + 0.5)) for n, s in zip(shape, scale, strict=True))
        assert resampled_shape(shape, scale) == naive
    assert resampled_shape((7, 5), (3, 4)) == (21, 20)  # integer factors are exact
    assert resampled_shape((5,), (1.5,)) == (8,)  # 7.5 rounds half up
    assert resampled_shape((3,), (0.01,)) == (1,)  # never below one voxel


@pytest.mark.parametrize(
    ("shape", "scale", "match"),
    [
        ((4, 0, 4), (2, 2, 2), "at least one voxel"),
        ((4, 4), (2, 0), "scale must be finite and > 0"),
        ((4, 4), (2, np.nan), "scale must be finite"),
        ((4, 4), (2, 2, 2), "scale needs 1 or 2 values"),
    ],
)
def test_resampled_shape_errors(shape, scale, match):
    with pytest.raises(GeometryError, match=match):
        resampled_shape(shape, scale)


def test_effective_scale_invariant():
    for shape, scale in SHAPE_SCALES:
        out = resampled_shape(shape, scale)
        effective = effective_scale(shape, out)
        np.testing.assert_allclose(np.multiply(shape, effective), out)
        # The effective scale rounds to the requested one within half a voxel per axis.
        for e, s, n in zip(effective, scale, shape, strict=True):
            assert abs(e - s) * n <= 0.5 + 1e-9


def test_effective_scale_errors():
    with pytest.raises(GeometryError, match="differ in length"):
        effective_scale((4, 4), (8,))
    with pytest.raises(GeometryError, match="zero-size"):
        effective_scale((4, 0), (8, 8))


# --- resampled_affine ---------------------------------------------------------------------


def test_resampled_affine_invariant():
    rng = np.random.default_rng(3)
    for _ in range(10):
        affine = _oblique(rng)
        shape = tuple(int(n) for n in rng.integers(2, 60, 3))
        scale = tuple(float(s) for s in rng.uniform(0.5, 5.0, 3))
        out = resampled_shape(shape, scale)
        result = resampled_affine(affine, shape, out)
        for corner in itertools.product((0, 1), repeat=3):
            before = [-0.5 + c * n for c, n in zip(corner, shape, strict=True)]
            after = [-0.5 + c * n for c, n in zip(corner, out, strict=True)]
            np.testing.assert_allclose(_world(result, after), _world(affine, before), atol=1e-9)
        np.testing.assert_allclose(resampled_affine(result, out, shape), affine, atol=1e-9)
        np.testing.assert_allclose(
            voxel_spacing(result), voxel_spacing(affine) * np.divide(shape, out), rtol=1e-12
        )


@pytest.mark.parametrize(("shape", "scale"), SHAPE_SCALES)
def test_resampled_affine_matches_world_coordinates_of_output_centres(shape, scale):
    affine = _oblique(np.random.default_rng(4))
    out = resampled_shape(shape, scale)
    expected = _naive_resampled_affine(affine, shape, out)
    np.testing.assert_allclose(resampled_affine(affine, shape, out), expected, atol=1e-9)


def test_resampled_affine_errors():
    with pytest.raises(GeometryError, match="singular"):
        resampled_affine(np.diag([1.0, 1.0, 0.0, 1.0]), (4, 4, 4), (8, 8, 8))
    with pytest.raises(GeometryError, match="zero-size"):
        resampled_affine(np.eye(4), (4, 0, 4), (8, 8, 8))
    with pytest.raises(GeometryError, match="differ in length"):
        resampled_affine(np.eye(4), (4, 4, 4), (8, 8))


# --- output_coordinates -------------------------------------------------------------------


def test_output_coordinates_invariant():
    for n_in, n_out in [(1, 1), (2, 8), (7, 23), (55, 182), (10, 4), (9, 9)]:
        coords = output_coordinates(n_in, n_out)
        np.testing.assert_allclose(coords, _naive_positions(n_in, n_out), atol=1e-12)
        # Symmetric about the FOV centre, inside the FOV, evenly spaced by n_in / n_out.
        np.testing.assert_allclose(coords + coords[::-1], n_in - 1, atol=1e-12)
        assert coords[0] >= -0.5 and coords[-1] <= n_in - 0.5
        np.testing.assert_allclose(np.diff(coords), n_in / n_out, atol=1e-12)
    np.testing.assert_array_equal(output_coordinates(9, 9), np.arange(9.0))


def test_sample_coordinates_invariant():
    for n_in, n_out in [(2, 8), (7, 23), (55, 182), (10, 4)]:
        fine = np.arange(n_out)
        coords = sample_coordinates(fine, n_out / n_in)
        np.testing.assert_allclose(coords, _naive_positions(n_in, n_out), atol=1e-12)
        # the inverse map (the coarse grid seen from the fine one) gives the indices back
        np.testing.assert_allclose(sample_coordinates(coords, n_in / n_out), fine, atol=1e-9)


def test_grid_factor_invariant():
    for factor in (1.0, 2.0, 3.3, 0.25):
        assert grid_factor(sample_coordinates(np.arange(5, 11), factor)) == pytest.approx(factor, rel=1e-12)
    assert grid_factor(_naive_positions(55, 182)) == pytest.approx(182 / 55, rel=1e-12)
    for bad in ([1.0], [2.0, 1.0], [1.0, 1.0]):
        with pytest.raises(GeometryError, match="two increasing positions"):
            grid_factor(np.array(bad))


def test_output_coordinates_errors():
    with pytest.raises(GeometryError, match="zero-size"):
        output_coordinates(0, 4)
    with pytest.raises(GeometryError, match="zero-size"):
        output_coordinates(4, 0)


# --- input_window -------------------------------------------------------------------------


def _naive_window(out_start, out_stop, n_in, n_out, halo):
    taps = set()
    for o in range(out_start, out_stop):
        p = (o + 0.5) * n_in / n_out - 0.5
        taps.update(range(math.floor(p + 1e-9) - halo, math.ceil(p - 1e-9) + halo + 1))
    inside = [t for t in taps if 0 <= t < n_in]
    return min(inside), max(inside) + 1


def _random_ranges(rng, n_out, count=6):
    for _ in range(count):
        start = int(rng.integers(0, n_out))
        yield start, int(rng.integers(start + 1, n_out + 1))


@pytest.mark.parametrize("method", sorted(INTERPOLATION_METHODS))
def test_input_window_invariant(method):
    """The window with the method's halo holds every tap, and a tile computed on it is exact."""
    rng = np.random.default_rng(5)
    halo = INTERPOLATION_METHODS[method]
    for n_in, n_out in [(40, 100), (37, 53), (50, 50), (45, 30), (60, 199)]:
        matrix = interpolation_matrix(n_in, n_out, method).toarray()
        signal = rng.standard_normal(n_in)
        coords = output_coordinates(n_in, n_out)
        for start, stop in _random_ranges(rng, n_out):
            lo, hi = input_window(start, stop, n_in, n_out, halo=halo)
            assert (lo, hi) == _naive_window(start, stop, n_in, n_out, halo)
            rows = matrix[start:stop]
            outside = np.abs(rows[:, :lo]).sum() + np.abs(rows[:, hi:]).sum()
            if method == "cubic":
                assert outside < 1e-6  # the prefilter's tail beyond the 14-voxel halo
            else:
                columns = np.nonzero(np.any(rows != 0, axis=0))[0]
                assert lo <= columns.min() and columns.max() < hi
            tile = interpolation_matrix_at(coords[start:stop] - lo, hi - lo, method)
            np.testing.assert_allclose(tile @ signal[lo:hi], rows @ signal, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "halo"),
    [((4, 4, 10, 40), 1), ((0, 41, 10, 40), 1), ((-1, 3, 10, 40), 1), ((0, 4, 10, 40), -1)],
)
def test_input_window_errors(args, halo):
    with pytest.raises(GeometryError, match="bad output range"):
        input_window(*args, halo=halo)


# --- crop_affine --------------------------------------------------------------------------


def test_crop_affine_invariant():
    rng = np.random.default_rng(6)
    affine = _oblique(rng)
    start_a, step_a = (3, 1, 7), (2, 1, 3)
    start_b, step_b = (2, 5, 1), (1, 2, 2)
    once = crop_affine(crop_affine(affine, start_a, step_a), start_b, step_b)
    composed_start = np.add(start_a, np.multiply(step_a, start_b))
    composed_step = np.multiply(step_a, step_b)
    np.testing.assert_allclose(once, crop_affine(affine, composed_start, composed_step))
    for index in itertools.product(range(3), repeat=3):
        voxel = np.add(start_a, np.multiply(step_a, index))
        cropped = crop_affine(affine, start_a, step_a)
        np.testing.assert_allclose(_world(cropped, index), _world(affine, voxel), atol=1e-9)
    np.testing.assert_array_equal(crop_affine(affine, (0, 0, 0)), affine)
    two_d = crop_affine(affine, (1, 2), (2, 2))
    np.testing.assert_array_equal(two_d[:, 2], affine[:, 2])  # third column untouched


def test_crop_affine_errors():
    with pytest.raises(GeometryError, match="step must be positive"):
        crop_affine(np.eye(4), (0, 0, 0), (1, 0, 1))
    with pytest.raises(GeometryError, match="step must be positive"):
        crop_affine(np.eye(4), (0, 0, 0), (1, -1, 1))
    with pytest.raises(GeometryError, match="singular"):
        crop_affine(np.zeros((4, 4)) + np.diag([0, 0, 0, 1.0]), (0, 0, 0))


# --- downsampled_grid ---------------------------------------------------------------------


def test_downsampled_grid_invariant():
    rng = np.random.default_rng(7)
    affine = _oblique(rng)
    for n_hr, factor in [(182, 4), (182, 3.3), (10, 1), (7, 7), (100, 2.5), (64, 1.7)]:
        n_lr, n_cov = downsampled_grid(n_hr, factor)
        naive = max(n for n in range(1, n_hr + 1) if n * factor <= n_hr + 1e-9)
        assert n_lr == naive
        assert n_cov == int(n_lr * factor + 0.5) <= n_hr
        # Upsampling the LR grid by the factor lands exactly on the covered HR grid.
        assert resampled_shape((n_lr,), (factor,)) == (n_cov,)
        lr = resampled_affine(affine, (n_cov, 1, 1), (n_lr, 1, 1))
        np.testing.assert_allclose(resampled_affine(lr, (n_lr, 1, 1), (n_cov, 1, 1)), affine)
    # LR voxel k is centred on the middle of HR voxels [k f, (k+1) f) for integer f.
    lr = resampled_affine(affine, (180, 1, 1), (45, 1, 1))
    for k in (0, 11, 44):
        np.testing.assert_allclose(_world(lr, [k, 0, 0]), _world(affine, [4 * k + 1.5, 0, 0]))


@pytest.mark.parametrize(
    ("n_hr", "factor", "match"),
    [(10, 0.5, "must be >= 1"), (10, math.nan, "must be >= 1"), (3, 4.0, "too short")],
)
def test_downsampled_grid_errors(n_hr, factor, match):
    with pytest.raises(GeometryError, match=match):
        downsampled_grid(n_hr, factor)


# --- integer_factors ----------------------------------------------------------------------
def test_integer_factors_invariant():
    # Integer factors multiply every axis exactly (resampled_shape gives n * f); a factor
    # off an integer by float rounding still counts, one off by a visible amount does not.
    for shape, scale in SHAPE_SCALES:
        exact = geometry.resampled_shape(shape, scale) == tuple(round(n * s) for n, s in zip(shape, scale))
        assert geometry.integer_factors(scale) == all(float(s).is_integer() for s in scale)
        assert exact or not geometry.integer_factors(scale)
    assert geometry.integer_factors((1, 2.0, 4 + 1e-12)) and geometry.integer_factors(())
    assert not geometry.integer_factors((1, 1, 4 + 1e-6))
    assert geometry.integer_factors([3 * f for f in (1, 2, 5)])  # closed under integer multiples


# --- pyramid_shape / pyramid_affine -------------------------------------------------------


def _naive_block_centre(affine, ndim, level, index) -> np.ndarray:
    """World mean of the level-0 voxel centres in one ``2**level`` block (the level's voxel)."""
    size = 2**level
    corners = [range(i * size, (i + 1) * size) for i in index]
    centres = [_world(affine, [*voxel, *[0] * (3 - ndim)]) for voxel in itertools.product(*corners)]
    return np.mean(centres, axis=0)


def test_pyramid_shape_invariant():
    for shape in [(182, 218, 55), (7, 9), (1, 64, 3), (16,)]:
        for level in range(4):
            if min(shape) < 2**level:
                with pytest.raises(GeometryError, match="too short"):
                    pyramid_shape(shape, level)
                continue
            got = pyramid_shape(shape, level)
            assert got == tuple(n // 2**level for n in shape)  # whole blocks only
            assert pyramid_shape(shape, 0) == tuple(shape)
            if level and min(shape) >= 2 ** (level + 1):  # nested: level k+1 halves level k
                assert pyramid_shape(shape, level + 1) == pyramid_shape(got, 1)


@pytest.mark.parametrize("level", [-1, 1.0, True])
def test_pyramid_shape_errors(level):
    with pytest.raises(GeometryError, match="integer >= 0"):
        pyramid_shape((8, 8), level)


@pytest.mark.parametrize("ndim", [3, 2])
def test_pyramid_affine_invariant(ndim):
    affine = _oblique(np.random.default_rng(8))
    np.testing.assert_array_equal(pyramid_affine(affine, 0, ndim=ndim), affine)
    for level in range(1, 4):
        level_k = pyramid_affine(affine, level, ndim=ndim)
        # Each level-k voxel sits at the world mean of the level-0 voxels it averages.
        for index in [(0,) * ndim, (1, 2, 0)[:ndim], (3, 0, 5)[:ndim]]:
            np.testing.assert_allclose(_world(level_k, [*index, *[0] * (3 - ndim)]),
                                       _naive_block_centre(affine, ndim, level, index), atol=1e-9)
        # Nested: level k+1 is level 1 of level k; and the thick-slice rule with f = 2**k.
        np.testing.assert_allclose(pyramid_affine(affine, level + 1, ndim=ndim),
                                   pyramid_affine(level_k, 1, ndim=ndim), atol=1e-9)
        n_lr, n_cov = downsampled_grid(40, 2**level)
        np.testing.assert_allclose(level_k, resampled_affine(affine, (n_cov,) * ndim, (n_lr,) * ndim), atol=1e-9)
        np.testing.assert_allclose(voxel_spacing(level_k)[:ndim], voxel_spacing(affine)[:ndim] * 2**level)
        np.testing.assert_array_equal(level_k[:, ndim:3], affine[:, ndim:3])  # other columns untouched
    # Axis-aligned: NGFF scale doubles, translation t0 + s0 (2**k - 1) / 2 (not t0 + s0 k / 2).
    aligned = np.diag([0.5, 2.0, 3.0, 1.0])
    aligned[:3, 3] = [10.0, -4.0, 1.0]
    level_2 = pyramid_affine(aligned, 2, ndim=3)
    np.testing.assert_allclose(np.diag(level_2)[:3], [2.0, 8.0, 12.0])
    np.testing.assert_allclose(level_2[:3, 3], [10.75, -1.0, 5.5])


@pytest.mark.parametrize(("level", "ndim", "match"), [(-1, 3, "integer >= 0"), (1, 4, "ndim must be")])
def test_pyramid_affine_errors(level, ndim, match):
    with pytest.raises(GeometryError, match=match):
        pyramid_affine(np.eye(4), level, ndim=ndim)


def test_pyramid_transform_invariant():
    """Each level sits at the mean position of its block, in a per-axis (NGFF) frame."""
    # Voxel n of level 0 at t + s n, any sign of s: level k voxel o is the mean of level-0
    # voxels o 2**k .. (o + 1) 2**k - 1, and its neighbour sits one level-k step further.
    scale, translation = np.array([1.0, 4.0, -2.5]), np.array([10.5, 30.0, -7.0])
    for level in range(4):
        got_scale, got_translation = pyramid_transform(scale, translation, level)
        size = 2**level
        first = np.mean([translation + scale * n for n in range(size)], axis=0)
        second = np.mean([translation + scale * n for n in range(size, 2 * size)], axis=0)
        np.testing.assert_allclose(got_translation, first)
        np.testing.assert_allclose(got_scale, second - first)
    # It agrees with pyramid_affine on a positive diagonal affine (where the frames coincide).
    aligned = np.diag([0.5, 2.0, 3.0, 1.0])
    aligned[:3, 3] = [10.0, -4.0, 1.0]
    scale_2, translation_2 = pyramid_transform([0.5, 2.0, 3.0], [10.0, -4.0, 1.0], 2)
    np.testing.assert_allclose(np.diag(pyramid_affine(aligned, 2, ndim=3))[:3], scale_2)
    np.testing.assert_allclose(pyramid_affine(aligned, 2, ndim=3)[:3, 3], translation_2)
    with pytest.raises(GeometryError, match="integer >= 0"):
        pyramid_transform([1.0], [0.0], -1)
    with pytest.raises(GeometryError, match="one value per axis"):
        pyramid_transform([1.0, 2.0], [0.0], 1)
