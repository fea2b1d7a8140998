"""Sizing a run: output chunks, the largest tile that fits the memory budget, the batch.

The engine's tile is chosen here, not by the caller: :func:`plan_run` starts from
:func:`start_tile` (:data:`MAX_TILE_EDGE` voxels per axis of the grid the model reads) and
:func:`auto_tile` shrinks it until :func:`volsr.engine.progress.estimate` of its task fits
the budget, so peak memory depends on the budget, not on the volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from volsr.engine import progress
from volsr.engine.plan import Plan, make_plan
from volsr.errors import VolsrError
from volsr.geometry import resampled_shape
from volsr.volume import Volume

__all__ = ["plan_run", "auto_tile", "start_tile", "DEFAULT_CHUNK", "MAX_TILE_EDGE"]

#: Default output chunk edge (voxels): 64^3 float32 = 1 MiB per chunk.
DEFAULT_CHUNK = 64
#: Largest tile edge tried, in voxels of the grid the model reads (:func:`start_tile`):
#: a 5-voxel halo costs 4 % per axis there (16 % at 64). The budget shrinks it from here.
MAX_TILE_EDGE = 256


def _spatial_chunks(chunks: Sequence[int] | None, volume: Volume, shape_out: tuple[int, ...]) -> tuple[int, ...]:
    dims = len(shape_out)
    if chunks is None:
        return tuple(min(DEFAULT_CHUNK, n) for n in shape_out)
    values = tuple(int(c) for c in chunks)
    if len(values) == volume.ndim and volume.ndim != dims:
        values = tuple(values[n] for n in volume.spatial_axes)
    if len(values) != dims or min(values) < 1:
        raise ValueError(
            f"chunks needs {dims} positive sizes (one per spatial axis) or {volume.ndim} (one per "
            f"array axis), got {tuple(chunks)}"
        )
    return tuple(min(c, n) for c, n in zip(values, shape_out, strict=True))


def auto_tile(
    fits: Callable[[tuple[int, ...]], bool], start: Sequence[int], chunks: Sequence[int]
) -> tuple[int, ...]:
    """The largest tile (output voxels) from ``start`` that ``fits``, shrinking the longest axis.

    The engine calls it with ``fits`` judging a candidate on a notional volume three tiles
    wide, so the choice depends on the budget, the model and the scale, not on the size of
    the volume being processed, except that a tile holding the whole volume is judged on
    the volume itself (a small volume then runs as one task, with no halo recomputed).

    Parameters
    ----------
    fits : callable ``(tile) -> bool``
        Whether a tile's planned memory fits the budget.
    start : (D,) sequence of int
        First candidate (output voxels per spatial axis), see :func:`start_tile`.
    chunks : (D,) sequence of int
        Output chunk shape: while the longest axis spans more than one chunk it loses one
        chunk per step (whole chunks, and a tile close to the budget: halving could waste up
        to half of it, and smaller tiles recompute more halo); below one chunk it is halved.

    Returns
    -------
    tuple of int

    Raises
    ------
    VolsrError
        If even an 8-voxel tile does not fit.

    Examples
    --------
    >>> auto_tile(lambda t: t[0] * t[1] <= 4096, (128, 512), (64, 64))
    (64, 64)
    >>> auto_tile(lambda t: t[0] * t[1] <= 40000, (128, 512), (64, 64))  # halving: (128, 256)
    (128, 256)
    >>> auto_tile(lambda t: t[0] * t[1] <= 50000, (128, 512), (64, 64))
    (128, 384)
    """
    tile = [int(t) for t in start]
    while not fits(tuple(tile)):
        longest = int(np.argmax(tile))
        if tile[longest] <= 8:
            raise VolsrError("max_memory is too small for even an 8-voxel tile; raise it")
        chunk = chunks[longest]
        if tile[longest] > chunk:
            tile[longest] = max(chunk, math.ceil(tile[longest] / chunk) * chunk - chunk)
        else:
            tile[longest] = max(8, tile[longest] // 2)
    return tuple(tile)


def start_tile(grid: str, factors: Sequence[float], chunks: Sequence[int]) -> tuple[int, ...]:
    """Largest tile tried: :data:`MAX_TILE_EDGE` voxels per axis of the grid the model reads.

    Parameters
    ----------
    grid : {"lr", "hr"}
        The model card's grid: ``lr`` tiles span ``MAX_TILE_EDGE`` input voxels (so
        ``MAX_TILE_EDGE * factor`` output voxels), ``hr`` tiles ``MAX_TILE_EDGE`` output voxels.
    factors : (D,) sequence of float
        Per-axis scale.
    chunks : (D,) sequence of int
        Output chunk shape; the tile is rounded down to whole chunks (at least one).

    Returns
    -------
    tuple of int
        Output voxels per spatial axis.

    Examples
    --------
    >>> start_tile("lr", (1, 1, 4), (64, 64, 64)), start_tile("hr", (1, 1, 4), (64, 64, 64))
    ((256, 256, 1024), (256, 256, 256))
    """
    edges = [MAX_TILE_EDGE * (f if grid == "lr" else 1.0) for f in factors]
    return tuple(max(c, int(e) // c * c) for e, c in zip(edges, chunks, strict=True))


def plan_run(
    net: nn.Module,
    volume: Volume,
    shape_out: tuple[int, ...],
    factors: tuple[float, ...],
    chunks: Sequence[int] | None,
    tile: Sequence[int] | None,
    blend: str,
    overlap: float,
    budget_bytes: int,
    where: torch.device,
) -> tuple[Plan, int, progress.Budget]:
    """The plan, batch size and memory budget of a run: the largest tile that fits the budget.

    Parameters
    ----------
    net : torch.nn.Module
        Eval mode, on ``where``, with a ``card``.
    volume : Volume
        The input.
    shape_out : tuple of int
        Spatial output shape.
    factors : tuple of float
        Per-axis scale.
    chunks, tile : sequence of int or None
        Output chunk shape (None: :data:`DEFAULT_CHUNK`) and tile (None: chosen here by
        :func:`auto_tile` so that :func:`volsr.engine.progress.estimate` fits the budget).
    blend : str
        ``"exact"`` or ``"gaussian"``.
    overlap : float
        Blend overlap.
    budget_bytes : int
        Memory budget per worker (bytes).
    where : torch.device
        Where the model runs (batches > 1 only on accelerators).

    Returns
    -------
    plan : Plan
    batch : int
    budget : Budget

    Raises
    ------
    VolsrError
        If an explicit ``tile`` does not fit the budget, or no tile does.

    Examples
    --------
    >>> from volsr.models import create_model
    >>> v = Volume(np.zeros((8, 8, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> plan_run(create_model("linear"), v, (8, 8, 16), (1.0, 1.0, 4.0), None, None, "exact", 0.25,
    ...          2**30, torch.device("cpu"))[0].tile
    (8, 8, 16)
    """
    spatial_chunks = _spatial_chunks(chunks, volume, shape_out)
    channels = int(np.prod([volume.shape[n] for n in range(volume.ndim) if n not in volume.spatial_axes]))
    weights = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])

    def plan_for(candidate: tuple[int, ...]) -> Plan:
        return make_plan(net.card, volume.spatial_shape, shape_out, chunks=spatial_chunks,
                         tile=candidate, blend=blend, overlap=overlap)  # fmt: skip

    def notional(candidate: tuple[int, ...]) -> Plan:
        # Three tiles per axis: the middle task has full halos on every side, and the
        # answer does not depend on how large the real volume is.
        shape_in = tuple(max(1, math.ceil(3 * t / f)) for t, f in zip(candidate, factors, strict=True))
        return make_plan(net.card, shape_in, resampled_shape(shape_in, factors), chunks=spatial_chunks,
                         tile=candidate, blend=blend, overlap=overlap)  # fmt: skip

    activation = progress.activation_bytes(net, notional(spatial_chunks), channels, where)

    def fits(plan: Plan, batch: int = 1) -> bool:
        budget = progress.estimate(plan, channels=channels, batch=batch, activation=activation, weights=weights)
        return budget.total <= budget_bytes

    if tile is None:
        start = start_tile(net.card.grid, factors, spatial_chunks)
        # The real plan too: its tasks can be larger than the notional ones (the lazy API's
        # slabs hold a whole slab's accumulator).
        # A tile holding the whole volume is judged on the volume itself: one task, no halo.
        def acceptable(t: tuple[int, ...]) -> bool:
            whole = all(a >= n for a, n in zip(t, shape_out, strict=True))
            return fits(plan_for(t)) and (whole or fits(notional(t)))

        try:
            chosen = auto_tile(acceptable, start, spatial_chunks)
        except VolsrError:
            smallest = tuple(min(8, c) for c in spatial_chunks)
            need = max(
                progress.estimate(p, channels=channels, batch=1, activation=activation, weights=weights).total
                for p in (plan_for(smallest), notional(smallest))
            )
            raise VolsrError(
                f"max_memory {progress.format_size(budget_bytes)} is too small for even an "
                f"8-voxel tile of {net.card.name!r} on {channels} channels (needs "
                f"~{progress.format_size(need)}); raise max_memory (--max-memory)"
            ) from None
    else:
        chosen = tuple(tile)
    plan = plan_for(chosen)
    batch = 1
    # Batching pays on accelerators; on a CPU one tile already keeps every core busy.
    while where.type != "cpu" and batch < 16 and fits(plan, batch * 2):
        batch *= 2
    budget = progress.estimate(plan, channels=channels, batch=batch, activation=activation, weights=weights)
    if budget.total > budget_bytes:
        raise VolsrError(
            f"tile {chosen} needs ~{progress.format_size(budget.total)} per worker, more than "
            f"max_memory {progress.format_size(budget_bytes)}; use a smaller tile or raise max_memory"
        )
    return plan, batch, budget


