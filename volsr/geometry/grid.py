"""Single-resolution grids: affines, per-axis scales, voxel-centre coordinates, windows.

The conventions are the package's (:mod:`volsr.geometry`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from volsr.errors import GeometryError

__all__ = [
    "check_affine",
    "voxel_spacing",
    "per_axis",
    "scale_for_target_spacing",
    "resampled_shape",
    "effective_scale",
    "resampled_affine",
    "output_coordinates",
    "sample_coordinates",
    "grid_factor",
    "input_window",
    "crop_affine",
    "downsampled_grid",
    "integer_factors",
]

_EPS = 1e-9


def per_axis(values: float | Sequence[float], count: int, name: str = "scale", *,
             check: Literal["> 0", ">= 1", "none"] = "> 0") -> tuple[float, ...]:  # fmt: skip
    """One value per spatial axis, from one value or ``count``: the one check of per-axis factors.

    Parameters
    ----------
    values : float or sequence of float
        One value (for every axis) or ``count`` values, in axis order.
    count : int
        Spatial axes.
    name : str
        What the values are, for messages (``"scale"``, ``"--factor"``).
    check : {"> 0", ">= 1", "none"}
        What each value must be besides finite (scales: > 0; thick-slice factors: >= 1).

    Returns
    -------
    tuple of float
        ``count`` values.

    Raises
    ------
    TypeError
        If ``values`` are not numbers.
    GeometryError
        If there are neither 1 nor ``count`` values, or a value is not finite or fails ``check``.

    Examples
    --------
    >>> per_axis(2, 3), per_axis((1, 1, 4), 3)
    ((2.0, 2.0, 2.0), (1.0, 1.0, 4.0))
    >>> per_axis((1, 2), 3)
    Traceback (most recent call last):
    ...
    volsr.errors.GeometryError: scale needs 1 or 3 values (one per axis), got (1.0, 2.0)
    """
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        flat = tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a sequence of numbers, got {values!r}") from None
    flat = flat * count if len(flat) == 1 else flat
    if len(flat) != count:
        raise GeometryError(f"{name} needs 1 or {count} values (one per axis), got {flat}")
    low = {"> 0": 0.0, ">= 1": 1.0, "none": -math.inf}[check]
    if not all(math.isfinite(v) and (v > low if check == "> 0" else v >= low) for v in flat):
        raise GeometryError(f"{name} must be finite and {check}, got {flat}")
    return flat


def check_affine(affine: np.ndarray) -> np.ndarray:
    """Validate a voxel-to-world affine and return a float64 copy.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel-to-world matrix (mm).

    Returns
    -------
    (4, 4) float64 ndarray
        A copy of ``affine``.

    Raises
    ------
    GeometryError
        If the shape is not (4, 4), a value is not finite, the last row is not ``[0, 0, 0, 1]``,
        or the 3x3 part is singular (unit columns spanning a volume below 1e-9).

    Examples
    --------
    >>> check_affine(np.diag([2.0, 2.0, 2.0, 1.0]))[0, 0]
    np.float64(2.0)
    """
    matrix = np.array(affine, dtype=np.float64, copy=True)
    if matrix.shape != (4, 4):
        raise GeometryError(f"affine must be (4, 4), got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise GeometryError("affine contains NaN or Inf")
    if not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise GeometryError(f"affine last row must be [0, 0, 0, 1], got {matrix[3].tolist()}")
    # Judged on unit columns, so the voxel size does not matter (a 1 nm voxel is 1e-6 mm):
    # |det| of the normalised columns is the sine-volume of the axes, 1 when orthogonal.
    linear = matrix[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    shape_det = abs(np.linalg.det(linear / norms)) if np.all(norms > 0) else 0.0
    if shape_det < _EPS:
        raise GeometryError(
            f"affine is singular (voxel axes {', '.join(f'{n:.3g}' for n in norms)} mm long; det of "
            f"the 3x3 part = {np.linalg.det(linear):.3g}, {shape_det:.3g} relative to the voxel size)"
        )
    return matrix


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each of the three affine columns.

    Parameters
    ----------
    affine : (4, 4) float64 ndarray
        Voxel-to-world matrix (mm).

    Returns
    -------
    (3,) float64 ndarray
        Column norms of ``affine[:3, :3]`` in mm; invariant under world rotations.

    Raises
    ------
    GeometryError
        If ``affine`` is not a valid affine (see :func:`check_affine`).

    Examples
    --------
    >>> voxel_spacing(np.diag([1.0, 1.0, 4.0, 1.0])).tolist()
    [1.0, 1.0, 4.0]
    """
    return np.linalg.norm(check_affine(affine)[:3, :3], axis=0)


def scale_for_target_spacing(
    spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[float, ...]:
    """Per-axis upsampling factors that turn ``spacing`` into ``target_spacing``.

    Parameters
    ----------
    spacing : (D,) sequence of float
        Current voxel size per spatial axis (mm).
    target_spacing : (D,) sequence of float
        Wanted voxel size per spatial axis (mm).

    Returns
    -------
    tuple of float
        ``spacing / target_spacing`` per axis (> 1 means finer).

    Raises
    ------
    GeometryError
        If the lengths differ or any value is not finite and positive.

    Examples
    --------
    >>> scale_for_target_spacing([1.0, 1.0, 3.3], [1.0, 1.0, 1.0])
    (1.0, 1.0, 3.3)
    """
    current = np.asarray(per_axis(spacing, len(spacing), "spacing"))
    target = np.asarray(per_axis(target_spacing, len(current), "target_spacing"))
    return tuple(float(c / t) for c, t in zip(current, target))


def resampled_shape(shape: Sequence[int], scale: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling by per-axis ``scale``: ``floor(n * s + 1/2)``, at least 1.

    Parameters
    ----------
    shape : (D,) sequence of int
        Input grid size per spatial axis (voxels).
    scale : (D,) sequence of float
        Per-axis factor (> 1 upsamples, < 1 downsamples); non-integer allowed.

    Returns
    -------
    tuple of int
        Output grid size.

    Raises
    ------
    GeometryError
        If a size is < 1 or a factor is not finite and positive.

    Examples
    --------
    >>> resampled_shape((182, 218, 55), (1, 1, 3.3))
    (182, 218, 182)
    """
    factors = np.asarray(per_axis(scale, len(shape)))
    if any(int(n) < 1 for n in shape):
        raise GeometryError(f"every axis needs at least one voxel, got shape {tuple(shape)}")
    return tuple(max(1, math.floor(int(n) * f + 0.5 + _EPS)) for n, f in zip(shape, factors))


def effective_scale(shape_in: Sequence[int], shape_out: Sequence[int]) -> tuple[float, ...]:
    """The exact per-axis scale ``n_out / n_in`` that the geometry uses.

    Parameters
    ----------
    shape_in, shape_out : (D,) sequence of int
        Grid sizes before and after resampling (voxels).

    Returns
    -------
    tuple of float
        ``n_out / n_in`` per axis.

    Raises
    ------
    GeometryError
        If the lengths differ or a size is < 1.

    Examples
    --------
    >>> effective_scale((55,), (182,))
    (3.309090909090909,)
    """
    if len(shape_in) != len(shape_out):
        raise GeometryError(f"shapes differ in length: {tuple(shape_in)} vs {tuple(shape_out)}")
    if min(list(shape_in) + list(shape_out)) < 1:
        raise GeometryError(f"zero-size axis in {tuple(shape_in)} -> {tuple(shape_out)}")
    return tuple(float(o) / float(i) for i, o in zip(shape_in, shape_out))


def resampled_affine(
    affine: np.ndarray, shape_in: Sequence[int], shape_out: Sequence[int]
) -> np.ndarray:
    """Affine of a grid resampled from ``shape_in`` to ``shape_out`` over the same field of view.

    Parameters
    ----------
    affine : (4, 4) float64 ndarray
        Voxel-to-world matrix of the input grid (mm).
    shape_in, shape_out : (D,) sequence of int, D <= 3
        Spatial grid sizes; axis ``d`` corresponds to affine column ``d``.

    Returns
    -------
    (4, 4) float64 ndarray
        ``A . diag(1/s, 1)`` with the origin moved by ``A[:3, :3] . ((1/s - 1) / 2)``,
        ``s = shape_out / shape_in`` (columns beyond D unchanged).

    Raises
    ------
    GeometryError
        If ``affine`` is invalid or the shapes are inconsistent.

    Examples
    --------
    >>> a = resampled_affine(np.eye(4), (10, 10, 10), (10, 10, 40))
    >>> a[2, 2], a[2, 3]
    (np.float64(0.25), np.float64(-0.375))
    """
    matrix = check_affine(affine)
    scale = np.ones(3)
    scale[: len(shape_in)] = effective_scale(shape_in, shape_out)
    inverse, out = 1.0 / scale, matrix.copy()
    out[:3, :3] = matrix[:3, :3] * inverse[None, :]
    out[:3, 3] = matrix[:3, 3] + matrix[:3, :3] @ ((inverse - 1.0) / 2.0)
    return out


def output_coordinates(n_in: int, n_out: int) -> np.ndarray:
    """Input-voxel coordinates of the output voxel centres along one axis.

    Parameters
    ----------
    n_in, n_out : int
        Input and output grid sizes (voxels) over the same field of view.

    Returns
    -------
    (n_out,) float64 ndarray
        ``(o + 1/2) * n_in / n_out - 1/2`` for ``o = 0 .. n_out - 1``.

    Raises
    ------
    GeometryError
        If a size is < 1.

    Examples
    --------
    >>> output_coordinates(2, 8).tolist()
    [-0.375, -0.125, 0.125, 0.375, 0.625, 0.875, 1.125, 1.375]
    """
    (scale,) = effective_scale((n_in,), (n_out,))
    return sample_coordinates(np.arange(n_out, dtype=np.float64), scale)


def sample_coordinates(index: np.ndarray, factor: float) -> np.ndarray:
    """Coordinates, in voxels of a grid, of samples ``index`` of its ``factor``-times grid.

    Parameters
    ----------
    index : ndarray
        Sample indices (or coordinates) on the ``factor``-times grid (same field of view).
    factor : float
        Its samples per voxel of this grid (> 0; < 1 for a coarser grid, e.g. ``1 / f`` for
        LR slice centres in HR voxels).

    Returns
    -------
    ndarray
        ``(index + 1/2) / factor - 1/2``, float64, shape of ``index``.

    Examples
    --------
    >>> sample_coordinates(np.arange(4), 2.0).tolist()
    [-0.25, 0.25, 0.75, 1.25]
    """
    return (np.asarray(index, dtype=np.float64) + 0.5) / factor - 0.5


def grid_factor(positions: np.ndarray) -> float:
    """The factor of an evenly spaced grid of :func:`sample_coordinates`: the inverse step.

    Parameters
    ----------
    positions : (n,) ndarray
        At least two increasing, evenly spaced coordinates (voxels).

    Returns
    -------
    float
        ``1 / (positions[1] - positions[0])``.

    Raises
    ------
    GeometryError
        If fewer than two positions or a non-positive step.

    Examples
    --------
    >>> grid_factor(sample_coordinates(np.arange(3, 9), 4.0))
    4.0
    """
    if (grid := np.asarray(positions, dtype=np.float64).ravel()).size < 2 or not grid[1] > grid[0]:
        raise GeometryError(f"a grid factor needs two increasing positions, got {grid[:2].tolist()}")
    return 1.0 / float(grid[1] - grid[0])


def input_window(
    out_start: int, out_stop: int, n_in: int, n_out: int, *, halo: int
) -> tuple[int, int]:
    """Input index range needed to compute outputs ``[out_start, out_stop)`` along one axis.

    Parameters
    ----------
    out_start, out_stop : int
        Half-open output index range.
    n_in, n_out : int
        Input and output grid sizes (voxels).
    halo : int
        Extra input voxels on each side (the model's receptive-field radius).

    Returns
    -------
    tuple of int
        Half-open input range ``[start, stop)``, clipped to ``[0, n_in)``.

    Raises
    ------
    GeometryError
        If the output range is empty or outside ``[0, n_out)``, or ``halo < 0``.

    Examples
    --------
    >>> input_window(4, 8, 10, 40, halo=2)
    (0, 5)
    """
    if not 0 <= out_start < out_stop <= n_out or halo < 0:
        raise GeometryError(f"bad output range [{out_start}, {out_stop}) for n_out={n_out}, halo={halo}")
    coords = output_coordinates(n_in, n_out)
    start = math.floor(coords[out_start] + _EPS) - halo
    stop = math.ceil(coords[out_stop - 1] - _EPS) + 1 + halo
    return max(0, start), min(n_in, stop)


def crop_affine(
    affine: np.ndarray, start: Sequence[int], step: Sequence[int] | None = None
) -> np.ndarray:
    """Affine of the sub-grid ``start + step * index`` of a grid.

    Parameters
    ----------
    affine : (4, 4) float64 ndarray
        Voxel-to-world matrix of the full grid (mm).
    start : (D,) sequence of int, D <= 3
        First voxel index of the crop per spatial axis.
    step : (D,) sequence of int, optional
        Stride per spatial axis (default 1).

    Returns
    -------
    (4, 4) float64 ndarray
        ``affine @ [diag(step) | start]``.

    Raises
    ------
    GeometryError
        If ``affine`` is invalid or a step is not positive.

    Examples
    --------
    >>> crop_affine(np.eye(4), (1, 2, 3))[:3, 3].tolist()
    [1.0, 2.0, 3.0]
    """
    matrix = check_affine(affine)
    strides, index_map = np.ones(3), np.eye(4)
    if step is not None:
        strides[: len(step)] = step
    if np.any(strides <= 0):
        raise GeometryError(f"crop step must be positive, got {list(strides)}")
    index_map[:3, :3], index_map[:3, 3][: len(start)] = np.diag(strides), start
    return matrix @ index_map


def downsampled_grid(n_hr: int, factor: float) -> tuple[int, int]:
    """Low-resolution grid size for downsampling ``n_hr`` voxels by ``factor``.

    Parameters
    ----------
    n_hr : int
        High-resolution grid size (voxels).
    factor : float
        Downsampling factor (>= 1; non-integer allowed).

    Returns
    -------
    n_lr : int
        ``floor(n_hr / factor)`` low-resolution voxels.
    n_covered : int
        ``floor(n_lr * factor + 1/2)``: the leading HR voxels the LR grid covers; the LR
        affine is ``resampled_affine(A_hr, n_covered -> n_lr)``.

    Raises
    ------
    GeometryError
        If ``factor < 1`` or fewer than ``factor`` HR voxels are given.

    Examples
    --------
    >>> downsampled_grid(182, 4)
    (45, 180)
    """
    if not math.isfinite(factor) or factor < 1:
        raise GeometryError(f"downsampling factor must be >= 1, got {factor}")
    n_lr = math.floor(n_hr / factor + _EPS)
    if n_lr < 1:
        raise GeometryError(f"axis of {n_hr} voxels is too short for factor {factor}")
    (n_covered,) = resampled_shape((n_lr,), (factor,))
    return n_lr, n_covered


def integer_factors(factors: Sequence[float]) -> bool:
    """Whether every per-axis factor is an integer (within 1e-9).

    Parameters
    ----------
    factors : (D,) sequence of float
        Per-axis scale factors.

    Returns
    -------
    bool

    Examples
    --------
    >>> integer_factors((1, 1, 4.0)), integer_factors((1, 1, 3.3))
    (True, False)
    """
    return all(abs(float(f) - round(float(f))) < _EPS for f in factors)
