"""Memory budget (planned before a run, used to pick tile and batch sizes) and progress.

The budget counts what the engine allocates per worker thread beyond the interpreter,
PyTorch and the model's weights: the prefetched task input boxes, the task's accumulator
and weight sum, and per batch the tile inputs, outputs and the model's activations. The
activation footprint is measured, not guessed: one small forward pass with hooks records
the largest intermediate tensor, and two of them (a layer's input and output) are
counted per computed output voxel.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from volsr.engine.plan import Plan

__all__ = ["Budget", "parse_size", "format_size", "activation_bytes", "estimate", "progress_bar"]

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str | int) -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"4000000"`` (binary units).

    Parameters
    ----------
    text : str or int
        A number with an optional unit K, M, G or T (optionally followed by ``B``/``iB``).

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    ValueError
        If the text is not a positive size.

    Examples
    --------
    >>> parse_size("2G"), parse_size("512MiB"), parse_size(1000)
    (2147483648, 536870912, 1000)
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
        if value > 0:
            return value
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", str(text).upper())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"max_memory must be a positive size such as 512M or 2G, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_size(count: float) -> str:
    """Human-readable binary size.

    Parameters
    ----------
    count : float
        Bytes.

    Returns
    -------
    str

    Raises
    ------
    None

    Examples
    --------
    >>> format_size(3 * 2**20)
    '3.0 MiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def activation_bytes(net: nn.Module, plan: Plan, channels: int, device: torch.device) -> float:
    """Peak activation bytes per computed output voxel, measured on one small tile.

    Parameters
    ----------
    net : torch.nn.Module
        Eval mode, on ``device``.
    plan : Plan
        The volume's plan (a tile of at most 24 output voxels per axis is probed).
    channels : int
        Input channels.
    device : torch.device
        Where the model runs.

    Returns
    -------
    float
        ``2 * largest intermediate tensor (bytes) / computed output voxels``.

    Raises
    ------
    ValueError
        If the model's forward fails on the probe tile.

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import create_model
    >>> net = create_model("linear")
    >>> plan = make_plan(net.card, (4, 4), (8, 8), chunks=(8, 8), tile=(8, 8))
    >>> activation_bytes(net, plan, 1, torch.device("cpu"))
    8.0
    """
    region = tuple((0, min(24, n)) for n in plan.shape_out)
    tile = plan.tiles(region)[0]
    largest = [0]

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    handles = [module.register_forward_hook(record) for module in net.modules()]
    try:
        x = torch.zeros((1, channels, *(b - a for a, b in tile.source)), device=device)
        with torch.inference_mode():
            net(x, plan.positions(tile))
    finally:
        for handle in handles:
            handle.remove()
    return 2.0 * largest[0] / math.prod(b - a for a, b in tile.compute)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Planned memory per worker thread, in bytes.

    Parameters
    ----------
    inputs : int
        Task input boxes held at once (the one computing plus the prefetched ones).
    accumulator : int
        Task accumulator, weight sum and result.
    model : int
        Per batch: tile inputs, outputs and activations.
    weights : int
        Model parameters and buffers.
    """

    inputs: int
    accumulator: int
    model: int
    weights: int

    @property
    def total(self) -> int:
        """Sum of the parts."""
        return self.inputs + self.accumulator + self.model + self.weights

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"memory budget per worker ~{format_size(self.total)} (input boxes "
            f"{format_size(self.inputs)}, accumulator {format_size(self.accumulator)}, "
            f"model {format_size(self.model)}, weights {format_size(self.weights)})"
        )


def estimate(
    plan: Plan, *, channels: int, batch: int, per_voxel: float, weights: int, prefetch: int = 1
) -> Budget:
    """The :class:`Budget` of a plan (largest task and tile, sampled over the volume).

    Parameters
    ----------
    plan : Plan
        The volume's plan.
    channels : int
        Input channels (bands).
    batch : int
        Tiles per forward call.
    per_voxel : float
        Activation bytes per computed output voxel (:func:`activation_bytes`).
    weights : int
        Parameter and buffer bytes of the model.
    prefetch : int
        Task inputs read ahead.

    Returns
    -------
    Budget

    Raises
    ------
    None

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import get_card
    >>> plan = make_plan(get_card("linear"), (8, 8), (16, 16), chunks=(16, 16), tile=(16, 16))
    >>> estimate(plan, channels=1, batch=1, per_voxel=8.0, weights=0).accumulator
    3072
    """
    sample = sorted({0, plan.n_tasks // 2, plan.n_tasks - 1})
    box_voxels, task_voxels, tile_in, tile_out = 0, 0, 0, 0
    for index in sample:
        region = plan.task_region(index)
        tiles = plan.tiles(region)
        box_voxels = max(box_voxels, math.prod(b - a for a, b in plan.source_box(tiles)))
        task_voxels = max(task_voxels, math.prod(b - a for a, b in region))
        for tile in tiles[:64]:
            tile_in = max(tile_in, math.prod(b - a for a, b in tile.source))
            tile_out = max(tile_out, math.prod(b - a for a, b in tile.compute))
    per_tile = 4 * channels * (tile_in + tile_out) + per_voxel * tile_out
    return Budget(
        inputs=4 * channels * box_voxels * (prefetch + 1),
        accumulator=4 * (2 * channels + 1) * task_voxels,
        model=int(batch * per_tile),
        weights=int(weights),
    )


def progress_bar(total: int, *, initial: int = 0, quiet: bool = False) -> tqdm:
    """A tqdm bar on stderr counting output voxels (rate in voxels/s, ETA).

    Parameters
    ----------
    total : int
        Output voxels of the whole run.
    initial : int
        Voxels already done (a resumed run).
    quiet : bool
        Disable the bar.

    Returns
    -------
    tqdm.tqdm

    Raises
    ------
    None

    Examples
    --------
    >>> with progress_bar(10, quiet=True) as bar:
    ...     _ = bar.update(10)
    """
    return tqdm(
        total=total, initial=initial, unit="vox", unit_scale=True, file=sys.stderr,
        disable=quiet, desc="upsample", smoothing=0.1, dynamic_ncols=True,
    )  # fmt: skip
