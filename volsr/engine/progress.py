"""Memory budget (planned before a run, used to pick tile and batch sizes) and progress.

The budget counts what the engine allocates per worker thread beyond the interpreter,
PyTorch and the model's weights: the prefetched task input boxes, the task's accumulator
and weight sum, and per batch the tile inputs, outputs and the model's activations. The
activation footprint is measured, not guessed: one small forward pass runs under a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that adds up the bytes of every
tensor storage the model's operators create while it is alive (concatenations, skip
connections and dense-block features included), on two probe tiles whose peaks give the
model's cost per source voxel and per output voxel (:class:`ActivationCost`). (Counting
module outputs alone, two of the largest, undercounted a densely connected network
3.6-fold: its concatenated features are not module outputs.) Operators
also use buffers of their own that no tensor shows (oneDNN's reordered copies in a CPU
convolution): :data:`WORKSPACE_FACTOR` covers them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import sys
import weakref
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from tqdm import tqdm

from volsr.engine.plan import Plan
from volsr.errors import VolsrError

__all__ = [
    "check_output_room",
    "WORKSPACE_FACTOR", "PROBE_EDGES", "PROBE_CHANNELS", "MIN_DEFAULT_BUDGET", "DEFAULT_MEMORY_SHARE", "ActivationCost",
    "Budget", "parse_size", "format_size", "default_budget", "activation_bytes", "estimate",
    "progress_bar",
]  # fmt: skip

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

#: Peak process memory during a forward pass / peak bytes of live tensors, measured on this
#: CPU (RSS sampled every 2 ms around one tile): 1.52 for the mDCSRN of ``mdcsrn.t1`` (64^3
#: tile) and 1.52 for a 5-layer 32-channel CNN (``bench/engine.py``), with some margin.
WORKSPACE_FACTOR = 1.6


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


#: Floor of the default budget per worker (bytes), and the whole default for a remote
#: scheduler (whose workers' memory this machine cannot see).
MIN_DEFAULT_BUDGET = 2**30
#: Share of the memory available when a run starts that the default budget takes (the
#: rest is left to the interpreter, PyTorch, the allocator's slack and other processes).
DEFAULT_MEMORY_SHARE = 0.5


def default_budget(*, workers: int | None = None, local: bool = True) -> int:
    """The memory budget per worker when none is given: a share of what this machine has free.

    A fixed default (1 GiB, before) refused a 189-band cube at x4 (the smallest tile of
    the shipped network, with its 26-pixel halo, needs more) and tiled a 100 x 100 cube
    into 28 tasks that recomputed the halo 11-fold; like Dask's ``memory_limit="auto"``,
    the default now follows the machine.

    Parameters
    ----------
    workers : int, optional
        Local worker processes sharing the machine (default one).
    local : bool
        False for a remote scheduler: :data:`MIN_DEFAULT_BUDGET`.

    Returns
    -------
    int
        ``max(MIN_DEFAULT_BUDGET, DEFAULT_MEMORY_SHARE * available / workers)`` bytes,
        ``available`` being ``psutil.virtual_memory().available`` now.

    Raises
    ------
    ValueError
        If ``workers`` is not a positive integer.

    Examples
    --------
    >>> default_budget(local=False) == MIN_DEFAULT_BUDGET
    True
    >>> default_budget() >= default_budget(workers=4) >= MIN_DEFAULT_BUDGET
    True
    """
    count = 1 if workers is None else workers
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if not local:
        return MIN_DEFAULT_BUDGET
    share = int(DEFAULT_MEMORY_SHARE * psutil.virtual_memory().available) // count
    return max(MIN_DEFAULT_BUDGET, share)


def format_size(count: float) -> str:
    """Human-readable binary size.

    Parameters
    ----------
    count : float
        Bytes.

    Returns
    -------
    str

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


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages that operators create and that are alive at once.

    A storage counts from the operator that returns it until the last tensor object made
    for it dies (views and in-place results share a storage and add nothing).
    """

    def __init__(self) -> None:
        super().__init__()
        self.alive: dict[int, int] = {}
        self.total = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.total -= self.alive.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        result = func(*args, **(kwargs or {}))
        for value in tree_leaves(result):
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.alive:
                    self.alive[key] = storage.nbytes()
                    self.total += storage.nbytes()
                    self.peak = max(self.peak, self.total)
                    weakref.finalize(value, self._release, key)
        return result


@dataclasses.dataclass(frozen=True)
class ActivationCost:
    """Peak activation bytes of one tile: ``per_source`` x source voxels + ``per_output`` x outputs.

    Parameters
    ----------
    per_source : float
        Bytes per voxel of the tile's input box (halo included): what a network holds on
        the grid it reads (an LR-grid network's feature maps).
    per_output : float
        Bytes per computed output voxel (its output, an upsampled residual).

    Examples
    --------
    >>> ActivationCost(per_source=10.0, per_output=2.0).bytes(tile_in=100, tile_out=400)
    1800.0
    """

    per_source: float
    per_output: float

    def bytes(self, *, tile_in: int, tile_out: int) -> float:
        """Planned peak bytes of a tile with ``tile_in`` source and ``tile_out`` output voxels."""
        return self.per_source * tile_in + self.per_output * tile_out


#: Output voxels per axis of the two central probe tiles :func:`activation_bytes` runs.
PROBE_EDGES = (16, 32)
#: Input channels the probes run with; other counts are extrapolated linearly from them.
PROBE_CHANNELS = (4, 8)


def activation_bytes(net: nn.Module, plan: Plan, channels: int, device: torch.device) -> ActivationCost:
    """Peak activation bytes per source voxel and per output voxel, measured on two tiles.

    One probe tile cannot tell the two apart, and the split matters: an LR-grid network with
    a wide halo (26 LR pixels for ``attn1d2d.x4``) holds its features on the input box, so a
    small probe's cost per *output* voxel is mostly halo, and charging it to every output of
    a large tile overestimated a 256-pixel tile's memory about 45-fold (the planner then cut
    a 103-band cube's tiles to 8x8 LR pixels, each inside a 26-pixel halo). Two central tiles of
    :data:`PROBE_EDGES` output voxels per axis give a two-term fit; where it is degenerate
    (input box proportional to the output, as for factor-1 or halo-free models) the larger
    per-output cost of the two is used alone; a term that comes out negative is dropped and
    the other one charged with the larger of the two probes' costs.

    A cube's bands are channels, and an HSI network's features scale with them (its
    weights are shared along the bands): a probe with all 189 bands of a cube took 28 s
    of a 30 s run (the 8-fold self-ensemble: 4 minutes), so each tile runs with
    :data:`PROBE_CHANNELS` channels and the cost of ``channels`` is extrapolated from the
    two: exact where the features are an affine function of the channel count, as they
    are for band-shared weights, separable interpolation and a first layer that mixes the
    channels into a fixed width (for ``attn1d2d.x4`` on 189 bands: 0.5 s, equal to the
    full probe; 1 and 2 channels, where other tensors make the peak, undercounted 17 %).

    Parameters
    ----------
    net : torch.nn.Module
        Eval mode, on ``device``.
    plan : Plan
        The volume's plan (central tiles, clipped to the volume, are probed).
    channels : int
        Input channels.
    device : torch.device
        Where the model runs.

    Returns
    -------
    ActivationCost
        Peak bytes of the tensors the forward pass holds at once (its input excluded) times
        :data:`WORKSPACE_FACTOR`, split into per-source and per-output terms.

    Raises
    ------
    ValueError
        If the model's forward fails on a probe tile.

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import create_model
    >>> net = create_model("linear")
    >>> plan = make_plan(net.card, (4, 4), (8, 8), chunks=(8, 8), tile=(8, 8))
    >>> activation_bytes(net, plan, 1, torch.device("cpu")).per_output >= 4.0 * WORKSPACE_FACTOR
    True
    """
    probes = []
    for edge in PROBE_EDGES:
        # A central region: its tile has the full halo on every side, as most tiles of a run
        # do (a corner tile's widened box is clipped, and per voxel it holds less).
        tile = plan.central_tile([edge] * len(plan.shape_out))
        source = math.prod(b - a for a, b in tile.source)
        peaks = []
        for count in PROBE_CHANNELS if channels > PROBE_CHANNELS[-1] else (channels,):
            x = torch.zeros((1, count, *(b - a for a, b in tile.source)), device=device)
            counter = _LiveBytes()
            with torch.inference_mode(), counter:
                net(x, plan.positions(tile))
            peaks.append(counter.peak)
        if len(peaks) > 1:  # affine in the channel count, never below the larger probe
            (c1, c2), (q1, q2) = PROBE_CHANNELS, peaks
            peaks.append(max(q2, q1 + (channels - c1) * (q2 - q1) / (c2 - c1)))
        probes.append((source, math.prod(b - a for a, b in tile.compute), WORKSPACE_FACTOR * peaks[-1]))
    (s1, o1, p1), (s2, o2, p2) = probes
    det = s1 * o2 - s2 * o1
    if abs(det) <= 1e-9 * s1 * o2:  # input box proportional to the output: one term
        return ActivationCost(per_source=0.0, per_output=max(p1 / o1, p2 / o2))
    per_source, per_output = (p1 * o2 - p2 * o1) / det, (s1 * p2 - s2 * p1) / det
    if per_output < 0:  # all on the input box (a negative term is rounding): that term alone
        return ActivationCost(per_source=max(p1 / s1, p2 / s2), per_output=0.0)
    if per_source < 0:
        return ActivationCost(per_source=0.0, per_output=max(p1 / o1, p2 / o2))
    return ActivationCost(per_source=per_source, per_output=per_output)


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
    plan: Plan, *, channels: int, batch: int, activation: ActivationCost, weights: int,
    prefetch: int = 1,
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
    activation : ActivationCost
        The model's activation bytes per tile (:func:`activation_bytes`).
    weights : int
        Parameter and buffer bytes of the model.
    prefetch : int
        Task inputs read ahead.

    Returns
    -------
    Budget

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import get_card
    >>> plan = make_plan(get_card("linear"), (8, 8), (16, 16), chunks=(16, 16), tile=(16, 16))
    >>> cost = ActivationCost(per_source=0.0, per_output=8.0)
    >>> estimate(plan, channels=1, batch=1, activation=cost, weights=0).accumulator
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
    per_tile = 4 * channels * (tile_in + tile_out) + activation.bytes(tile_in=tile_in, tile_out=tile_out)
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

    Examples
    --------
    >>> with progress_bar(10, quiet=True) as bar:
    ...     _ = bar.update(10)
    """
    return tqdm(
        total=total, initial=initial, unit="vox", unit_scale=True, file=sys.stderr,
        disable=quiet, desc="upsample", smoothing=0.1, dynamic_ncols=True,
    )  # fmt: skip


def check_output_room(nbytes: int, folder: Path, *, in_memory: bool) -> str | None:
    """Refuse, before any work, an output that must fit in memory and cannot; warn of disk.

    Parameters
    ----------
    nbytes : int
        The output's uncompressed size (bytes).
    folder : Path
        Where the output (and the run's work store) is written.
    in_memory : bool
        Whether the output format is written from one in-memory array (NIfTI: nibabel
        does not stream).

    Returns
    -------
    str or None
        A warning when ``nbytes`` exceeds the free disk space of ``folder`` (compressed
        Zarr chunks may still fit, so it is not an error), else None.

    Raises
    ------
    VolsrError
        If ``in_memory`` and ``nbytes`` exceeds the machine's total memory.

    Examples
    --------
    >>> check_output_room(1024, Path("."), in_memory=True) is None
    True
    """
    total = psutil.virtual_memory().total
    if in_memory and nbytes > total:
        raise VolsrError(f"the output needs {format_size(nbytes)} in memory to be written as NIfTI, "
                         f"more than this machine has ({format_size(total)}); write .zarr, .h5 or "
                         ".hdr instead (they are written block by block)")
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        return (f"warning: the output is {format_size(nbytes)} uncompressed and {folder.resolve()} has "
                f"{format_size(free)} free; the run may fill the disk")
    return None
