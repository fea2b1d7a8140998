"""Rician noise for magnitude MR images, with an explicit SNR convention.

STYLE R10 pair: :func:`sample_noise_params` draws frozen :class:`NoiseParams` (including
the seed of the noise field) from an explicit ``np.random.Generator``; :func:`rician_noise`
applies them deterministically, so a logged params record reproduces the exact image.

SNR convention: ``SNR_dB = 20 log10(reference / sigma)``, where ``reference`` is the mean
intensity over the foreground (voxels above 10 % of the 99th percentile, see
:func:`foreground_mean`) of the noise-free image.

MONAI's ``RandRicianNoise`` is not used: it draws from its own legacy ``RandomState``,
samples the noise std (optionally relative to the image std) instead of taking an SNR, and
does not return what it drew, so a training pair could not be logged and reproduced.
"""

from __future__ import annotations

import dataclasses
import math

import dask
import dask.array as da
import numpy as np

from volsr.errors import InvalidDataError
from volsr.volume import Volume

__all__ = [
    "white_matter_level",
    "foreground_mean",
    "sigma_for_snr",
    "NoiseParams",
    "sample_noise_params",
    "add_rician_noise",
    "rician_noise",
    "with_white_matter_noise",
]


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def foreground_mean(x: np.ndarray) -> float:
    """Mean intensity over the foreground: the reference level of the SNR convention.

    Parameters
    ----------
    x : ndarray
        Noise-free image, any shape, finite values.

    Returns
    -------
    float
        Mean of the voxels above 10 % of the 99th percentile of ``x``.

    Raises
    ------
    InvalidDataError
        If ``x`` is empty, not finite, or has no voxel above the threshold.

    Examples
    --------
    >>> foreground_mean(np.array([0.0, 0.0, 4.0, 6.0]))
    5.0
    """
    values = np.asarray(x, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InvalidDataError(f"x must be non-empty and finite, got shape {values.shape}")
    mask = values > 0.1 * np.percentile(values, 99)
    if not mask.any():
        raise InvalidDataError("x has no foreground (no voxel above 10 % of its 99th percentile)")
    return float(values[mask].mean())


def sigma_for_snr(x: np.ndarray, snr_db: float) -> float:
    """Noise standard deviation that gives ``snr_db`` on image ``x``.

    Convention: ``SNR_dB = 20 log10(foreground_mean(x) / sigma)``.

    Parameters
    ----------
    x : ndarray
        Noise-free image, any shape.
    snr_db : float
        Wanted SNR in dB (finite).

    Returns
    -------
    float
        ``foreground_mean(x) * 10 ** (-snr_db / 20)`` (intensity units of ``x``).

    Raises
    ------
    ValueError
        If ``snr_db`` is not finite (``InvalidDataError``: no foreground).

    Examples
    --------
    >>> sigma_for_snr(np.full((4, 4), 100.0), 20.0)
    10.0
    """
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    return foreground_mean(x) * 10.0 ** (-snr_db / 20.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoiseParams:
    """One draw of Rician noise parameters; logging it reproduces the noise exactly.

    Parameters
    ----------
    snr_db : float
        SNR in dB (convention of :func:`sigma_for_snr`).
    sigma : float
        Standard deviation of each Gaussian component (intensity units, finite, >= 0).
    seed : int
        Seed (>= 0) of the ``np.random.Generator`` that draws the noise field.

    Raises
    ------
    ValueError
        If ``sigma`` or ``seed`` is out of range.

    Examples
    --------
    >>> NoiseParams(snr_db=20.0, sigma=5.0, seed=1).sigma
    5.0
    """

    snr_db: float
    sigma: float
    seed: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0, got {self.sigma}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


def sample_noise_params(
    rng: np.random.Generator, *, snr_db_range: tuple[float, float], reference_level: float
) -> NoiseParams:
    """Draw an SNR uniformly in ``snr_db_range`` and a seed for the noise field.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness (consumed; the global state is never used).
    snr_db_range : (2,) tuple of float
        ``(low, high)`` SNR in dB, ``low <= high``.
    reference_level : float
        :func:`foreground_mean` of the image (intensity units, > 0).

    Returns
    -------
    NoiseParams
        With ``sigma = reference_level * 10 ** (-snr_db / 20)``.

    Raises
    ------
    TypeError
        If ``rng`` is not a ``np.random.Generator`` (``ValueError`` for a bad range/level).

    Examples
    --------
    >>> p = sample_noise_params(np.random.default_rng(0), snr_db_range=(20, 20), reference_level=50)
    >>> p.snr_db, p.sigma
    (20.0, 5.0)
    """
    _check_rng(rng)
    low, high = (float(v) for v in snr_db_range)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"snr_db_range must be finite (low, high), low <= high, got {snr_db_range}")
    if not (math.isfinite(reference_level) and reference_level > 0):
        raise ValueError(f"reference_level must be finite and > 0, got {reference_level}")
    snr_db = float(rng.uniform(low, high))
    seed = int(rng.integers(0, 2**63 - 1))
    return NoiseParams(snr_db=snr_db, sigma=reference_level * 10.0 ** (-snr_db / 20.0), seed=seed)


def add_rician_noise(x: np.ndarray, *, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise: ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma^2)`` independent.

    The magnitude of a complex MR signal with Gaussian noise in both channels: mean
    ``sigma sqrt(pi / 2)`` on zero (Rayleigh), about ``sqrt(x^2 + sigma^2)`` for ``x >> sigma``.

    Parameters
    ----------
    x : ndarray
        Noise-free magnitude image, any shape.
    sigma : float
        Standard deviation of each component (intensity units, >= 0); 0 returns ``x``.
    rng : np.random.Generator
        Source of the noise field (consumed).

    Returns
    -------
    ndarray
        Shape of ``x``, float32 for float32 input else float64.

    Raises
    ------
    TypeError
        If ``rng`` is not a ``np.random.Generator`` (``ValueError`` for a bad ``sigma``).

    Examples
    --------
    >>> add_rician_noise(np.ones(3), sigma=0.0, rng=np.random.default_rng(0)).tolist()
    [1.0, 1.0, 1.0]
    """
    _check_rng(rng)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    values = np.asarray(x)
    values = values.astype(_float_dtype(values.dtype), copy=False)
    if sigma == 0:
        return values.copy()
    real = values + sigma * rng.standard_normal(values.shape, dtype=values.dtype)
    imaginary = sigma * rng.standard_normal(values.shape, dtype=values.dtype)
    return np.hypot(real, imaginary).astype(values.dtype, copy=False)


def rician_noise(x: np.ndarray | Volume, params: NoiseParams) -> np.ndarray | Volume:
    """Apply drawn :class:`NoiseParams`: the deterministic half of the R10 pair.

    Parameters
    ----------
    x : ndarray or Volume
        Noise-free magnitude data, any shape.
    params : NoiseParams
        Noise drawn from ``np.random.default_rng(params.seed)``: equal params, equal output.

    Returns
    -------
    ndarray or Volume
        Shape of ``x`` (a Volume lazily, with its affine and metadata).

    Raises
    ------
    TypeError
        If ``params`` is not a :class:`NoiseParams`.

    Examples
    --------
    >>> p = NoiseParams(snr_db=20.0, sigma=0.5, seed=7)
    >>> bool(np.array_equal(rician_noise(np.ones(4), p), rician_noise(np.ones(4), p)))
    True
    """
    if not isinstance(params, NoiseParams):
        raise TypeError(f"params must be NoiseParams, got {type(params).__name__}")

    def compute(array: np.ndarray) -> np.ndarray:
        return add_rician_noise(array, sigma=params.sigma, rng=np.random.default_rng(params.seed))

    if not isinstance(x, Volume):
        return compute(x)
    task = dask.delayed(compute)(x.data)
    return x.replace(data=da.from_delayed(task, x.shape, dtype=_float_dtype(x.dtype)))


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator, got {type(rng).__name__}")


def white_matter_level(x: np.ndarray) -> float:
    """A T1 brain's white-matter intensity, robustly: the 90th percentile of its brightest 40 %.

    The reference of "noise at x % of white matter" (clinical scanners: about 3.5 %).

    Parameters
    ----------
    x : ndarray
        Magnitude volume (any shape).

    Returns
    -------
    float
        Intensity units of ``x``.

    Raises
    ------
    ValueError
        If ``x`` is empty.

    Examples
    --------
    >>> white_matter_level(np.arange(100.0))
    95.1
    """
    data = np.asarray(x, np.float64)
    if data.size == 0:
        raise ValueError("white_matter_level needs a non-empty volume")
    upper = data[data > np.percentile(data, 60)]
    return round(float(np.percentile(upper if upper.size else data, 90)), 12)



def with_white_matter_noise(volume: Volume, share: float, *, seed: int = 0) -> Volume:
    """A noisier scan of the same brain: Rician noise of ``share`` x its white-matter level.

    The benchmarks' "noisy version" of a held-out brain (clinical scanners: ``share`` about
    0.035); the result is the new reference too, as a real noisy reference scan would be.

    Parameters
    ----------
    volume : Volume
        Magnitude volume, shape (X, Y, Z); computed here (it must fit in memory).
    share : float
        Noise sigma as a share of :func:`white_matter_level` (>= 0; 0 returns the data as
        float32).
    seed : int
        Seed of the noise field (equal seeds, equal noise).

    Returns
    -------
    Volume
        float32, the grid and metadata of ``volume``.

    Raises
    ------
    ValueError
        If ``share`` is negative or not finite (from :func:`add_rician_noise`).

    Examples
    --------
    >>> from volsr.volume import Volume
    >>> v = Volume(np.full((2, 2, 2), 10.0), np.eye(4), ("i", "j", "k"))
    >>> float(with_white_matter_noise(v, 0.0).numpy().max())
    10.0
    """
    data = np.asarray(volume.data.compute(), np.float32)
    sigma = share * white_matter_level(data)
    return volume.replace(data=add_rician_noise(data, sigma=sigma, rng=np.random.default_rng(seed)))
