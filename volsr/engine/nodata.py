"""No-data pixels (ENVI ``data ignore value``, or any reader's ``meta["nodata"]``) through the engine.

Which pixels. A reader that knows a no-data value puts it in ``Volume.meta["nodata"]``
(a float; NaN allowed). A *pixel* (one spatial position) is no-data when **any** of its
bands/channels equals the value. GDAL's ENVI driver gives the value to every band and
masks each band on its own; here a spectrum is one sample for the networks (they mix
bands), so one invalid band makes the whole spectrum invalid, as remote-sensing tools that
mask per pixel do. Equality is tested in the stored dtype (a float32 cube matches the
float32 rounding of the header's decimal value; an integer cube never matches a value it
cannot hold).

Before the model. No-data pixels are not fed to the network as data: each is replaced by
the mean of its already known neighbours (the 3**D box, spatial axes), ring after ring
outwards from the valid pixels, for :attr:`NoData.radius` rings (the reach of the model's
support, :func:`fill_radius`); pixels farther from any valid one get 0. Near a no-data
region the model so sees a smooth continuation of the valid data -- what it sees at the
volume's edge -- instead of an artificial step (the value itself, or 0) that interpolation
kernels and networks would ring into valid outputs. Each filled value depends only on the
input within ``radius`` pixels, so every task reads its input box widened by ``radius``
(clipped to the volume) and fills it the same way whatever the tiling: tiled output equals
a whole-volume pass.

After the model. An output voxel whose *nearest input pixel* is no-data (per axis
``floor(x + 1/2)`` of its input coordinate :func:`volsr.geometry.output_coordinates`,
ties to the higher index) gets the value exactly, in every band. Valid output voxels next
to a no-data region keep their computed values (their support saw the fill).
"""

from __future__ import annotations

import dataclasses
import math

import dask.array as da
import numpy as np

from volsr.engine.plan import Box, Plan
from volsr.geometry import output_coordinates
from volsr.models.registry import ModelCard
from volsr.volume import Volume

__all__ = [
    "NODATA_KEY", "NoData", "nodata_value", "nodata_for", "fill_radius", "nodata_mask",
    "fill_nodata", "widen", "prepare_block", "read_masked", "mark_footprint", "valid_voxels",
    "statistics_voxels",
]  # fmt: skip

#: The ``Volume.meta`` key a reader sets to declare its no-data value (a float).
NODATA_KEY = "nodata"


@dataclasses.dataclass(frozen=True)
class NoData:
    """How the engine treats a volume's no-data pixels.

    Parameters
    ----------
    value : float
        The no-data value (same units as the input; NaN allowed).
    radius : int
        Rings of neighbour-mean fill around valid pixels (input pixels, >= 0); also the
        margin every task reads beyond its input box.
    """

    value: float
    radius: int


def nodata_value(volume: Volume) -> float | None:
    """The no-data value a volume declares in ``meta["nodata"]``, or None.

    Parameters
    ----------
    volume : Volume
        Any volume.

    Returns
    -------
    float or None

    Raises
    ------
    ValueError
        If ``meta["nodata"]`` is not a number.

    Examples
    --------
    >>> nodata_value(Volume(np.zeros((2, 2)), np.eye(4), ("i", "j"), meta={"nodata": -9999}))
    -9999.0
    """
    value = volume.meta.get(NODATA_KEY)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"meta[{NODATA_KEY!r}] must be a number, got {value!r}") from None


def fill_radius(plan: Plan) -> int:
    """Input pixels an output voxel's support reaches from its nearest input pixel.

    Parameters
    ----------
    plan : Plan
        The volume's plan (``in_halo``, ``out_halo`` and the grid sizes are used).

    Returns
    -------
    int
        ``in_halo + ceil(out_halo * max(n_in / n_out)) + 1``.

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import get_card
    >>> fill_radius(make_plan(get_card("linear"), (4, 4), (8, 8), chunks=(8, 8), tile=(8, 8)))
    2
    """
    ratio = max(n / m for n, m in zip(plan.shape_in, plan.shape_out, strict=True))
    return plan.in_halo + math.ceil(plan.out_halo * ratio) + 1


def nodata_for(volume: Volume, plan: Plan) -> NoData | None:
    """The engine's no-data handling for ``volume`` under ``plan``, or None when it has none.

    Parameters
    ----------
    volume : Volume
        The input (``meta["nodata"]`` is read).
    plan : Plan
        Its plan (for :func:`fill_radius`).

    Returns
    -------
    NoData or None

    Raises
    ------
    ValueError
        If ``meta["nodata"]`` is not a number.

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import get_card
    >>> plan = make_plan(get_card("linear"), (4, 4), (8, 8), chunks=(8, 8), tile=(8, 8))
    >>> nodata_for(Volume(np.zeros((4, 4)), np.eye(4), ("i", "j"), meta={"nodata": 0}), plan)
    NoData(value=0.0, radius=2)
    """
    value = nodata_value(volume)
    return None if value is None else NoData(value=value, radius=fill_radius(plan))


def nodata_mask(raw: np.ndarray, value: float) -> np.ndarray:
    """Which pixels of a channel-first block are no-data (any channel equals ``value``).

    Parameters
    ----------
    raw : (C, *spatial) ndarray
        Voxels in their stored dtype (before any conversion or scaling).
    value : float
        The no-data value; NaN matches NaN.

    Returns
    -------
    (*spatial) bool ndarray

    Examples
    --------
    >>> nodata_mask(np.array([[[1, 0, 2]], [[2, 0, 0]]], np.uint16), 0).tolist()
    [[False, True, True]]
    """
    if raw.dtype.kind not in "fc":
        hit = np.zeros(raw.shape, bool) if math.isnan(value) else raw == value
    elif math.isnan(value):
        hit = np.isnan(raw)
    else:
        with np.errstate(over="ignore"):
            stored = np.asarray(value).astype(raw.dtype)
        hit = raw == stored if np.isfinite(stored) or math.isinf(value) else np.zeros(raw.shape, bool)
    return hit.any(axis=0)


def _box_sum(values: np.ndarray, ndim: int) -> np.ndarray:
    """Sum over the 3**ndim box of the last ``ndim`` axes, zero outside, in a fixed order."""
    for axis in range(values.ndim - ndim, values.ndim):
        pad = [(0, 0)] * values.ndim
        pad[axis] = (1, 1)
        padded = np.pad(values, pad)
        cut = [slice(None)] * values.ndim
        parts = []
        for start in range(3):
            cut[axis] = slice(start, start + values.shape[axis])
            parts.append(padded[tuple(cut)])
        values = (parts[0] + parts[1]) + parts[2]
    return values


def fill_nodata(block: np.ndarray, invalid: np.ndarray, radius: int) -> np.ndarray:
    """Replace no-data pixels by the mean of their known neighbours, ring by ring.

    Parameters
    ----------
    block : (C, *spatial) float32 ndarray
        Voxels (any units).
    invalid : (*spatial) bool ndarray
        No-data pixels (:func:`nodata_mask`).
    radius : int
        Rings filled; pixels farther (Chebyshev distance) from every valid pixel get 0.

    Returns
    -------
    (C, *spatial) float32 ndarray
        A new array; valid pixels unchanged. Each filled value depends only on the pixels
        within ``radius`` of it (and on where the block ends, which is the volume's edge
        when the block holds that margin).

    Examples
    --------
    >>> block = np.array([[[1.0, 3.0, -9.0, -9.0]]], np.float32)
    >>> fill_nodata(block, block[0] == -9, radius=1).tolist()
    [[[1.0, 3.0, 3.0, 0.0]]]
    """
    ndim = invalid.ndim
    values = np.where(invalid, np.float32(0), block).astype(np.float32)
    known = ~invalid
    for _ in range(radius):
        counts = _box_sum(known.astype(np.float32), ndim)
        frontier = ~known & (counts > 0)
        if not frontier.any():
            break
        sums = _box_sum(values, ndim)
        values[:, frontier] = sums[:, frontier] / counts[frontier]
        known = known | frontier
    return values


def widen(box: Box, radius: int, shape: tuple[int, ...]) -> Box:
    """``box`` grown by ``radius`` on every side, clipped to ``[0, shape)``.

    Parameters
    ----------
    box : tuple of (start, stop)
        Half-open range per spatial axis.
    radius : int
        Pixels added per side.
    shape : tuple of int
        Spatial grid size.

    Returns
    -------
    tuple of (start, stop)

    Examples
    --------
    >>> widen(((2, 5), (0, 3)), 3, (6, 9))
    ((0, 6), (0, 6))
    """
    return tuple((max(0, a - radius), min(n, b + radius)) for (a, b), n in zip(box, shape, strict=True))


def prepare_block(
    raw: np.ndarray, raw_box: Box, box: Box, nodata: NoData, *, divide_by: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Model input and no-data mask of ``box`` from its widened read ``raw``.

    Parameters
    ----------
    raw : (C, *raw_shape) ndarray
        Stored voxels of ``raw_box`` (``widen(box, nodata.radius, ...)``).
    raw_box, box : tuple of (start, stop)
        Where ``raw`` lies, and the box wanted (inside ``raw_box``).
    nodata : NoData
        The value and fill radius.
    divide_by : float
        Global intensity scale the model input is divided by.

    Returns
    -------
    block : (C, *box_shape) float32 ndarray
        Divided by ``divide_by``, no-data pixels filled (:func:`fill_nodata`).
    invalid : (*box_shape) bool ndarray
        The no-data pixels of ``box``.

    Examples
    --------
    >>> raw = np.array([[[5, 7, 0, 0]]], np.uint16)
    >>> block, invalid = prepare_block(raw, ((0, 1), (0, 4)), ((0, 1), (1, 3)), NoData(0.0, 1))
    >>> block.tolist(), invalid.tolist()
    ([[[7.0, 7.0]]], [[False, True]])
    """
    invalid = nodata_mask(raw, nodata.value)
    inner = tuple(slice(a - o, b - o) for (a, b), (o, _) in zip(box, raw_box, strict=True))
    block = np.asarray(raw, dtype=np.float32)
    if invalid[inner].any():
        block = fill_nodata(block, invalid, nodata.radius)
    block = block[(slice(None), *inner)]
    if divide_by != 1.0:
        block = block / np.float32(divide_by)
    return np.ascontiguousarray(block, dtype=np.float32), np.ascontiguousarray(invalid[inner])


def read_masked(
    source: da.Array, box: Box, nodata: NoData, *, divide_by: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``box`` (plus the fill margin) of a channel-first array: filled input and mask.

    Parameters
    ----------
    source : (C, *spatial) dask.array.Array
        From :func:`volsr.engine.execute.channel_first`.
    box : tuple of (start, stop)
        Half-open input range per spatial axis.
    nodata : NoData
        The value and fill radius.
    divide_by : float
        Global intensity scale.

    Returns
    -------
    block : (C, *box_shape) float32 ndarray
    invalid : (*box_shape) bool ndarray

    Raises
    ------
    FormatError
        If the underlying file cannot be read.

    Examples
    --------
    >>> source = da.from_array(np.array([[[1.0, -1.0, 3.0]]]))
    >>> block, invalid = read_masked(source, ((0, 1), (1, 2)), NoData(-1.0, 1))
    >>> block.tolist(), invalid.tolist()
    ([[[2.0]]], [[True]])
    """
    raw_box = widen(box, nodata.radius, tuple(int(n) for n in source.shape[1:]))
    index = (slice(None), *(slice(a, b) for a, b in raw_box))
    raw = np.asarray(source[index].compute(scheduler="synchronous"))
    return prepare_block(raw, raw_box, box, nodata, divide_by=divide_by)


def mark_footprint(
    result: np.ndarray, invalid: np.ndarray, block_box: Box, region: Box, plan: Plan, value: float
) -> None:
    """Set the output voxels of ``region`` whose nearest input pixel is no-data to ``value``.

    Parameters
    ----------
    result : (C, *region_shape) float32 ndarray
        A task's output (changed in place).
    invalid : (*block_shape) bool ndarray
        No-data pixels of the task's input box ``block_box``.
    block_box, region : tuple of (start, stop)
        The task's input box and output box.
    plan : Plan
        The volume's plan (grid sizes).
    value : float
        The no-data value (output units: the same as the input's).

    Returns
    -------
    None

    Raises
    ------
    ValueError
        If a nearest input pixel lies outside ``block_box`` (a box not from this plan).

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import get_card
    >>> plan = make_plan(get_card("nearest"), (2,), (4,), chunks=(4,), tile=(4,))
    >>> result = np.ones((1, 4), np.float32)
    >>> mark_footprint(result, np.array([False, True]), ((0, 2),), ((0, 4),), plan, -1.0)
    >>> result.tolist()
    [[1.0, 1.0, -1.0, -1.0]]
    """
    index = []
    for (a, b), (start, stop), n_in, n_out in zip(region, block_box, plan.shape_in, plan.shape_out, strict=True):
        nearest = np.clip(np.floor(output_coordinates(n_in, n_out)[a:b] + 0.5), 0, n_in - 1).astype(np.intp)
        if nearest.min() < start or nearest.max() >= stop:
            raise ValueError(f"output box {region} needs input pixels outside the block {block_box}")
        index.append(nearest - start)
    footprint = invalid[np.ix_(*index)]
    if footprint.any():
        result[:, footprint] = np.float32(value)


def valid_voxels(volume: Volume) -> da.Array:
    """The voxels of the valid pixels, for global statistics (the input scale, the floor).

    Parameters
    ----------
    volume : Volume
        Any volume; ``meta["nodata"]`` is read.

    Returns
    -------
    dask.array.Array
        ``volume.data`` itself when it declares no value or has no valid pixel; else a
        1-D array of the valid pixels' voxels (its chunk sizes computed: one streamed pass).

    Raises
    ------
    ValueError
        If ``meta["nodata"]`` is not a number.

    Examples
    --------
    >>> v = Volume(np.array([[1.0, 9.0], [2.0, 9.0]]), np.eye(4), ("i", "j"), meta={"nodata": 9})
    >>> valid_voxels(v).compute().tolist()
    [1.0, 2.0]
    """
    value = nodata_value(volume)
    if value is None:
        return volume.data
    from volsr.engine.execute import channel_first

    source = channel_first(volume).rechunk({0: -1})  # whole spectra: the mask is per pixel
    invalid = source.map_blocks(nodata_mask, value, drop_axis=0, dtype=bool)
    keep = da.broadcast_to(~invalid[None], source.shape, chunks=source.chunks)
    values = source[keep].compute_chunk_sizes()
    return volume.data if values.size == 0 else values


def statistics_voxels(card: ModelCard, volume: Volume) -> da.Array:
    """What :func:`volsr.engine.normalise.input_statistics` should stream over for ``card``.

    Parameters
    ----------
    card : ModelCard
        The model's card (``kind``, ``input_scaling``).
    volume : Volume
        The input.

    Returns
    -------
    dask.array.Array
        :func:`valid_voxels` when the volume declares a no-data value and the card uses
        global statistics (a network, or a baseline with input scaling); else
        ``volume.data`` untouched (nothing is read).

    Raises
    ------
    ValueError
        If ``meta["nodata"]`` is not a number.

    Examples
    --------
    >>> from volsr.models import get_card
    >>> v = Volume(np.array([[1.0, 9.0]]), np.eye(4), ("i", "j"), meta={"nodata": 9})
    >>> statistics_voxels(get_card("cubic"), v) is v.data
    True
    """
    if card.kind != "network" and card.input_scaling == "none":
        return volume.data
    return valid_voxels(volume)
