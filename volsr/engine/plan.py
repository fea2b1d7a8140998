"""The planner: output chunks -> tasks -> tiles, each with the input box it reads.

Everything is on the *output* grid: a task is a box of whole output chunks (the unit of
work and of write ownership); a tile is a box of output voxels run through the model in
one forward call. A tile's input box comes from :func:`volsr.geometry.input_window` with the
model's halo, never from an overlap constant:

- ``grid == "lr"`` models read the low-resolution grid: the tile's outputs need the input
  box of their coordinates plus ``card.halo`` input voxels per side.
- ``grid == "hr"`` models interpolate inside ``forward`` and then look ``card.halo``
  *output* voxels around each output: the tile's output box is widened by that many output
  voxels (clipped at the volume edge, exactly where the whole-volume pass pads), the model
  runs on the widened box, and the widening is cropped off. The input box of the widened
  box adds the widest interpolation support.

Exact mode tiles partition each task; blend mode tiles lie on one global lattice of the
output grid (stride ``tile * (1 - overlap)``), so a task's result does not depend on how
the volume is cut into tasks. Both modes go through one weighted accumulation: exact
tiles carry weight 1 on their own voxels (and 0 elsewhere), blend tiles a separable
Gaussian.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from volsr.geometry import input_window, output_coordinates
from volsr.models.registry import ModelCard
from volsr.resample import INTERPOLATION_METHODS, gaussian_profile

__all__ = [
    "DEFAULT_OVERLAP", "BLEND_MODES", "BLEND_TASK_TILES", "Plan", "Tile", "make_plan", "model_halos",
]

#: Ways of combining tiles: ``exact`` crops each tile to its own voxels (weight 1);
#: ``gaussian`` blends overlapping tiles with Gaussian weights on the output grid.
BLEND_MODES = ("exact", "gaussian")

#: Tiles per axis a blend-mode task spans. A task computes every lattice tile that touches
#: it, so the tiles across its border are computed again by its neighbour: about
#: ``1 + stride / task`` times the blend's own work per axis (1.75 per axis at one tile per
#: task and overlap 0.25, 1.25 at three). The task's accumulator counts in the budget.
BLEND_TASK_TILES = 3

Box = tuple[tuple[int, int], ...]

#: Fraction of a tile that neighbouring tiles share under ``blend='gaussian'``.
DEFAULT_OVERLAP = 0.25


@dataclasses.dataclass(frozen=True)
class Tile:
    """One forward call: output voxels ``region``, computed on ``compute`` from ``source``.

    Parameters
    ----------
    region : tuple of (start, stop)
        Output voxels this tile contributes (half-open, per spatial axis).
    compute : tuple of (start, stop)
        Output voxels the model evaluates (``region`` widened by an ``hr`` model's halo).
    source : tuple of (start, stop)
        Input voxels read (half-open, per spatial axis).
    """

    region: Box
    compute: Box
    source: Box


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one volume is cut into tasks and tiles.

    Parameters
    ----------
    shape_in, shape_out : tuple of int
        Spatial grid sizes (voxels), one per spatial axis in array order.
    chunks : tuple of int
        Output chunk shape per spatial axis (voxels).
    tile : tuple of int
        Output tile shape per spatial axis (voxels).
    blend : {"exact", "gaussian"}
        How tiles combine (see :data:`BLEND_MODES`).
    overlap : float
        Fraction of a tile shared with its neighbour in blend mode, in [0, 1).
    out_halo : int
        Output voxels each tile is widened by (``card.halo`` for ``hr`` models, else 0).
    in_halo : int
        Input voxels read beyond the widened tile's coordinates.
    task_chunks : tuple of int
        Output chunks per task, per spatial axis.
    """

    shape_in: tuple[int, ...]
    shape_out: tuple[int, ...]
    chunks: tuple[int, ...]
    tile: tuple[int, ...]
    blend: str
    overlap: float
    out_halo: int
    in_halo: int
    task_chunks: tuple[int, ...]

    @property
    def task_grid(self) -> tuple[int, ...]:
        """Number of tasks per spatial axis."""
        return tuple(
            math.ceil(n / (c * k))
            for n, c, k in zip(self.shape_out, self.chunks, self.task_chunks, strict=True)
        )

    @property
    def n_tasks(self) -> int:
        """Total number of tasks."""
        return math.prod(self.task_grid)

    def task_region(self, index: int) -> Box:
        """Output box of task ``index`` (C order over :attr:`task_grid`): whole chunks."""
        position = np.unravel_index(index, self.task_grid)
        box = []
        for p, n, c, k in zip(position, self.shape_out, self.chunks, self.task_chunks, strict=True):
            start = int(p) * c * k
            box.append((start, min(n, start + c * k)))
        return tuple(box)

    def tiles(self, region: Box) -> list[Tile]:
        """Tiles that contribute to the output box ``region`` (a task's)."""
        if self.blend == "exact":
            per_axis = [_split(a, b, t) for (a, b), t in zip(region, self.tile, strict=True)]
        else:
            per_axis = [
                [(s, e) for s, e in _lattice(n, t, self.overlap) if s < b and e > a]
                for (a, b), n, t in zip(region, self.shape_out, self.tile, strict=True)
            ]
        return [self._tile(box) for box in itertools.product(*per_axis)]

    def _tile(self, region: Box) -> Tile:
        compute = tuple(
            _at_least_two(max(0, a - self.out_halo), min(n, b + self.out_halo), n)
            for (a, b), n in zip(region, self.shape_out, strict=True)
        )
        source = tuple(
            input_window(a, b, n_in, n_out, halo=self.in_halo)
            for (a, b), n_in, n_out in zip(compute, self.shape_in, self.shape_out, strict=True)
        )
        return Tile(region=region, compute=compute, source=source)

    def source_box(self, tiles: Sequence[Tile]) -> Box:
        """Smallest input box holding every tile's source (what a task reads once)."""
        return tuple(
            (min(t.source[d][0] for t in tiles), max(t.source[d][1] for t in tiles))
            for d in range(len(self.shape_in))
        )

    def positions(self, tile: Tile) -> tuple[np.ndarray, ...]:
        """Tile-relative input coordinates of the tile's computed outputs, one per axis."""
        return tuple(
            output_coordinates(n_in, n_out)[a:b] - s
            for (a, b), (s, _), n_in, n_out in zip(
                tile.compute, tile.source, self.shape_in, self.shape_out, strict=True
            )
        )

    def weights(self, tile: Tile) -> np.ndarray | float:
        """Blend weight of the tile over its ``region`` (1.0 for exact crops)."""
        if self.blend == "exact":
            return 1.0
        profiles = [_gaussian_weights(b - a) for a, b in tile.region]
        return math.prod(np.ix_(*profiles)) if len(profiles) > 1 else profiles[0]

    def central_tile(self, size: Sequence[int]) -> Tile:
        """The tile of a ``size`` box (output voxels, clipped to the volume) at the volume's centre.

        It has the full halo on every side, as most tiles of a run do: what probes measure.
        """
        edges = [min(int(c), n) for c, n in zip(size, self.shape_out, strict=True)]
        region = tuple(((n - c) // 2, (n - c) // 2 + c) for n, c in zip(self.shape_out, edges, strict=True))
        return self.tiles(region)[0]

    def task_voxels(self, index: int) -> int:
        """Output voxels (per channel) of task ``index``."""
        return math.prod(b - a for a, b in self.task_region(index))


def _split(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(stop, a + size)) for a in range(start, stop, size)]


def _lattice(n: int, size: int, overlap: float) -> list[tuple[int, int]]:
    """MONAI-style window starts: fixed stride, the last window moved inward to end at n."""
    size = min(size, n)
    stride = max(1, int(size * (1.0 - overlap)))
    starts = list(range(0, n - size, stride)) + [n - size]
    return [(s, s + size) for s in sorted(set(starts))]


def _gaussian_weights(length: int) -> np.ndarray:
    # sigma = length / 8 (MONAI's sigma_scale 0.125); floored so edge voxels keep a weight.
    sigma = max(length / 8.0, 0.5)
    kernel, _ = gaussian_profile(sigma * 2.0 * math.sqrt(2.0 * math.log(2.0)))
    offsets = np.arange(length, dtype=np.float64) - (length - 1) / 2.0
    return np.maximum(kernel(offsets), 1e-3).astype(np.float32)


def model_halos(card: ModelCard) -> tuple[int, int]:
    """Output-voxel widening and input-voxel halo of a model's tiles.

    Parameters
    ----------
    card : ModelCard
        ``grid`` and ``halo`` are used.

    Returns
    -------
    out_halo : int
        Output voxels a tile is widened by (``card.halo`` for ``hr`` models, else 0).
    in_halo : int
        Input voxels read beyond the widened tile (``card.halo`` for ``lr`` models, the
        widest interpolation support for ``hr`` models).

    Examples
    --------
    >>> from volsr.models import get_card
    >>> model_halos(get_card("cubic"))
    (0, 14)
    """
    if card.grid == "lr":
        return 0, card.halo
    return card.halo, max(INTERPOLATION_METHODS.values())


def make_plan(
    card: ModelCard,
    shape_in: Sequence[int],
    shape_out: Sequence[int],
    *,
    chunks: Sequence[int],
    tile: Sequence[int],
    blend: str = "exact",
    overlap: float = DEFAULT_OVERLAP,
) -> Plan:
    """Plan tasks and tiles for upsampling ``shape_in`` to ``shape_out`` with a model.

    Parameters
    ----------
    card : ModelCard
        The model's facts (grid, halo).
    shape_in, shape_out : (D,) sequence of int
        Spatial input and output grid sizes (voxels).
    chunks : (D,) sequence of int
        Output chunk shape (voxels); clipped to ``shape_out``.
    tile : (D,) sequence of int
        Output tile shape (voxels); clipped to ``shape_out``. A task groups
        ``max(1, tile // chunks)`` chunks per axis (``BLEND_TASK_TILES`` times as many in
        blend mode).
    blend : {"exact", "gaussian"}
        Tile combination.
    overlap : float
        Tile overlap fraction in [0, 1) (blend mode only).

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        If ``blend`` is unknown, ``overlap`` is outside [0, 1), or a size is not positive
        or has the wrong length.

    Examples
    --------
    >>> from volsr.models import get_card
    >>> plan = make_plan(get_card("linear"), (10, 10, 4), (10, 10, 16),
    ...                  chunks=(8, 8, 8), tile=(8, 8, 16))
    >>> plan.n_tasks, plan.task_region(0), plan.tiles(plan.task_region(0))[0].source
    (4, ((0, 8), (0, 8), (0, 16)), ((0, 9), (0, 9), (0, 4)))
    """
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    dims = len(shape_out)
    sizes = {}
    for name, values in (("chunks", chunks), ("tile", tile)):
        values = tuple(int(v) for v in values)
        if len(values) != dims or min(values) < 1:
            raise ValueError(f"{name} needs {dims} positive sizes (one per spatial axis), got {values}")
        sizes[name] = tuple(min(v, n) for v, n in zip(values, shape_out, strict=True))
    out_halo, in_halo = model_halos(card)
    return Plan(
        shape_in=tuple(int(n) for n in shape_in),
        shape_out=tuple(int(n) for n in shape_out),
        chunks=sizes["chunks"],
        tile=sizes["tile"],
        blend=blend,
        overlap=float(overlap),
        out_halo=out_halo,
        in_halo=in_halo,
        task_chunks=tuple(
            # A tile spanning the axis makes one task of it (no partial task recomputing halos).
            -(-n // c) if t >= n else max(1, (t if blend == "exact" else BLEND_TASK_TILES * t) // c)
            for t, c, n in zip(sizes["tile"], sizes["chunks"], shape_out, strict=True)
        ),
    )


def _at_least_two(start: int, stop: int, n: int) -> tuple[int, int]:
    # A model that reads its scale from the spacing of its output positions (the
    # arbitrary-scale networks) needs two samples per axis: widen a one-voxel compute box
    # towards the volume; the extra voxel is computed and cropped like a halo.
    if stop - start >= 2 or n < 2:
        return start, stop
    return (start - 1, stop) if start > 0 else (start, stop + 1)
