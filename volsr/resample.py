"""Separable resampling as per-axis weight matrices: one code path for every kernel.

Interpolation (nearest, linear, cubic B-spline, Lanczos-3), MATLAB-style antialiased
bicubic downsampling and slice-profile averaging are all linear maps along one axis:
``y[o] = sum_j W[o, j] x[j]``. This module builds ``W`` (sparse, rows summing to one) from
output positions in input-voxel coordinates (see :func:`volsr.geometry.output_coordinates`)
and applies it along an axis of a NumPy array or a torch tensor.

Borders are half-sample symmetric (index -1 reads voxel 0, index n reads voxel n-1), the
convention of MATLAB ``imresize`` and of SciPy ``mode="reflect"``.

SciPy's ``ndimage.zoom`` cannot express a per-axis effective scale with our field-of-view
convention plus antialiasing, and has no Lanczos or MATLAB cubic; ``ndimage.map_coordinates``
materialises a coordinate array per output voxel. Weight matrices cost ``n_out x taps`` per
axis and run on tiles unchanged, which is what the out-of-core engine needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import torch

from volsr.geometry import output_coordinates

__all__ = [
    "INTERPOLATION_METHODS",
    "kernel_matrix",
    "interpolation_matrix",
    "interpolation_matrix_at",
    "antialiased_cubic_matrix",
    "apply_matrix",
    "keys_cubic",
    "lanczos3",
    "gaussian_profile",
    "box_profile",
]

#: Interpolation methods and the radius (input voxels) beyond which they read nothing.
#: The cubic B-spline prefilter is infinite in principle; its weights fall below 1e-7
#: of the peak 12 voxels away, so 14 bounds it to float32 precision.
INTERPOLATION_METHODS: dict[str, int] = {
    "nearest": 1,
    "linear": 1,
    "bicubic": 2,
    "cubic": 14,
    "lanczos": 3,
}

Kernel = Callable[[np.ndarray], np.ndarray]


def keys_cubic(x: np.ndarray, *, a: float = -0.5) -> np.ndarray:
    """Keys cubic convolution kernel (MATLAB ``imresize`` bicubic uses ``a = -0.5``).

    Parameters
    ----------
    x : ndarray
        Offsets in (possibly stretched) input voxels.
    a : float
        Keys' free parameter.

    Returns
    -------
    ndarray, float64, shape of ``x``
        Kernel values; zero for ``|x| >= 2``.

    Examples
    --------
    >>> keys_cubic(np.array([0.0, 1.0, 0.5])).tolist()
    [1.0, 0.0, 0.5625]
    """
    t = np.abs(np.asarray(x, dtype=np.float64))
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def lanczos3(x: np.ndarray) -> np.ndarray:
    """Lanczos kernel with three lobes: ``sinc(x) sinc(x/3)`` for ``|x| < 3``.

    Parameters
    ----------
    x : ndarray
        Offsets in input voxels.

    Returns
    -------
    ndarray, float64, shape of ``x``
        Kernel values.

    Examples
    --------
    >>> lanczos3(np.array([0.0, 1.0, 3.0])).round(12).tolist()
    [1.0, 0.0, 0.0]
    """
    t = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(t) < 3, np.sinc(t) * np.sinc(t / 3), 0.0)


def gaussian_profile(fwhm: float) -> tuple[Kernel, float]:
    """Gaussian slice profile with the given full width at half maximum.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum in input voxels (> 0).

    Returns
    -------
    kernel : callable
        Unnormalised Gaussian of the offset.
    radius : float
        Half-width beyond which the kernel is treated as zero (4 sigma).

    Raises
    ------
    ValueError
        If ``fwhm`` is not positive.

    Examples
    --------
    >>> kernel, radius = gaussian_profile(4.0)
    >>> float(kernel(np.array([2.0]))[0])
    0.5
    """
    if not fwhm > 0:
        raise ValueError(f"fwhm must be > 0 voxels, got {fwhm}")
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return (lambda d: np.exp(-0.5 * (np.asarray(d) / sigma) ** 2)), 4.0 * sigma


def box_profile(width: float) -> tuple[Kernel, float]:
    """Boxcar slice profile: the overlap of ``[-width/2, width/2]`` with each voxel.

    Parameters
    ----------
    width : float
        Slice thickness in input voxels (> 0).

    Returns
    -------
    kernel : callable
        Length of ``[d - 1/2, d + 1/2]`` inside ``[-width/2, width/2]`` for offset ``d``
        (exact partial-volume weights).
    radius : float
        ``width/2 + 1/2``.

    Raises
    ------
    ValueError
        If ``width`` is not positive.

    Examples
    --------
    >>> kernel, radius = box_profile(2.0)
    >>> kernel(np.array([0.0, 1.0, 1.5])).tolist()
    [1.0, 0.5, 0.0]
    """
    if not width > 0:
        raise ValueError(f"width must be > 0 voxels, got {width}")
    half = width / 2.0

    def kernel(d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype=np.float64)
        return np.clip(np.minimum(d + 0.5, half) - np.maximum(d - 0.5, -half), 0.0, None)

    return kernel, half + 0.5


def kernel_matrix(
    positions: np.ndarray, n_in: int, kernel: Kernel, radius: float, *, normalise: bool = True
) -> sp.csr_matrix:
    """Weights ``W[o, j] = kernel(positions[o] - j)`` with symmetric borders.

    Parameters
    ----------
    positions : (n_out,) float64 ndarray
        Output sample positions in input-voxel coordinates.
    n_in : int
        Input length (voxels).
    kernel : callable
        Maps offsets (input voxels) to weights.
    radius : float
        Taps with ``|offset| > radius`` are skipped.
    normalise : bool
        Scale each row to sum to one (before folding the borders).

    Returns
    -------
    (n_out, n_in) scipy.sparse.csr_matrix, float64
        The weights; taps outside ``[0, n_in)`` are folded back half-sample symmetrically.

    Raises
    ------
    ValueError
        If a row has zero total weight (kernel too narrow for the sampling).

    Examples
    --------
    >>> kernel_matrix(np.array([0.5]), 2, lambda d: np.maximum(1 - np.abs(d), 0), 1).toarray()
    array([[0.5, 0.5]])
    """
    positions = np.asarray(positions, dtype=np.float64)
    offsets = np.arange(-math.ceil(radius), math.ceil(radius) + 2)
    taps = np.floor(positions)[:, None].astype(np.int64) + offsets[None, :]
    weights = kernel(positions[:, None] - taps)
    weights = np.where(np.abs(positions[:, None] - taps) <= radius, weights, 0.0)
    if normalise:
        totals = weights.sum(axis=1, keepdims=True)
        if np.any(np.abs(totals) < 1e-12):
            raise ValueError("a sample has zero total weight: the kernel is too narrow")
        weights = weights / totals
    folded = _fold_symmetric(taps, n_in)
    rows = np.repeat(np.arange(len(positions)), taps.shape[1])
    matrix = sp.coo_matrix(
        (weights.ravel(), (rows, folded.ravel())), shape=(len(positions), n_in)
    ).tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _fold_symmetric(index: np.ndarray, n: int) -> np.ndarray:
    period = 2 * n
    folded = np.mod(index, period)
    return np.where(folded >= n, period - 1 - folded, folded)


def interpolation_matrix(n_in: int, n_out: int, method: str) -> sp.csr_matrix:
    """Interpolation weights from ``n_in`` to ``n_out`` voxels over the same field of view.

    Parameters
    ----------
    n_in, n_out : int
        Grid sizes (voxels).
    method : {"nearest", "linear", "bicubic", "cubic", "lanczos"}
        ``cubic`` is the interpolating cubic B-spline (SciPy ``order=3``, ``mode="reflect"``).

    Returns
    -------
    (n_out, n_in) scipy.sparse.csr_matrix, float64

    Raises
    ------
    ValueError
        If ``method`` is unknown.

    Examples
    --------
    >>> interpolation_matrix(2, 4, "linear").toarray().round(3).tolist()
    [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    _check_method(method)
    return interpolation_matrix_at(output_coordinates(n_in, n_out), n_in, method)


def _check_method(method: str) -> None:
    if method not in INTERPOLATION_METHODS:
        raise ValueError(f"method must be one of {sorted(INTERPOLATION_METHODS)}, got {method!r}")


def interpolation_matrix_at(positions: np.ndarray, n_in: int, method: str) -> sp.csr_matrix:
    """Interpolation weights at arbitrary sample positions along one axis.

    Parameters
    ----------
    positions : (n_out,) float64 array_like
        Sample positions in input-voxel coordinates (voxel ``j`` is centred at ``j``);
        positions outside ``[-1/2, n_in - 1/2]`` read the half-sample symmetric extension.
    n_in : int
        Input length (voxels).
    method : {"nearest", "linear", "bicubic", "cubic", "lanczos"}
        As in :func:`interpolation_matrix`; ``cubic`` prefilters the ``n_in`` given
        voxels, so a tile needs ``INTERPOLATION_METHODS["cubic"]`` voxels of halo.

    Returns
    -------
    (n_out, n_in) scipy.sparse.csr_matrix, float64
        Rows sum to one (to 1e-8 for ``cubic``, whose weights below 1e-9 are dropped).

    Raises
    ------
    ValueError
        If ``method`` is unknown, ``n_in < 1``, or ``positions`` is not a finite 1-D array.

    Examples
    --------
    >>> interpolation_matrix_at([0.5, 2.0], 3, "linear").toarray().tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    """
    _check_method(method)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 1 or not np.all(np.isfinite(positions)):
        raise ValueError(f"positions must be a finite 1-D array, got shape {positions.shape}")
    if int(n_in) < 1:
        raise ValueError(f"n_in must be >= 1, got {n_in}")
    if method == "nearest":
        # Ties (a position halfway between voxels) go to the higher index, as in SciPy.
        return kernel_matrix(positions, n_in, lambda d: ((d >= -0.5) & (d < 0.5)) * 1.0, 0.5)
    if method == "linear":
        return kernel_matrix(positions, n_in, lambda d: np.maximum(1.0 - np.abs(d), 0.0), 1.0)
    if method == "lanczos":
        return kernel_matrix(positions, n_in, lanczos3, 3.0)
    if method == "bicubic":
        return kernel_matrix(positions, n_in, keys_cubic, 2.0)
    basis = kernel_matrix(positions, n_in, _bspline3, 2.0, normalise=False)
    prefilter = ndi.spline_filter1d(np.eye(n_in), order=3, axis=0, mode="reflect")
    matrix = sp.csr_matrix(basis @ prefilter)
    matrix.data[np.abs(matrix.data) < 1e-9] = 0.0
    matrix.eliminate_zeros()
    return matrix


def _bspline3(x: np.ndarray) -> np.ndarray:
    t = np.abs(x)
    return np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def antialiased_cubic_matrix(n_in: int, n_out: int) -> sp.csr_matrix:
    """MATLAB ``imresize`` bicubic weights, antialiased when shrinking.

    Parameters
    ----------
    n_in, n_out : int
        Grid sizes (voxels); ``s = n_out / n_in``.

    Returns
    -------
    (n_out, n_in) scipy.sparse.csr_matrix, float64
        For ``s < 1`` the Keys kernel (``a = -0.5``) is stretched by ``1/s``
        (``h(x) = s k(s x)``, width ``4/s``); rows normalised; symmetric borders.

    Raises
    ------
    GeometryError
        If a size is < 1.

    Examples
    --------
    >>> antialiased_cubic_matrix(4, 2).toarray().sum(axis=1).tolist()
    [1.0, 1.0]
    """
    positions = output_coordinates(n_in, n_out)
    shrink = min(1.0, n_out / n_in)
    return kernel_matrix(positions, n_in, lambda d: keys_cubic(shrink * d), 2.0 / shrink)


def apply_matrix(
    array: np.ndarray | torch.Tensor, matrix: sp.spmatrix, axis: int
) -> np.ndarray | torch.Tensor:
    """Apply per-axis weights: ``out[..., o, ...] = sum_j W[o, j] array[..., j, ...]``.

    Parameters
    ----------
    array : ndarray or torch.Tensor
        Any shape; ``array.shape[axis] == matrix.shape[1]``.
    matrix : (n_out, n_in) scipy sparse matrix
        Weights from this module.
    axis : int
        Axis to resample.

    Returns
    -------
    ndarray or torch.Tensor
        Same type; floating dtype of the input (float64 for integer NumPy input);
        ``shape[axis] == n_out``.

    Raises
    ------
    ValueError
        If the axis length does not match the matrix.

    Examples
    --------
    >>> apply_matrix(np.array([[0.0, 2.0]]), interpolation_matrix(2, 4, "linear"), 1).tolist()
    [[0.0, 0.5, 1.5, 2.0]]
    """
    if array.shape[axis] != matrix.shape[1]:
        raise ValueError(
            f"axis {axis} has {array.shape[axis]} voxels, the weights expect {matrix.shape[1]}"
        )
    if isinstance(array, torch.Tensor):
        dense = torch.as_tensor(matrix.toarray(), dtype=array.dtype, device=array.device)
        moved = torch.movedim(array, axis, -1)
        return torch.movedim(moved @ dense.T, -1, axis)
    values = np.asarray(array)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    moved = np.moveaxis(values, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    result = (matrix.astype(values.dtype) @ flat).reshape((matrix.shape[0],) + moved.shape[1:])
    return np.moveaxis(result.astype(values.dtype, copy=False), 0, axis)
