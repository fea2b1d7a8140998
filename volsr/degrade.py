"""Resolution degradations: turn a high-resolution (HR) volume into a low-resolution (LR) one.

Plain functions, scikit-image style. Each takes a NumPy array (``axes`` are array axes) or a
:class:`~volsr.volume.Volume` (``axes`` are spatial axes, i.e. affine columns; band and
channel axes are never touched) and returns the same kind.

The LR grid is the contract of :func:`volsr.geometry.downsampled_grid`: along an axis of
``n`` HR voxels and factor ``f`` there are ``n_lr = floor(n / f)`` LR voxels covering the
first ``n_cov`` HR voxels; LR voxel ``k`` is centred at HR coordinate
``output_coordinates(n_cov, n_lr)[k]`` (the middle of HR voxels ``[k f, (k+1) f)``), and
the LR affine is ``resampled_affine(A, covered shape, LR shape)``, so upsampling the LR grid
by ``f`` lands exactly on the HR grid. Per-axis weights come from :mod:`volsr.resample`.

A Volume result is lazy: one dask task computes the whole output from the whole input in
memory (MRI volumes fit in memory when making training pairs); nothing is read until the
caller computes it.

Rician noise (the stochastic degradation, an R10 ``sample_noise_params`` /
``rician_noise`` pair) is implemented in :mod:`volsr.noise` to keep both modules within the
size budget, and re-exported here so that this module is the one entry point for every
degradation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

from volsr.geometry import downsampled_grid, output_coordinates, per_axis, resampled_affine
from volsr.noise import (
    NoiseParams,
    add_rician_noise,
    foreground_mean,
    rician_noise,
    sample_noise_params,
    sigma_for_snr,
)
from volsr.resample import (
    antialiased_cubic_matrix,
    apply_matrix,
    box_profile,
    gaussian_profile,
    kernel_matrix,
)
from volsr.volume import Volume

__all__ = [
    "PROFILES",
    "KSPACE_GRIDS",
    "FWHM_PER_SIGMA",
    "slice_factor_from_mm",
    "thick_slice",
    "kspace_truncate",
    "gaussian_decimate",
    "bicubic_downsample",
    "METHODS",
    "degrade",
    "foreground_mean",
    "sigma_for_snr",
    "NoiseParams",
    "sample_noise_params",
    "add_rician_noise",
    "rician_noise",
]

#: Slice profiles understood by :func:`thick_slice`.
PROFILES = ("gaussian", "box")
#: Degradation models of :func:`degrade`.
METHODS = ("slice", "kspace", "gaussian", "bicubic")
#: Output grids of :func:`kspace_truncate`.
KSPACE_GRIDS = ("lr", "hr")
#: ``FWHM = FWHM_PER_SIGMA * sigma`` for a Gaussian (``2 sqrt(2 ln 2)``).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

ArrayOrVolume = np.ndarray | Volume
Weights = Callable[[int, float, int], sp.csr_matrix]


def slice_factor_from_mm(
    hr_spacing: float, *, thickness_mm: float, gap_mm: float = 0.0
) -> tuple[float, float]:
    """Convert a slice thickness and gap in mm into :func:`thick_slice` parameters.

    Parameters
    ----------
    hr_spacing, thickness_mm : float
        HR voxel size along the slice axis and slice thickness (mm, > 0).
    gap_mm : float
        Gap between slices (mm); negative for overlapping slices.

    Returns
    -------
    factor, thickness : float
        ``(thickness_mm + gap_mm) / hr_spacing`` and ``thickness_mm / hr_spacing`` (voxels).

    Raises
    ------
    ValueError
        If a value is not finite or the slice spacing is finer than ``hr_spacing``.

    Examples
    --------
    >>> slice_factor_from_mm(1.0, thickness_mm=3.0, gap_mm=0.3)
    (3.3, 3.0)
    """
    for name, value in (("hr_spacing", hr_spacing), ("thickness_mm", thickness_mm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    spacing_mm = thickness_mm + gap_mm
    if not (math.isfinite(gap_mm) and spacing_mm >= hr_spacing):
        raise ValueError(
            f"slice spacing thickness_mm + gap_mm = {spacing_mm} mm must be finite and not "
            f"finer than hr_spacing = {hr_spacing} mm"
        )
    return spacing_mm / hr_spacing, thickness_mm / hr_spacing


def thick_slice(
    x: ArrayOrVolume,
    *,
    axis: int,
    factor: float,
    thickness: float | None = None,
    profile: str = "gaussian",
) -> ArrayOrVolume:
    """Simulate a thick-slice acquisition along one axis.

    LR voxel ``k`` is ``sum_j w(c_k - j) x[j] / sum_j w(c_k - j)`` around its centre ``c_k``
    (HR voxel coordinates; symmetric borders), ``w`` a Gaussian of FWHM ``thickness`` (cut
    at 4 sigma) or a box of width ``thickness`` (partial-volume weights). A thickness below
    ``factor`` leaves gaps between slices, above it the slices overlap.

    Parameters
    ----------
    x : ndarray or Volume
        HR data, any shape.
    axis : int
        Slice axis: array axis (ndarray) or spatial axis (Volume; 0 = ``i``).
    factor : float
        Slice spacing / HR spacing (>= 1, non-integer allowed).
    thickness : float, optional
        Slice thickness in HR voxels (> 0); default ``factor`` (contiguous slices).
    profile : {"gaussian", "box"}
        Slice profile.

    Returns
    -------
    ndarray or Volume
        ``shape[axis] = floor(n / factor)``; float32 for float32 input else float64; a
        Volume gets the LR affine and keeps its metadata.

    Raises
    ------
    ValueError
        If ``profile``, ``thickness`` or ``axis`` is invalid; ``GeometryError`` if
        ``factor < 1`` or the axis has fewer than ``factor`` voxels.

    Examples
    --------
    >>> thick_slice(np.arange(8.0), axis=0, factor=2, profile="box").tolist()
    [0.5, 2.5, 4.5, 6.5]
    """
    thick_slice_matrix(1 + math.ceil(factor), factor, thickness=thickness, profile=profile)  # checks first

    def weights(n: int, f: float, index: int) -> sp.csr_matrix:
        return thick_slice_matrix(n, f, thickness=thickness, profile=profile)

    return _dispatch(x, (axis,), factor, _weighted(weights, crop=False), keep_grid=False)


def thick_slice_matrix(
    n: int, factor: float, *, thickness: float | None = None, profile: str = "gaussian", n_lr: int | None = None,
) -> sp.csr_matrix:
    """The weights of :func:`thick_slice` along one axis: LR voxels x HR voxels, rows summing to 1.

    Parameters
    ----------
    n : int
        HR voxels along the axis.
    factor : float
        Slice spacing / HR spacing (>= 1).
    thickness : float, optional
        Slice thickness in HR voxels (> 0); default ``factor``.
    profile : {"gaussian", "box"}
        Slice profile.
    n_lr : int, optional
        LR voxels spread over all ``n`` HR voxels (centres at
        ``geometry.output_coordinates(n, n_lr)``: the engine's grids, ``n = n_lr * factor``
        rounded); default ``floor(n / factor)`` over the covered ``n_cov`` (:func:`thick_slice`).

    Returns
    -------
    (n_lr, n) scipy.sparse.csr_matrix

    Raises
    ------
    ValueError
        If ``profile`` or ``thickness`` is invalid; ``GeometryError`` for a bad factor.

    Examples
    --------
    >>> thick_slice_matrix(4, 2, profile="box").toarray().tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    width = float(factor if thickness is None else thickness)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"thickness must be finite and > 0 HR voxels, got {thickness}")
    kernel, radius = (gaussian_profile if profile == "gaussian" else box_profile)(width)
    n_lr, n_cov = downsampled_grid(n, factor) if n_lr is None else (int(n_lr), n)
    return kernel_matrix(output_coordinates(n_cov, n_lr), n, kernel, radius)


def kspace_truncate(
    x: ArrayOrVolume,
    *,
    factors: float | Sequence[float],
    axes: Sequence[int] | None = None,
    grid: str = "lr",
) -> ArrayOrVolume:
    """Keep the centre of k-space (the mDCSRN protocol) and return the magnitude.

    Per axis: FFT, keep the central ``1/f`` of the frequencies, inverse FFT; then ``|.|``.
    ``grid="lr"``: on the ``n_cov`` covered voxels, the ``n_lr`` lowest frequencies ``m`` get
    the phase ``exp(2 pi i m c_0 / n_cov)``, ``c_0 = output_coordinates(n_cov, n_lr)[0]``,
    so the length-``n_lr`` inverse FFT samples the band-limited signal at the LR centres
    (scaled by ``n_lr / n_cov``: constants stay constant). ``grid="hr"`` (the paper's):
    zero-filled k-space on the HR grid. Even counts give both Nyquist bins half weight (real
    input stays real). Borders are periodic. Factor 1 returns ``|x|``.

    Parameters
    ----------
    x : ndarray or Volume
        HR data, any shape.
    factors : float or sequence of float
        Downsampling factor (>= 1) per entry of ``axes``, or one for all.
    axes : sequence of int, optional
        Array axes (ndarray) or spatial axes (Volume); default all of them.
    grid : {"lr", "hr"}
        Output grid.

    Returns
    -------
    ndarray or Volume
        Non-negative; float32 for float32 input else float64.

    Raises
    ------
    ValueError
        If ``grid``, ``axes`` or ``factors`` is invalid (``GeometryError``: factor < 1).

    Examples
    --------
    >>> kspace_truncate(np.full((6, 6), 2.0), factors=2).round(12).tolist()
    [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    if grid not in KSPACE_GRIDS:
        raise ValueError(f"grid must be one of {KSPACE_GRIDS}, got {grid!r}")
    compute = functools.partial(_kspace, keep_grid=grid == "hr")
    return _dispatch(x, axes, factors, compute, keep_grid=grid == "hr")


def gaussian_decimate(
    x: ArrayOrVolume,
    *,
    factors: float | Sequence[float],
    axes: Sequence[int] | None = None,
    sigma: float | Sequence[float] | None = None,
) -> ArrayOrVolume:
    """Gaussian blur, then sample at the LR voxel centres.

    A sampled Gaussian blur (as SciPy ``gaussian_filter1d``, ``mode="reflect"``), read at
    the LR centres by linear interpolation (half-integer centres for even factors). Default
    ``sigma = f / 2.3548``: the common FWHM = ``f`` rule (profile as wide as an LR voxel).

    Parameters
    ----------
    x : ndarray or Volume
        HR data, any shape.
    factors : float or sequence of float
        Downsampling factor (>= 1) per entry of ``axes``, or one for all.
    axes : sequence of int, optional
        Array axes (ndarray) or spatial axes (Volume); default all of them.
    sigma : float or sequence of float, optional
        Blur standard deviation per axis in HR voxels (>= 0; 0 = no blur).

    Returns
    -------
    ndarray or Volume
        Float32 for float32 input else float64.

    Raises
    ------
    ValueError
        If ``sigma``, ``axes`` or ``factors`` is invalid.

    Examples
    --------
    >>> gaussian_decimate(np.ones((9, 7)), factors=(3, 2)).shape
    (3, 3)
    """
    ndim = len(x.spatial_axes) if isinstance(x, Volume) else np.ndim(x)
    count = len(_resolve_axes(axes, ndim))
    factor_list = per_axis(factors, count, "factors", check="none")
    sigmas = [f / FWHM_PER_SIGMA for f in factor_list]
    if sigma is not None:
        sigmas = per_axis(sigma, count, "sigma", check="none")
    if any(not (math.isfinite(s) and s >= 0) for s in sigmas):
        raise ValueError(f"sigma must be finite and >= 0 HR voxels, got {sigma}")

    def weights(n: int, f: float, index: int) -> sp.csr_matrix:
        n_lr, n_cov = downsampled_grid(n, f)
        tent = kernel_matrix(output_coordinates(n_cov, n_lr), n, _tent, 1.0)
        if sigmas[index] == 0:
            return tent
        kernel, radius = gaussian_profile(sigmas[index] * FWHM_PER_SIGMA)
        return (tent @ kernel_matrix(np.arange(n, dtype=np.float64), n, kernel, radius)).tocsr()

    return _dispatch(x, axes, factor_list, _weighted(weights, crop=False), keep_grid=False)


def bicubic_downsample(
    x: ArrayOrVolume,
    *,
    factors: float | Sequence[float],
    axes: Sequence[int] | None = None,
) -> ArrayOrVolume:
    """MATLAB ``imresize`` bicubic downsampling (antialiased) over the chosen axes.

    Each axis is cut to its ``n_cov`` covered voxels (the SR "modcrop") and resized to
    ``n_lr`` by :func:`volsr.resample.antialiased_cubic_matrix`: MATLAB
    ``imresize(x(1:n_cov, ...), [n_lr ...])``, i.e. ``imresize(x, 1/f)`` when ``f`` divides ``n``.

    Parameters
    ----------
    x : ndarray or Volume
        HR data, any shape.
    factors : float or sequence of float
        Downsampling factor (>= 1, integer or real) per entry of ``axes``, or one for all.
    axes : sequence of int, optional
        Array axes (ndarray) or spatial axes (Volume); default all of them.

    Returns
    -------
    ndarray or Volume
        Float32 for float32 input else float64.

    Raises
    ------
    ValueError
        If ``axes`` or ``factors`` is invalid.

    Examples
    --------
    >>> bicubic_downsample(np.full((4, 6), 3.0), factors=2).round(12).tolist()
    [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]
    """

    def weights(n: int, f: float, index: int) -> sp.csr_matrix:
        n_lr, n_cov = downsampled_grid(n, f)
        return antialiased_cubic_matrix(n_cov, n_lr)

    return _dispatch(x, axes, factors, _weighted(weights, crop=True), keep_grid=False)


def degrade(
    volume: Volume,
    *,
    factors: Sequence[float],
    method: str = "slice",
    thickness_mm: float | None = None,
    gap_mm: float = 0.0,
    profile: str = "gaussian",
    snr_db: float | None = None,
    seed: int = 0,
) -> Volume:
    """One low-resolution acquisition of ``volume``, lazily: what ``volsr degrade`` writes.

    Parameters
    ----------
    volume : Volume
        HR volume (spatial axes, optional band / channel axes).
    factors : sequence of float
        One factor per spatial axis (>= 1; 1: axis unchanged). For ``"slice"``: slice spacing
        / HR spacing, on exactly one axis.
    method : {"slice", "kspace", "gaussian", "bicubic"}
        :func:`thick_slice`, :func:`kspace_truncate`, :func:`gaussian_decimate` or
        :func:`bicubic_downsample`.
    thickness_mm, gap_mm : float
        Slice thickness and gap in mm (``"slice"`` only); the thickness defaults to the slice
        spacing minus the gap. Given both, thickness + gap must equal the slice spacing.
    profile : {"gaussian", "box"}
        Slice profile (``"slice"`` only).
    snr_db : float or None
        Rician noise at this SNR (:func:`sigma_for_snr` of the degraded volume) after the
        degradation; None: none.
    seed : int
        Seed of the noise field.

    Returns
    -------
    Volume
        The LR volume with its affine; float32 unless the input is float64. Nothing is
        computed until the caller computes it.

    Raises
    ------
    ValueError
        If the options contradict each other (for example two slice axes) or a factor is
        below 1.

    Examples
    --------
    >>> v = Volume(np.ones((4, 4, 8), np.float32), np.eye(4), ("i", "j", "k"))
    >>> degrade(v, factors=(1, 1, 2), profile="box").shape
    (4, 4, 4)
    """
    factors = per_axis(factors, len(volume.spatial_axes), "factors", check=">= 1")  # 1: axis unchanged
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    moved = [axis for axis, f in enumerate(factors) if f != 1]
    if method == "slice":
        if len(moved) != 1:
            said = ",".join(f"{f:g}" for f in factors)
            raise ValueError(f"method slice thickens exactly one axis; factors {said} "
                             f"have {len(moved)} values != 1 (use method gaussian or kspace for several axes)")
        axis = moved[0]
        spacing = float(volume.spacing[axis])
        spacing_mm = factors[axis] * spacing
        thickness = spacing_mm - gap_mm if thickness_mm is None else thickness_mm
        factor, width = slice_factor_from_mm(spacing, thickness_mm=thickness, gap_mm=gap_mm)
        if not math.isclose(factor, factors[axis], rel_tol=1e-6):
            raise ValueError(f"thickness {thickness} mm + gap {gap_mm} mm = {thickness + gap_mm} mm, but "
                             f"factor {factors[axis]:g} x spacing {spacing:.4g} mm = {spacing_mm:.4g} mm")
        result = thick_slice(volume, axis=axis, factor=factor, thickness=width, profile=profile)
    elif thickness_mm is not None or gap_mm:
        raise ValueError("thickness and gap apply to method slice only")
    else:
        lower = {"kspace": kspace_truncate, "gaussian": gaussian_decimate, "bicubic": bicubic_downsample}[method]
        result = lower(volume, factors=factors)
    dtype = np.float64 if volume.dtype == np.float64 else np.float32
    if snr_db is not None:
        task = dask.delayed(_with_noise)(result.data, snr_db, seed)
        result = result.replace(data=da.from_delayed(task, result.shape, dtype=result.dtype))
    return result.replace(data=result.data.astype(dtype))


def _with_noise(values: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    sigma = sigma_for_snr(values, snr_db)
    return rician_noise(values, NoiseParams(snr_db=snr_db, sigma=sigma, seed=seed)).astype(values.dtype, copy=False)


def _tent(d: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(d), 0.0)


def _weighted(weights: Weights, *, crop: bool) -> Callable[..., np.ndarray]:
    return functools.partial(_apply_weights, weights=weights, crop=crop)


def _apply_weights(
    array: np.ndarray,
    axes: tuple[int, ...],
    factors: tuple[float, ...],
    *,
    weights: Weights,
    crop: bool,
) -> np.ndarray:
    out = _as_float(array)
    for index, (axis, factor) in enumerate(zip(axes, factors, strict=True)):
        matrix = weights(out.shape[axis], factor, index)
        if crop:
            out = _leading(out, axis, matrix.shape[1])
        out = apply_matrix(out, matrix, axis)
    return out


def _dispatch(
    x: ArrayOrVolume,
    axes: Sequence[int] | None,
    factors: float | Sequence[float],
    compute: Callable[[np.ndarray, tuple[int, ...], tuple[float, ...]], np.ndarray],
    *,
    keep_grid: bool,
) -> ArrayOrVolume:
    """Run ``compute(array, array_axes, factors)`` on an ndarray, or lazily on a Volume."""
    if not isinstance(x, Volume):
        array = np.asarray(x)
        array_axes = _resolve_axes(axes, array.ndim)
        values = per_axis(factors, len(array_axes), "factors", check="none")
        for axis, factor in zip(array_axes, values, strict=True):
            downsampled_grid(array.shape[axis], factor)  # validate before any work
        return compute(array, array_axes, values)
    spatial = _resolve_axes(axes, len(x.spatial_axes))
    values = per_axis(factors, len(spatial), "factors", check="none")
    grids = [(n, n) for n in x.spatial_shape]
    for d, factor in zip(spatial, values, strict=True):
        grids[d] = downsampled_grid(x.spatial_shape[d], factor)
    shape, affine = list(x.shape), x.affine
    if not keep_grid:
        lr_shape = [g[0] for g in grids]
        affine = resampled_affine(x.affine, [g[1] for g in grids], lr_shape)
        for position, n in zip(x.spatial_axes, lr_shape, strict=True):
            shape[position] = n
    array_axes = tuple(x.spatial_axes[d] for d in spatial)
    task = dask.delayed(compute)(x.data, array_axes, values)
    data = da.from_delayed(task, tuple(shape), dtype=_float_dtype(x.dtype))
    return x.replace(data=data, affine=affine)


def _resolve_axes(axes: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    ok = [isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes]
    resolved = [int(a) % ndim for a, good in zip(axes, ok, strict=True) if good and -ndim <= a < ndim]
    if not resolved or len(resolved) != len(axes) or len(set(resolved)) != len(resolved):
        raise ValueError(f"axes must be distinct integers in [{-ndim}, {ndim}), got {axes}")
    return tuple(resolved)


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def _as_float(array: np.ndarray) -> np.ndarray:
    values = np.asarray(array)
    return values.astype(_float_dtype(values.dtype), copy=False)


def _leading(array: np.ndarray, axis: int, n: int) -> np.ndarray:
    return array[(slice(None),) * axis + (slice(0, n),)]


def _along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = vector.size
    return vector.reshape(shape)


def _kspace(
    array: np.ndarray, axes: tuple[int, ...], factors: tuple[float, ...], *, keep_grid: bool
) -> np.ndarray:
    # FFTs rather than resample weight matrices: the k-space protocol is defined by the DFT
    # (periodic borders, exact band limit) and costs O(n log n) per line.
    dtype = _float_dtype(np.asarray(array).dtype)
    out = np.asarray(array, dtype=np.complex64 if dtype == np.float32 else np.complex128)
    for axis, factor in zip(axes, factors, strict=True):
        out = (_kspace_hr_axis if keep_grid else _kspace_lr_axis)(out, axis, factor)
    return np.abs(out).astype(dtype)


def _kspace_lr_axis(data: np.ndarray, axis: int, factor: float) -> np.ndarray:
    n_lr, n_cov = downsampled_grid(data.shape[axis], factor)
    data = _leading(data, axis, n_cov)
    if n_lr == n_cov:
        return data
    frequencies = np.fft.fftfreq(n_cov, d=1.0 / n_cov)
    shift = output_coordinates(n_cov, n_lr)[0]
    phase = np.exp(2j * np.pi * frequencies * shift / n_cov).astype(data.dtype)
    spectrum = np.fft.fft(data, axis=axis) * _along(phase, axis, data.ndim)
    kept = np.fft.fftfreq(n_lr, d=1.0 / n_lr).astype(np.int64)
    lr_spectrum = np.take(spectrum, kept % n_cov, axis=axis)
    if n_lr % 2 == 0:
        # Frequencies +h and -h fall into the same LR bin; averaging them keeps a real
        # signal real (the band-limited interpolant with half-weight Nyquist terms).
        half = n_lr // 2
        pair = np.take(spectrum, [half], axis=axis) + np.take(spectrum, [n_cov - half], axis=axis)
        lr_spectrum[(slice(None),) * axis + (slice(half, half + 1),)] = 0.5 * pair
    return np.fft.ifft(lr_spectrum, axis=axis) * (n_lr / n_cov)


def _kspace_hr_axis(data: np.ndarray, axis: int, factor: float) -> np.ndarray:
    n = data.shape[axis]
    n_keep, _ = downsampled_grid(n, factor)
    if n_keep == n:
        return data
    magnitude = np.abs(np.fft.fftfreq(n, d=1.0 / n))
    weights = np.where(magnitude < n_keep / 2, 1.0, np.where(magnitude == n_keep / 2, 0.5, 0.0))
    weights = _along(weights.astype(data.real.dtype), axis, data.ndim)
    return np.fft.ifft(np.fft.fft(data, axis=axis) * weights, axis=axis)
