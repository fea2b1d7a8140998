"""Intensity normalisation with statistics computed once per volume (never per patch)."""

from __future__ import annotations

import numpy as np

__all__ = ["percentile_normalise"]


def percentile_normalise(
    array: np.ndarray, *, percentile: float = 99.9, clip: bool = True
) -> tuple[np.ndarray, float]:
    """Divide by a high percentile of the whole volume, optionally clipping to [0, 1].

    This is the MRI evaluation convention: ``x / P99.9(x)`` clipped to ``[0, 1]``.

    Parameters
    ----------
    array : ndarray, any shape
        Intensities (any units).
    percentile : float
        Percentile in (0, 100] taken over all voxels.
    clip : bool
        Clip the result to ``[0, 1]``.

    Returns
    -------
    normalised : ndarray, float32, shape of ``array``
    reference : float
        The percentile value used (same units as ``array``).

    Raises
    ------
    ValueError
        If ``percentile`` is outside (0, 100] or the percentile value is not positive.

    Examples
    --------
    >>> out, ref = percentile_normalise(np.arange(1001.0), percentile=50)
    >>> ref, float(out.max())
    (500.0, 1.0)
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    values = np.asarray(array, dtype=np.float64)
    reference = float(np.percentile(values, percentile))
    if not reference > 0:
        raise ValueError(f"the {percentile}th percentile is {reference}: cannot normalise by it")
    scaled = values / reference
    if clip:
        scaled = np.clip(scaled, 0.0, 1.0)
    return scaled.astype(np.float32), reference
