"""Running tasks: read a task's input box once, batch its tiles through the model, blend.

One weighted-accumulate path serves every mode: a tile's output, cropped to the part of
its region that lies in the task, is added with its weight (1 for exact crops, a Gaussian
for blending) into a task-sized accumulator, and the task's result is the accumulator
divided by the summed weights. With weight 1 and tiles that partition the task that
division is by exactly 1.0, so exact mode is bit-for-bit the tiles' own outputs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import math
from collections.abc import Callable, Iterable, Sequence

import dask.array as da
import numpy as np
import torch
from torch import nn

from volsr.engine.nodata import NoData, mark_footprint, read_masked
from volsr.engine.plan import Box, Plan, Tile
from volsr.errors import InvalidDataError
from volsr.volume import Volume

__all__ = ["channel_first", "read_box", "run_task", "run_in_process", "output_arrays"]


def output_arrays(net: nn.Module) -> tuple[str, ...]:
    """The arrays a model's tasks write: ``"0"`` (the output), then its ``extra_outputs``.

    A model with ``extra_outputs`` (:class:`volsr.models.trust.WithUncertainty`) returns
    ``C`` channels per array, stacked: ``(B, C * len(arrays), ...)``.

    Parameters
    ----------
    net : torch.nn.Module
        The model as the engine runs it.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> from volsr.models import create_model
    >>> output_arrays(create_model("linear"))
    ('0',)
    """
    return ("0", *getattr(net, "extra_outputs", ()))


def channel_first(volume: Volume) -> da.Array:
    """The volume's data as ``(C, *spatial)`` (``C = 1`` without a band/channel axis).

    Parameters
    ----------
    volume : Volume
        Any volume.

    Returns
    -------
    dask.array.Array
        A lazy transposed view, ``volume.dtype``.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 5, 3)), np.eye(4), ("i", "j", "band"))
    >>> channel_first(v).shape
    (3, 4, 5)
    """
    spatial = list(volume.spatial_axes)
    other = [n for n in range(volume.ndim) if n not in spatial]
    if not other:
        return volume.data[None]
    return volume.data.transpose(other + spatial)


def read_box(source: da.Array, box: Box, *, divide_by: float = 1.0) -> np.ndarray:
    """Read the spatial ``box`` of a channel-first array as float32, optionally scaled.

    Parameters
    ----------
    source : (C, *spatial) dask.array.Array
        From :func:`channel_first`.
    box : tuple of (start, stop)
        Half-open range per spatial axis.
    divide_by : float
        Global intensity scale (the same for every task).

    Returns
    -------
    (C, *box_shape) float32 ndarray

    Raises
    ------
    FormatError
        If the underlying file cannot be read.

    Examples
    --------
    >>> read_box(da.ones((1, 4, 4)), ((1, 3), (0, 2)), divide_by=2.0).tolist()
    [[[0.5, 0.5], [0.5, 0.5]]]
    """
    index = (slice(None), *(slice(a, b) for a, b in box))
    # Synchronous: each read runs on the calling thread (prefetcher or Dask worker).
    block = np.asarray(source[index].compute(scheduler="synchronous"), dtype=np.float32)
    if divide_by != 1.0:
        block /= np.float32(divide_by)
    return np.ascontiguousarray(block)


def run_task(
    net: nn.Module,
    plan: Plan,
    region: Box,
    block: np.ndarray,
    block_box: Box,
    *,
    device: torch.device,
    batch: int = 1,
    multiply_by: float = 1.0,
    on_tile: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Compute the output box ``region`` of one task from its input ``block``.

    Parameters
    ----------
    net : torch.nn.Module
        In eval mode, on ``device``; ``forward(x, positions)`` as in
        :class:`volsr.models.interpolation.SeparableInterpolation`.
    plan : Plan
        The volume's plan.
    region : tuple of (start, stop)
        Output box of the task (spatial).
    block : (C, *block_shape) float32 ndarray
        Input voxels of ``block_box`` (already divided by any global intensity scale).
    block_box : tuple of (start, stop)
        Where ``block`` lies in the input grid; holds ``plan.source_box(plan.tiles(region))``.
    device : torch.device
        Where the model runs.
    batch : int
        Tiles per forward call (tiles of equal input shape and relative positions).
    multiply_by : float
        Global intensity scale multiplied back onto the outputs.
    on_tile : callable ``(voxels) -> None``, optional
        Called after each tile with the number of the task's output voxels it covered
        (progress inside a task; overlapping blended tiles may count a voxel twice).

    Returns
    -------
    (C * len(output_arrays(net)), *region_shape) float32 ndarray
        The output's channels, then those of each extra array.

    Raises
    ------
    ValueError
        If the model's output does not have the shape the contract requires.
    InvalidDataError
        If the result holds NaN or Inf.

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import create_model
    >>> net = create_model("linear")
    >>> plan = make_plan(net.card, (4, 1), (8, 1), chunks=(8, 1), tile=(3, 1))
    >>> block = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    >>> out = run_task(net, plan, ((0, 8), (0, 1)), block, ((0, 4), (0, 1)),
    ...                device=torch.device("cpu"))
    >>> out[0, :, 0].tolist()
    [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]
    """
    shape = tuple(b - a for a, b in region)
    accumulator = np.zeros((block.shape[0] * len(output_arrays(net)), *shape), dtype=np.float32)
    weight_sum = np.zeros(shape, dtype=np.float32)
    for tiles, outputs in _forward_batches(net, plan, plan.tiles(region), block, block_box, device, batch):
        for tile, output in zip(tiles, outputs, strict=True):
            _accumulate(accumulator, weight_sum, output, tile, region, plan.weights(tile))
            if on_tile is not None:
                on_tile(math.prod(max(0, min(b, rb) - max(a, ra)) for (a, b), (ra, rb) in zip(tile.region, region)))
    accumulator /= weight_sum
    if multiply_by != 1.0:
        accumulator *= np.float32(multiply_by)
    if not np.isfinite(accumulator).all():
        # Never written silently: NaN/Inf here come from the model or a float32 overflow
        # (inputs are checked for NaN/Inf before the run).
        raise InvalidDataError(
            f"model {net.card.name!r} produced NaN or Inf in the output box {region} (input values "
            "beyond float32 range, or a model that diverges); nothing of that task was written"
        )
    return accumulator


def _forward_batches(
    net: nn.Module,
    plan: Plan,
    tiles: Sequence[Tile],
    block: np.ndarray,
    block_box: Box,
    device: torch.device,
    batch: int,
) -> Iterable[tuple[list[Tile], np.ndarray]]:
    groups: dict[tuple, list[tuple[Tile, tuple[np.ndarray, ...]]]] = {}
    for tile in tiles:
        positions = plan.positions(tile)
        key = (tuple(b - a for a, b in tile.source), tuple(p.tobytes() for p in positions))
        groups.setdefault(key, []).append((tile, positions))
    for members in groups.values():
        for first in range(0, len(members), batch):
            part = members[first : first + batch]
            x = np.stack([_cut(block, block_box, tile.source) for tile, _ in part])
            with torch.inference_mode():
                y = net(torch.from_numpy(x).to(device), part[0][1])
            channels = block.shape[0] * len(output_arrays(net))
            expected = (len(part), channels, *(b - a for a, b in part[0][0].compute))
            if tuple(y.shape) != expected:
                raise ValueError(
                    f"model {net.card.name!r} returned shape {tuple(y.shape)} for a tile of "
                    f"input shape {tuple(x.shape)}; the forward contract requires {expected}"
                )
            yield [tile for tile, _ in part], y.to("cpu", torch.float32).numpy()


def _cut(block: np.ndarray, block_box: Box, box: Box) -> np.ndarray:
    index = tuple(slice(a - o, b - o) for (a, b), (o, _) in zip(box, block_box, strict=True))
    return block[(slice(None), *index)]


def _accumulate(
    accumulator: np.ndarray,
    weight_sum: np.ndarray,
    output: np.ndarray,
    tile: Tile,
    region: Box,
    weights: np.ndarray | float,
) -> None:
    """Add ``weights * output`` over ``tile.region`` ∩ ``region`` (crop: weight 1, else 0)."""
    inside = [(max(a, ra), min(b, rb)) for (a, b), (ra, rb) in zip(tile.region, region, strict=True)]
    if any(a >= b for a, b in inside):
        return
    into = tuple(slice(a - ra, b - ra) for (a, b), (ra, _) in zip(inside, region, strict=True))
    take = tuple(slice(a - ca, b - ca) for (a, b), (ca, _) in zip(inside, tile.compute, strict=True))
    if isinstance(weights, np.ndarray):
        weights = weights[tuple(slice(a - ta, b - ta) for (a, b), (ta, _) in zip(inside, tile.region, strict=True))]
    accumulator[(slice(None), *into)] += weights * output[(slice(None), *take)]
    weight_sum[into] += weights


def run_in_process(
    net: nn.Module,
    plan: Plan,
    source: da.Array,
    tasks: Iterable[int],
    write: Callable[[int, np.ndarray], None],
    *,
    device: torch.device,
    batch: int = 1,
    input_scale: float = 1.0,
    prefetch: int = 1,
    nodata: NoData | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> None:
    """Run tasks in this process; a reader thread fetches the next inputs during compute.

    Parameters
    ----------
    net : torch.nn.Module
        Eval mode, on ``device``.
    plan : Plan
        The volume's plan.
    source : (C, *spatial) dask.array.Array
        From :func:`channel_first`.
    tasks : iterable of int
        Task indices to run, in order.
    write : callable ``(index, result) -> None``
        Stores a task's ``(C, *region_shape)`` float32 result (and records completion).
    device : torch.device
        Where the model runs.
    batch : int
        Tiles per forward call.
    input_scale : float
        Global intensity scale (inputs divided, outputs multiplied).
    prefetch : int
        Task inputs read ahead (each costs one task input box of memory).
    nodata : NoData, optional
        The input's no-data value (:func:`volsr.engine.nodata.nodata_for`): no-data pixels
        are filled before the model and their output footprint is set to the value.
    on_tile : callable ``(index, voxels) -> None``, optional
        Progress inside task ``index`` (``voxels`` as for :func:`run_task`).

    Returns
    -------
    None

    Raises
    ------
    OSError
        From ``write`` or a read (a full disk, an unwritable store).

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import create_model
    >>> net, results = create_model("nearest"), {}
    >>> plan = make_plan(net.card, (2, 2), (4, 4), chunks=(2, 4), tile=(2, 4))
    >>> run_in_process(net, plan, da.ones((1, 2, 2)), range(plan.n_tasks),
    ...                results.__setitem__, device=torch.device("cpu"))
    >>> sorted(results), results[1].shape
    ([0, 1], (1, 2, 4))
    """

    def read(index: int) -> tuple[Box, np.ndarray, np.ndarray | None]:
        box = plan.source_box(plan.tiles(plan.task_region(index)))
        if nodata is None:
            return box, read_box(source, box, divide_by=input_scale), None
        return box, *read_masked(source, box, nodata, divide_by=input_scale)

    pending: collections.deque = collections.deque()
    order = iter(tasks)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="volsr-read") as pool:
        for index in order:
            pending.append((index, pool.submit(read, index)))
            if len(pending) > prefetch:
                break
        while pending:
            index, future = pending.popleft()
            box, block, invalid = future.result()
            following = next(order, None)
            if following is not None:
                pending.append((following, pool.submit(read, following)))
            region = plan.task_region(index)
            result = run_task(
                net, plan, region, block, box, device=device, batch=batch, multiply_by=input_scale,
                on_tile=None if on_tile is None else functools.partial(on_tile, index),
            )
            del block
            if invalid is not None:
                mark_footprint(result, invalid, box, region, plan, nodata.value)
            write(index, result)
