"""Data consistency: the output degraded again by the input's acquisition, against the input.

A super-resolved volume ``x`` explains its input ``y`` when re-acquiring it gives ``y`` back:
``D x = y``, with ``D`` the acquisition's per-axis weights (``D = D_0 (x) D_1 (x) D_2``, one
matrix per upsampled axis). :func:`consistency_map` is ``D x - y`` on the input's grid (where
the output contradicts the measurement); :func:`enforce_consistency` is the nearest volume
(least squares) that satisfies ``D x = y`` exactly:
``x + D^T (D D^T)^-1 (y - D x)``, separable because ``D`` is (each factor
``D_d^T (D_d D_d^T)^-1`` applied along its axis).

``D_d`` for MRI is :func:`volsr.degrade.thick_slice_matrix` with the acquisition's slice
thickness and profile, LR voxel ``k`` centred on output voxel ``(k + 1/2) f - 1/2`` (the
engine's geometry); for a spectral cube it is the protocol's MATLAB-``imresize`` bicubic
(:func:`volsr.resample.antialiased_cubic_matrix`). Both run lazily on dask arrays, one axis
at a time with that axis whole in each block (memory: one block, never the volume).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import scipy.sparse as sp

from volsr.acquisition import AcquisitionModel
from volsr.degrade import thick_slice_matrix
from volsr.errors import GeometryError
from volsr.resample import antialiased_cubic_matrix, apply_matrix
from volsr.volume import Volume

__all__ = ["reacquisition_matrices", "reacquire", "consistency_map", "enforce_consistency", "summary"]


def reacquisition_matrices(
    output: Volume, source: Volume, acquisition: AcquisitionModel | None
) -> dict[int, sp.csr_matrix]:
    """The weights ``D_d`` (input voxels x output voxels) of every spatial axis that was upsampled.

    Parameters
    ----------
    output : Volume
        The super-resolved volume (its spacing sets the thickness in output voxels).
    source : Volume
        The input it was made from (same axes).
    acquisition : AcquisitionModel or None
        Thickness and profile per spatial axis (mm); None for a spectral cube (bicubic).

    Returns
    -------
    dict of spatial axis to (n_in, n_out) scipy.sparse.csr_matrix
        Axes whose size did not change are left out.

    Raises
    ------
    GeometryError
        If the volumes have different axes, or an axis shrank.
    ValueError
        If an MRI volume comes without an acquisition model.

    Examples
    --------
    >>> import dataclasses
    >>> from volsr.acquisition import acquisition_from_spacing
    >>> lr = Volume(np.zeros((4, 4, 2), np.float32), np.diag([1, 1, 2, 1.0]), ("i", "j", "k"))
    >>> sr = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> acq = dataclasses.replace(acquisition_from_spacing((1, 1, 2)), profile="box")
    >>> m = reacquisition_matrices(sr, lr, acq)
    >>> list(m), m[2].toarray().tolist()
    ([2], [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    """
    if output.axes != source.axes:
        raise GeometryError(f"output axes {output.axes} differ from the input's {source.axes}")
    matrices = {}
    for d, (n_out, n_in) in enumerate(zip(output.spatial_shape, source.spatial_shape, strict=True)):
        if n_out == n_in:
            continue
        if n_out < n_in:
            raise GeometryError(f"spatial axis {d} shrank ({n_in} -> {n_out}): consistency needs an upsampled output")
        if source.band_axis is not None:
            matrices[d] = antialiased_cubic_matrix(n_out, n_in).tocsr()
            continue
        if acquisition is None:
            raise ValueError("an MRI volume needs its acquisition model (thickness and profile) for consistency")
        thickness = acquisition.thickness[d] / float(output.spacing[d])
        matrices[d] = thick_slice_matrix(n_out, n_out / n_in, thickness=thickness, profile=acquisition.profile,
                                         n_lr=n_in).tocsr()  # fmt: skip
    return matrices


def _along(data: da.Array, axis: int, matrix: sp.spmatrix | np.ndarray) -> da.Array:
    """``matrix`` applied along array ``axis`` of a dask array, that axis whole in every block."""
    data = data.rechunk({axis: -1})
    chunks = list(data.chunks)
    chunks[axis] = (matrix.shape[0],)
    if isinstance(matrix, np.ndarray):
        return data.map_blocks(lambda b: np.moveaxis(np.tensordot(matrix, b, axes=(1, axis)), 0, axis).astype(np.float32),
                               chunks=tuple(chunks), dtype=np.float32)  # fmt: skip
    return data.map_blocks(lambda b: np.asarray(apply_matrix(b, matrix, axis), np.float32),
                           chunks=tuple(chunks), dtype=np.float32)  # fmt: skip


def reacquire(output: Volume, matrices: dict[int, sp.spmatrix], affine: np.ndarray) -> Volume:
    """``D x``: the output re-acquired onto the input's grid (lazy, float32).

    Parameters
    ----------
    output : Volume
        The super-resolved volume.
    matrices : dict of spatial axis to matrix
        From :func:`reacquisition_matrices`.
    affine : (4, 4) ndarray
        The input's affine (the result's grid).

    Returns
    -------
    Volume

    """
    data = output.data.astype(np.float32)
    for d, matrix in matrices.items():
        data = _along(data, output.spatial_axes[d], matrix)
    return output.replace(data=data, affine=np.asarray(affine, np.float64))


def consistency_map(output: Volume, source: Volume, acquisition: AcquisitionModel | None) -> Volume:
    """``D x - y`` on the input's grid, in the input's units (lazy, float32).

    Parameters
    ----------
    output : Volume
        The super-resolved volume ``x``.
    source : Volume
        The input ``y``.
    acquisition : AcquisitionModel or None
        As for :func:`reacquisition_matrices`.

    Returns
    -------
    Volume
        The input's shape and affine; metadata of ``source``.

    Raises
    ------
    GeometryError, ValueError
        As :func:`reacquisition_matrices`.

    Examples
    --------
    >>> import dataclasses
    >>> from volsr.acquisition import acquisition_from_spacing
    >>> lr = Volume(np.array([[[1.0, 3.0]]], np.float32), np.diag([1, 1, 2, 1.0]), ("i", "j", "k"))
    >>> sr = Volume(np.array([[[1.0, 1.0, 3.0, 5.0]]], np.float32), np.eye(4), ("i", "j", "k"))
    >>> acq = dataclasses.replace(acquisition_from_spacing((1, 1, 2)), profile="box")
    >>> consistency_map(sr, lr, acq).numpy().tolist()
    [[[0.0, 1.0]]]
    """
    again = reacquire(output, reacquisition_matrices(output, source, acquisition), source.affine)
    return source.replace(data=again.data - source.data.astype(np.float32))


def enforce_consistency(output: Volume, source: Volume, acquisition: AcquisitionModel | None) -> Volume:
    """The least-squares nearest volume to ``output`` that re-acquires to ``source`` exactly (lazy).

    Parameters
    ----------
    output, source, acquisition
        As for :func:`consistency_map`.

    Returns
    -------
    Volume
        ``x + D^T (D D^T)^-1 (y - D x)`` on the output's grid, float32.

    Raises
    ------
    GeometryError, ValueError
        As :func:`reacquisition_matrices`.

    Examples
    --------
    >>> import dataclasses
    >>> from volsr.acquisition import acquisition_from_spacing
    >>> lr = Volume(np.array([[[1.0, 3.0]]], np.float32), np.diag([1, 1, 2, 1.0]), ("i", "j", "k"))
    >>> sr = Volume(np.array([[[1.0, 1.0, 3.0, 5.0]]], np.float32), np.eye(4), ("i", "j", "k"))
    >>> acq = dataclasses.replace(acquisition_from_spacing((1, 1, 2)), profile="box")
    >>> enforce_consistency(sr, lr, acq).numpy().tolist()
    [[[1.0, 1.0, 2.0, 4.0]]]
    """
    matrices = reacquisition_matrices(output, source, acquisition)
    residual = source.data.astype(np.float32) - reacquire(output, matrices, source.affine).data
    for d, matrix in matrices.items():
        dense = matrix.toarray()
        # D_d^T (D_d D_d^T)^-1: (n_out, n_in); D_d D_d^T is small (n_in^2) and well posed
        # for slices that overlap at most partly (its rows are nearly disjoint).
        lift = np.linalg.solve(dense @ dense.T, dense).T
        residual = _along(residual, output.spatial_axes[d], lift)
    return output.replace(data=output.data.astype(np.float32) + residual)


def summary(consistency: np.ndarray | da.Array, data_range: float) -> str:
    """One log line: RMS and 99th percentile of ``|D x - y|``, also as a share of ``data_range``.

    Parameters
    ----------
    consistency : ndarray or dask array
        A consistency map.
    data_range : float
        The input's scale (e.g. its 99.9th percentile), > 0.

    Returns
    -------
    str

    Examples
    --------
    >>> summary(np.array([3.0, -4.0]), 100.0)
    'consistency: RMS 3.536 (3.54 % of 100), 99th percentile of |D x - y| 3.99 (3.99 %)'
    """
    values = np.abs(np.asarray(consistency, dtype=np.float64)).ravel()
    rms = float(np.sqrt(np.mean(values**2)))
    p99 = float(np.percentile(values, 99))
    return (f"consistency: RMS {rms:.4g} ({100 * rms / data_range:.3g} % of {data_range:.4g}), "
            f"99th percentile of |D x - y| {p99:.3g} ({100 * p99 / data_range:.3g} %)")  # fmt: skip
