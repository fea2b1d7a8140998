"""Reading boxes of lazy volumes block by block, and statistics computed once per volume.

:func:`read_box` reads a box of a dask array by computing only the dask blocks (the
reader's chunks) that intersect it, each block once while it stays in a
:class:`BlockCache` (least recently used, bounded in bytes). A NIfTI ``.nii.gz`` file is
one block per 64 MiB slab (gzip cannot seek), a Zarr or HDF5 store one block per stored
chunk group, so the cache is what makes random patches from compressed volumes cheap.

:func:`volume_stats` reads a volume once, with a stride chosen so that at most
``max_voxels`` voxels are read (stride 1, i.e. exact, for every MRI volume up to 256^3),
and returns the intensity reference (the 99.9th percentile: the evaluation protocol
normalises by it and clips to [0, 1]), the foreground mean of the normalised volume (the
SNR reference of :mod:`volsr.noise`) and a coarse foreground map.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
from collections.abc import Hashable, Sequence

import dask.array as da
import numpy as np

from volsr.intensity import percentile_normalise
from volsr.noise import foreground_mean

__all__ = ["BlockCache", "read_box", "VolumeStats", "volume_stats"]


class BlockCache:
    """Least-recently-used cache of array blocks, bounded by their total size in bytes.

    Parameters
    ----------
    max_bytes : int
        Largest total ``nbytes`` kept (>= 0); 0 disables caching. A block larger than
        ``max_bytes`` is never kept.

    Raises
    ------
    ValueError
        If ``max_bytes`` is negative or not an integer.

    Examples
    --------
    >>> cache = BlockCache(max_bytes=32)
    >>> cache.put("a", np.zeros(2)); cache.put("b", np.zeros(2)); cache.put("c", np.zeros(1))
    >>> cache.get("a") is None, cache.get("b") is not None, cache.nbytes
    (True, True, 24)
    """

    def __init__(self, *, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._blocks: collections.OrderedDict[Hashable, np.ndarray] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, key: Hashable) -> np.ndarray | None:
        """Return the cached block (marking it recently used), or None.

        Parameters
        ----------
        key : hashable
            Block identifier.

        Returns
        -------
        ndarray or None
            The read-only block, or None if it is not cached.

        Examples
        --------
        >>> BlockCache(max_bytes=8).get("missing") is None
        True
        """
        block = self._blocks.get(key)
        if block is None:
            self.misses += 1
            return None
        self._blocks.move_to_end(key)
        self.hits += 1
        return block

    def put(self, key: Hashable, block: np.ndarray) -> None:
        """Keep a block (read-only), evicting the least recently used ones to fit.

        Parameters
        ----------
        key : hashable
            Block identifier.
        block : ndarray
            The block; it is marked read-only.

        Returns
        -------
        None

        Examples
        --------
        >>> cache = BlockCache(max_bytes=8)
        >>> cache.put("x", np.zeros(4))
        >>> len(cache)
        0
        """
        if key in self._blocks:
            self.nbytes -= self._blocks.pop(key).nbytes
        if block.nbytes > self.max_bytes:
            return
        while self.nbytes + block.nbytes > self.max_bytes:
            self.nbytes -= self._blocks.popitem(last=False)[1].nbytes
        block.setflags(write=False)
        self._blocks[key] = block
        self.nbytes += block.nbytes

    def clear(self) -> None:
        """Drop every block.

        Returns
        -------
        None

        Examples
        --------
        >>> cache = BlockCache(max_bytes=64)
        >>> cache.put("x", np.zeros(4)); cache.clear(); cache.nbytes
        0
        """
        self._blocks.clear()
        self.nbytes = 0


def read_box(
    data: da.Array, box: Sequence[tuple[int, int]], *, cache: BlockCache, key: Hashable
) -> np.ndarray:
    """Read ``data[box]`` computing only the dask blocks that intersect the box.

    Parameters
    ----------
    data : dask.array.Array
        Any shape; its ``chunks`` are the unit of reading and caching.
    box : sequence of (start, stop)
        Half-open index range per axis, inside ``[0, shape[d]]`` and non-empty.
    cache : BlockCache
        Where blocks are looked up first and kept after reading.
    key : hashable
        Identifies ``data`` in ``cache`` (blocks are keyed ``(key, block_index)``).

    Returns
    -------
    ndarray
        ``data[box]``, a new array of ``data.dtype``.

    Raises
    ------
    ValueError
        If ``box`` has the wrong length or a range is empty or outside the array.

    Examples
    --------
    >>> x = da.from_array(np.arange(10), chunks=4)
    >>> cache = BlockCache(max_bytes=1024)
    >>> read_box(x, [(3, 6)], cache=cache, key=0).tolist(), len(cache)
    ([3, 4, 5], 2)
    """
    if len(box) != data.ndim or any(
        not 0 <= start < stop <= n for (start, stop), n in zip(box, data.shape)
    ):
        raise ValueError(f"box must be {data.ndim} non-empty ranges inside {data.shape}, got {box}")
    bounds = [np.cumsum((0, *chunks)) for chunks in data.chunks]
    ranges = [
        range(
            int(np.searchsorted(edges, start, side="right")) - 1,
            int(np.searchsorted(edges, stop - 1, side="right")),
        )
        for edges, (start, stop) in zip(bounds, box)
    ]
    out = np.empty([stop - start for start, stop in box], dtype=data.dtype)
    for index in itertools.product(*ranges):
        block = cache.get((key, index))
        if block is None:
            block = np.asarray(data.blocks[index].compute(scheduler="synchronous"))
            cache.put((key, index), block)
        source, target = [], []
        for edges, (start, stop), b in zip(bounds, box, index):
            low, high = max(start, int(edges[b])), min(stop, int(edges[b + 1]))
            source.append(slice(low - int(edges[b]), high - int(edges[b])))
            target.append(slice(low - start, high - start))
        out[tuple(target)] = block[tuple(source)]
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class VolumeStats:
    """Per-volume facts computed once: intensity reference and coarse foreground map.

    Parameters
    ----------
    reference : float
        The ``percentile`` of the volume's voxels (intensity units of the file): the
        volume is normalised as ``clip(x / reference, 0, 1)``.
    foreground_mean : float
        :func:`volsr.noise.foreground_mean` of the normalised volume (SNR reference).
    stride : int
        Stride of the read the statistics come from (1: every voxel, exact).
    cell : int
        Edge of a foreground cell in voxels: cell ``c`` covers voxels
        ``[c * cell, (c + 1) * cell)`` along each axis.
    foreground : (C0, C1, C2) bool ndarray
        True where at least half of a cell's (strided) voxels exceed the threshold.

    Examples
    --------
    >>> s = volume_stats(da.ones((8, 8, 8)), cell=4)
    >>> s.reference, s.foreground.shape
    (1.0, (2, 2, 2))
    """

    reference: float
    foreground_mean: float
    stride: int
    cell: int
    foreground: np.ndarray


def volume_stats(
    data: da.Array,
    *,
    percentile: float = 99.9,
    threshold: float = 0.1,
    cell: int = 8,
    max_voxels: int = 2**24,
) -> VolumeStats:
    """Read a 3-D volume once (strided if large) and compute its :class:`VolumeStats`.

    Parameters
    ----------
    data : (X, Y, Z) dask.array.Array
        The volume.
    percentile : float
        Percentile in (0, 100] used as the intensity reference.
    threshold : float
        Normalised intensity above which a voxel is foreground, in [0, 1).
    cell : int
        Foreground cell edge in voxels (>= 1); rounded to a multiple of the stride.
    max_voxels : int
        Largest number of voxels read: the stride is the smallest ``s`` with
        ``prod(ceil(shape / s)) <= max_voxels``.

    Returns
    -------
    VolumeStats
        Floats in the file's intensity units (reference) or normalised units.

    Raises
    ------
    ValueError
        If ``data`` is not 3-D, an option is out of range, or the percentile is not > 0
        (``InvalidDataError``: values not finite).

    Examples
    --------
    >>> x = np.zeros((16, 16, 16)); x[:8] = 2.0
    >>> s = volume_stats(da.from_array(x), cell=8)
    >>> s.reference, s.foreground[:, 0, 0].tolist()
    (2.0, [True, False])
    """
    if data.ndim != 3:
        raise ValueError(f"data must be a 3-D array, got shape {data.shape}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell < 1:
        raise ValueError(f"cell must be an integer >= 1, got {cell!r}")
    if not max_voxels >= 1:
        raise ValueError(f"max_voxels must be >= 1, got {max_voxels}")
    stride = 1
    while math.prod(math.ceil(n / stride) for n in data.shape) > max_voxels:
        stride += 1
    sample = np.asarray(data[::stride, ::stride, ::stride].compute(), dtype=np.float64)
    normalised, reference = percentile_normalise(sample, percentile=percentile)
    blocks = max(1, round(cell / stride))
    mask = normalised > threshold
    padded = np.full([math.ceil(n / blocks) * blocks for n in mask.shape], np.nan)
    padded[tuple(slice(0, n) for n in mask.shape)] = mask
    grouped = padded.reshape(
        [v for n in padded.shape for v in (n // blocks, blocks)]
    ).transpose(0, 2, 4, 1, 3, 5)
    fraction = np.nanmean(grouped.reshape(*grouped.shape[:3], -1), axis=-1)
    return VolumeStats(
        reference=reference,
        foreground_mean=foreground_mean(normalised),
        stride=stride,
        cell=blocks * stride,
        foreground=fraction >= 0.5,
    )
