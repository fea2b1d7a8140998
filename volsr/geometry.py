"""Grid geometry: the one owner of every formula about voxel grids.

Conventions (fixed here, used everywhere):

- An affine is a ``(4, 4)`` float64 matrix mapping *voxel centres* ``(i, j, k, 1)`` of
  the spatial array axes, in array order, to world coordinates in mm (RAS+ for NIfTI).
  Volumes with two spatial axes (hyperspectral cubes) use the first two columns; the
  third column is a unit vector.
- Voxel ``i`` covers the continuous interval ``[i - 1/2, i + 1/2]`` in voxel coordinates.
- Resampling a grid of ``n`` voxels to ``n'`` voxels along an axis keeps the field of
  view ``[-1/2, n - 1/2]``. With ``s = n'/n`` (the *effective* scale), output voxel ``o``
  sits at input coordinate ``x = (o + 1/2) / s - 1/2``, hence

  ``A' = A . diag(1/s, 1)`` and the origin moves by ``A[:3, :3] . ((1/s - 1) / 2)``.

  The same formula serves upsampling (``s > 1``) and downsampling (``s < 1``).
- Upsampling by a requested per-axis factor ``f`` gives ``n' = floor(n f + 1/2)``
  (round half up, never below 1); the effective scale ``n'/n`` then differs slightly
  from ``f`` for non-integer factors, and the affine uses the effective scale so that
  the field of view is exactly preserved.
- A thick-slice (or any) downsampling by factor ``f`` keeps ``n_lr = floor(n / f)``
  voxels covering the first ``n_cov = floor(n_lr f + 1/2) <= n`` high-resolution voxels;
  low-resolution voxel ``k`` is centred on the middle of HR voxels ``[k f, (k+1) f)``,
  and upsampling the LR grid by ``f`` lands exactly on the HR grid.
- Multiscale (OME-Zarr pyramid) level ``k`` is that downsampling with ``f = 2**k`` on every
  spatial axis: ``floor(n / 2**k)`` voxels, voxel ``o`` the mean of level-0 voxels
  ``[o 2**k, (o + 1) 2**k)`` and centred on their mean position, so
  ``A_k = A . diag(2**k, 1)`` with the origin moved by ``A[:3, :3] . ((2**k - 1) / 2)``
  (half a level-``k-1`` voxel per level, not half a level-0 voxel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from volsr.errors import GeometryError

__all__ = [
    "check_affine",
    "voxel_spacing",
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
    "pyramid_shape",
    "pyramid_affine",
    "pyramid_transform",
]

_EPS = 1e-9


def _as_scale(scale: Sequence[float], ndim: int, name: str = "scale") -> np.ndarray:
    values = np.asarray(scale, dtype=np.float64).reshape(-1)
    if values.size != ndim:
        raise GeometryError(f"{name} needs {ndim} values (one per spatial axis), got {list(values)}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise GeometryError(f"{name} must be finite and > 0, got {list(values)}")
    return values


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
    current = _as_scale(spacing, len(spacing), "spacing")
    target = _as_scale(target_spacing, len(current), "target_spacing")
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
    factors = _as_scale(scale, len(shape))
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


def pyramid_shape(shape: Sequence[int], level: int) -> tuple[int, ...]:
    """Spatial shape of multiscale level ``level``: ``floor(n / 2**level)`` voxels per axis.

    Trailing voxels that do not fill a ``2**level`` block are not part of the level, so
    that each of its voxels is exactly the mean of one block (:func:`pyramid_affine`).

    Parameters
    ----------
    shape : (D,) sequence of int
        Level-0 spatial grid size (voxels).
    level : int
        Level index, >= 0 (0 is the level-0 grid itself).

    Returns
    -------
    tuple of int
        Grid size of the level, each >= 1.

    Raises
    ------
    GeometryError
        If ``level < 0`` or an axis has fewer than ``2**level`` voxels.

    Examples
    --------
    >>> pyramid_shape((182, 218, 55), 2)
    (45, 54, 13)
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise GeometryError(f"pyramid level must be an integer >= 0, got {level!r}")
    return tuple(downsampled_grid(int(n), float(2**level))[0] for n in shape)


def pyramid_affine(affine: np.ndarray, level: int, *, ndim: int) -> np.ndarray:
    """Affine of multiscale level ``level``: one voxel per ``2**level`` block of level 0.

    Parameters
    ----------
    affine : (4, 4) float64 ndarray
        Voxel-to-world matrix of level 0 (mm).
    level : int
        Level index, >= 0.
    ndim : int
        Number of spatial axes (1 to 3); columns beyond ``ndim`` are unchanged.

    Returns
    -------
    (4, 4) float64 ndarray
        ``A . diag(2**level, 1)`` with the origin moved by ``A[:3, :3] . ((2**level - 1) / 2)``
        on the spatial columns: :func:`resampled_affine` of a ``2**level`` block to one voxel.
        In a per-axis scale-and-translation frame (NGFF) this is :func:`pyramid_transform`.

    Raises
    ------
    GeometryError
        If ``affine`` is invalid, ``level < 0`` or ``ndim`` is not 1, 2 or 3.

    Examples
    --------
    >>> a = pyramid_affine(np.diag([2.0, 2.0, 3.0, 1.0]), 2, ndim=3)
    >>> np.diag(a).tolist(), a[:3, 3].tolist()
    ([8.0, 8.0, 12.0, 1.0], [3.0, 3.0, 4.5])
    """
    if ndim not in (1, 2, 3):
        raise GeometryError(f"ndim must be 1, 2 or 3 spatial axes, got {ndim!r}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise GeometryError(f"pyramid level must be an integer >= 0, got {level!r}")
    return resampled_affine(affine, (2**level,) * ndim, (1,) * ndim)


def pyramid_transform(scale: Sequence[float], translation: Sequence[float], level: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis scale and translation of multiscale level ``level`` from those of level 0.

    The frame is one where array axis ``a`` has voxel ``n`` at ``t_a + s_a n`` (NGFF
    ``scale`` then ``translation``): level ``k`` voxel ``o`` is the mean of level-0 voxels
    ``[o 2**k, (o + 1) 2**k)``, centred at ``t + s (o 2**k + (2**k - 1) / 2)``, so
    ``s_k = s 2**k`` and ``t_k = t + s (2**k - 1) / 2`` (:func:`pyramid_affine` in one
    frame). It holds whatever the sign or the world direction of an axis, as long as ``s``
    and ``t`` describe level 0 in the same frame.

    Parameters
    ----------
    scale : (D,) sequence of float
        Level-0 spacing per array axis (any sign).
    translation : (D,) sequence of float
        Level-0 position of voxel 0's centre per array axis.
    level : int
        Level index, >= 0.

    Returns
    -------
    scale : (D,) float64 ndarray
    translation : (D,) float64 ndarray

    Raises
    ------
    GeometryError
        If ``level < 0`` or the sequences differ in length.

    Examples
    --------
    >>> s, t = pyramid_transform([1.0, 4.0], [10.5, 30.0], 2)
    >>> s.tolist(), t.tolist()
    ([4.0, 16.0], [12.0, 36.0])
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise GeometryError(f"pyramid level must be an integer >= 0, got {level!r}")
    s, t = np.asarray(scale, dtype=np.float64), np.asarray(translation, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 1:
        raise GeometryError(f"scale {s.tolist()} and translation {t.tolist()} need one value per axis")
    size = 2.0**level
    return s * size, t + s * (size - 1) / 2
