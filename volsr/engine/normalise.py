"""Global intensity statistics computed once per volume by streaming over its blocks.

Per-tile statistics make seams; the engine computes one number per volume (the 99.9th
percentile for cards with ``input_scaling == "p99.9"``, the maximum for ``"max"``) and
applies it to every tile (:func:`input_scale`). A model whose card declares an output floor
is clamped below at it when the whole input has no negative voxel (:func:`output_floor`).
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from volsr.errors import InvalidDataError
from volsr.models.registry import ModelCard

__all__ = [
    "streamed_percentile", "input_scale", "output_floor", "data_range_of", "input_statistics",
    "DEFAULT_BINS",
]

#: Histogram bins per pass; two passes locate a percentile to (max - min) / DEFAULT_BINS**2.
DEFAULT_BINS = 4096


def streamed_percentile(data: da.Array, q: float, *, bins: int = DEFAULT_BINS,
                        data_range: tuple[float, float] | None = None) -> float:
    """The ``q``-th percentile of every voxel, in three streamed passes and bounded memory.

    Pass 1 finds the minimum and maximum; pass 2 builds a ``bins``-bin histogram over them
    and finds the bins holding the two order statistics that ``np.percentile``'s linear
    method interpolates; pass 3 histograms those bins again with ``bins`` sub-bins. Memory
    is one dask block plus ``O(bins)``.

    Parameters
    ----------
    data : dask.array.Array
        Any shape, real dtype.
    q : float
        Percentile in [0, 100].
    bins : int
        Bins per histogram pass (>= 2).
    data_range : (2,) tuple of float, optional
        The data's minimum and maximum when already known (:func:`data_range_of`): pass 1
        is skipped.

    Returns
    -------
    float
        Within ``(max - min) / bins**2`` of ``np.percentile(data, q)`` (the centre of the
        sub-bin holding each order statistic; about 6e-8 of the data range by default,
        plus float64 rounding at bin edges). Exact for constant data.

    Raises
    ------
    ValueError
        If ``q`` is outside [0, 100] or ``bins < 2``.
    InvalidDataError
        If the data holds NaN or Inf.

    Examples
    --------
    >>> values = np.random.default_rng(0).random(10_000)
    >>> estimate = streamed_percentile(da.from_array(values, chunks=1000), 99.9)
    >>> bool(abs(estimate - np.percentile(values, 99.9)) < 1e-6)
    True
    """
    if not 0.0 <= float(q) <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    if int(bins) < 2:
        raise ValueError(f"bins must be >= 2, got {bins!r}")
    # No reshape(-1): on a chunked n-d array it rechunks into whole slabs of the volume.
    # Every step below is per block, so memory is a few blocks whatever the volume's size.
    flat = data.astype(np.float64)
    low, high = data_range_of(flat) if data_range is None else data_range
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InvalidDataError("the volume holds NaN or Inf voxels; cannot compute a percentile")
    if low == high:
        return low
    count = flat.size
    rank = float(q) / 100.0 * (count - 1)
    ranks = (math.floor(rank), min(math.floor(rank) + 1, count - 1))
    coarse, edges = da.histogram(flat, bins=bins, range=(low, high))
    cumulative = np.cumsum(coarse.compute())
    located = [_locate(cumulative, k) for k in ranks]
    fine = [da.histogram(flat, bins=bins, range=(edges[b], edges[b + 1]))[0] for b, _ in located]
    fine_counts = da.compute(*fine)
    values = []
    for (b, within), counts in zip(located, fine_counts, strict=True):
        sub, _ = _locate(np.cumsum(counts), within)
        width = (edges[b + 1] - edges[b]) / bins
        values.append(float(edges[b] + (sub + 0.5) * width))
    return values[0] + (rank - ranks[0]) * (values[1] - values[0])


def input_scale(input_scaling: str, data: da.Array, *, peak: float = 1.0,
                data_range: tuple[float, float] | None = None) -> float:
    """The one number a card's ``input_scaling`` divides the whole input by (1.0 for none).

    Parameters
    ----------
    input_scaling : {"none", "p99.9", "max"}
        A :class:`volsr.models.ModelCard`'s ``input_scaling``.
    data : dask.array.Array
        The whole input, any shape (streamed over; memory: one block).
    peak : float
        The card's ``input_peak``: the value the statistic is mapped to.
    data_range : (2,) tuple of float, optional
        The data's minimum and maximum when already known (:func:`data_range_of`).

    Returns
    -------
    float
        1.0 for ``"none"``; else the 99.9th percentile (:func:`streamed_percentile`) or the
        maximum of ``data`` (replaced by 1.0 when it is not positive), over ``peak``.

    Raises
    ------
    ValueError
        If ``input_scaling`` is not one of the allowed values or ``peak`` is not positive.
    InvalidDataError
        If the data holds NaN or Inf.

    Examples
    --------
    >>> input_scale("max", da.from_array(np.array([0.5, 4.0, 2.0]), chunks=2))
    4.0
    >>> input_scale("max", da.from_array(np.array([0.5, 4.0, 2.0]), chunks=2), peak=0.8)
    5.0
    """
    if input_scaling == "none":
        return 1.0
    if input_scaling == "p99.9":
        value = streamed_percentile(data, 99.9, data_range=data_range)
    elif input_scaling == "max":
        value = float(data.max().compute()) if data_range is None else data_range[1]
        if not math.isfinite(value):
            raise InvalidDataError("the volume holds NaN or Inf voxels; cannot compute its maximum")
    else:
        raise ValueError(f"input_scaling must be one of 'none', 'p99.9', 'max'; got {input_scaling!r}")
    if not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"peak must be positive and finite, got {peak!r}")
    return (value if value > 0 else 1.0) / peak


def _locate(cumulative: np.ndarray, rank: int) -> tuple[int, int]:
    """Bin holding the ``rank``-th (0-based) smallest value, and the rank inside that bin."""
    index = int(np.searchsorted(cumulative, rank + 1, side="left"))
    index = min(index, cumulative.size - 1)
    before = int(cumulative[index - 1]) if index > 0 else 0
    return index, rank - before


def output_floor(card: ModelCard, minimum: float) -> float | None:
    """The value a model's outputs (in its scaled units) are clamped below at, or None.

    The card's own rule (:attr:`volsr.models.ModelCard.output_floor`), applied only when the
    whole input has no negative voxel (MRI magnitude images, radiance or reflectance cubes):
    a module without it runs exactly as written.

    Parameters
    ----------
    card : ModelCard
        The model's card.
    minimum : float
        The whole input's minimum (NaN for an input with non-finite voxels).

    Returns
    -------
    float or None
        ``card.output_floor``, or None (no floor declared, or an input with a negative or
        non-finite voxel).

    Examples
    --------
    >>> from volsr.models import get_card
    >>> output_floor(get_card("mdcsrn.t1"), 0.0), output_floor(get_card("mdcsrn.t1"), -1.0)
    (-0.02, None)
    >>> output_floor(get_card("cubic"), 0.0) is None
    True
    """
    return card.output_floor if card.output_floor is not None and minimum >= 0.0 else None


def data_range_of(data: da.Array) -> tuple[float, float]:
    """Minimum and maximum of every voxel, in one streamed pass (NaN if any voxel is NaN).

    Parameters
    ----------
    data : dask.array.Array
        Any shape, real dtype.

    Returns
    -------
    (float, float)

    Examples
    --------
    >>> data_range_of(da.from_array(np.array([3.0, -1.0, 2.0]), chunks=2))
    (-1.0, 3.0)
    """
    low, high = da.compute(data.min(), data.max())
    return float(low), float(high)


def input_statistics(card: ModelCard, data: da.Array) -> tuple[float, float | None]:
    """A card's input scale (:func:`input_scale`) and output floor (:func:`output_floor`).

    Both come from one min/max pass over the input (none at all for a baseline without
    input scaling), so an out-of-core input is not read once per statistic.

    Parameters
    ----------
    card : ModelCard
        The model's card (``kind``, ``input_scaling``, ``input_peak``).
    data : dask.array.Array
        The whole input, any shape.

    Returns
    -------
    scale : float
        What the input is divided by (and the output multiplied by).
    floor : float or None
        What the scaled outputs are clamped below at.

    Raises
    ------
    ValueError, InvalidDataError
        As :func:`input_scale`.

    Examples
    --------
    >>> from volsr.models import get_card
    >>> input_statistics(get_card("cubic"), da.from_array(np.array([0.0, 4.0]), chunks=1))
    (1.0, None)
    """
    if card.kind != "network" and card.input_scaling == "none":
        return 1.0, None
    data_range = data_range_of(data)
    scale = input_scale(card.input_scaling, data, peak=card.input_peak, data_range=data_range)
    return scale, output_floor(card, data_range[0])
