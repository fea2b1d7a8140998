"""Multiscale (OME-Zarr pyramid) grids.

Level ``k`` is the package's downsampling (:func:`~volsr.geometry.downsampled_grid`) with
``f = 2**k`` on every spatial axis: ``floor(n / 2**k)`` voxels, voxel ``o`` the mean of level-0 voxels
``[o 2**k, (o + 1) 2**k)`` and centred on their mean position, so
``A_k = A . diag(2**k, 1)`` with the origin moved by ``A[:3, :3] . ((2**k - 1) / 2)``
(half a level-``k-1`` voxel per level, not half a level-0 voxel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from volsr.errors import GeometryError
from volsr.geometry.grid import downsampled_grid, resampled_affine

__all__ = ["pyramid_shape", "pyramid_affine", "pyramid_transform"]


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
