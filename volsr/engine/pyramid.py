"""OME-Zarr multiscale levels of an engine output: 2x block means, chunk by chunk, resumable.

Rule. Level ``k + 1`` holds the mean of each 2x2(x2) block of level ``k`` over the spatial
axes; a band/channel axis is untouched. An axis of odd length leaves its last voxel out of
the next level (``floor(n / 2)``, :func:`volsr.geometry.pyramid_shape`), so every voxel of
level ``k`` is exactly the mean of one ``2**k`` block of level 0 and sits where its affine
(:func:`volsr.geometry.pyramid_affine`) says; a partial block would be a mean centred
elsewhere. The levels are arrays ``"1"``, ``"2"``, ... beside the image ``"0"``, with its
chunk shape (clipped to the level), codec and dimension names.

No-data. With a no-data value (the input's ``meta["nodata"]``, NaN allowed), a block with
any no-data *pixel* (a spatial position where any band equals the value, as
:mod:`volsr.engine.nodata` defines it) is no-data: it gets the value exactly, in every band,
instead of a mean that mixes the value into real data. Level ``k + 1`` is built from level
``k`` by the same rule, so a level-``k`` voxel is no-data exactly when its ``2**k`` block of
level 0 holds a no-data pixel.

Memory: one level-``k + 1`` chunk and the ``2**D`` level-``k`` chunks it is made from
(float64 while averaging), whatever the volume's size. Never a whole level.

Resume: a level is a pure function of the one above it, and each of its chunks is written
whole, so rebuilding a level rewrites the same bytes. :func:`build_pyramid` reports each
finished level; the run records it, and a resumed build starts at the first level not
recorded (a level cut short is built again from its start).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volsr.errors import GeometryError
from volsr.geometry import pyramid_shape
from volsr.volume import SPATIAL_AXES

__all__ = ["MAX_LEVELS", "check_levels", "block_mean", "create_levels", "build_pyramid"]

#: Most levels a run may ask for (level 15 is 32768x coarser than level 0).
MAX_LEVELS = 16
_IMAGE = "0"


def check_levels(levels: int, spatial_shape: Sequence[int]) -> int:
    """Validate a number of multiscale levels for an output of ``spatial_shape``.

    Parameters
    ----------
    levels : int
        Levels wanted, level 0 included (1: the full-resolution image only).
    spatial_shape : (D,) sequence of int
        Level-0 spatial grid size (voxels).

    Returns
    -------
    int
        ``levels``.

    Raises
    ------
    ValueError
        If ``levels`` is not an integer in ``[1, MAX_LEVELS]``, or the coarsest level
        would have an axis of 0 voxels (an axis needs ``2**(levels - 1)`` voxels).

    Examples
    --------
    >>> check_levels(3, (64, 64, 4))
    3
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"pyramid must be an integer from 1 to {MAX_LEVELS}, got {levels!r}")
    try:
        pyramid_shape(spatial_shape, int(levels) - 1)
    except GeometryError:
        most = 1 + int(math.log2(min(spatial_shape)))
        raise ValueError(f"pyramid {levels} needs at least {2 ** (levels - 1)} voxels per spatial axis, but the "
                         f"output is {tuple(spatial_shape)}: at most {most} levels") from None
    return int(levels)


def block_mean(block: np.ndarray, spatial: Sequence[bool], nodata: float | None = None) -> np.ndarray:
    """Mean of each 2-voxel block along every spatial axis: one level down.

    Parameters
    ----------
    block : (N_0, ..., N_m) ndarray
        Any axis order; each spatial axis of even length.
    spatial : (m + 1,) sequence of bool
        Which axes are spatial (halved); the others are kept.
    nodata : float or None
        No-data value (NaN allowed; compared in ``block``'s dtype). A block holding a
        pixel where any non-spatial entry equals it gets the value in every entry.

    Returns
    -------
    (N_0 / 2 or N_0, ...) float32 ndarray
        Spatial axes halved; averaged in float64, pair by pair in a fixed order, so the
        result is deterministic.

    Raises
    ------
    ValueError
        If ``spatial`` does not match ``block.ndim`` or a spatial axis has odd length.

    Examples
    --------
    >>> block_mean(np.arange(8.0).reshape(2, 4), (False, True)).tolist()
    [[0.5, 2.5], [4.5, 6.5]]
    >>> block_mean(np.array([1.0, -9.0, 3.0, 5.0]), (True,), nodata=-9).tolist()
    [-9.0, 4.0]
    """
    if len(spatial) != block.ndim:
        raise ValueError(f"spatial needs one flag per axis of a block of shape {block.shape}, got {tuple(spatial)}")
    result = block.astype(np.float64)
    for axis, halved in enumerate(spatial):
        if not halved:
            continue
        if result.shape[axis] % 2:
            raise ValueError(f"spatial axis {axis} of a block of shape {block.shape} has odd length")
        result = _pair_reduce(result, axis, lambda a, b: 0.5 * (a + b))
    result = result.astype(np.float32)
    if nodata is not None:
        result[np.broadcast_to(_nodata_blocks(block, spatial, float(nodata)), result.shape)] = np.float32(nodata)
    return result


def _pair_reduce(values: np.ndarray, axis: int, combine: Callable[[Any, Any], Any]) -> np.ndarray:
    """Combine the two halves of each 2-voxel pair along ``axis`` (of even length)."""
    pairs = values.reshape(*values.shape[:axis], values.shape[axis] // 2, 2, *values.shape[axis + 1 :])
    return combine(pairs.take(0, axis=axis + 1), pairs.take(1, axis=axis + 1))


def _nodata_blocks(block: np.ndarray, spatial: Sequence[bool], value: float) -> np.ndarray:
    """Which 2-voxel blocks hold a no-data pixel (size 1 on the non-spatial axes)."""
    from volsr.engine.nodata import nodata_mask

    hit = nodata_mask(block[np.newaxis], value)  # one voxel at a time, in block's dtype
    others = tuple(axis for axis, halved in enumerate(spatial) if not halved)
    hit = hit.any(axis=others, keepdims=True)  # a pixel: any band
    for axis, halved in enumerate(spatial):
        if halved:
            hit = _pair_reduce(hit, axis, np.logical_or)
    return hit


def _disk_spatial(axes: Sequence[str]) -> tuple[bool, ...]:
    from volsr.io.zarr_ome import disk_order

    return tuple(axes[n] in SPATIAL_AXES for n in disk_order(tuple(axes)))


def _level_shape(shape: Sequence[int], spatial: Sequence[bool], level: int) -> tuple[int, ...]:
    """The on-disk shape of ``level`` from the on-disk shape of level 0."""
    coarse = iter(pyramid_shape([n for n, s in zip(shape, spatial, strict=True) if s], level))
    return tuple(next(coarse) if s else int(n) for n, s in zip(shape, spatial, strict=True))


def create_levels(store: Path, axes: Sequence[str], levels: int) -> None:
    """Create the empty arrays ``"1"`` .. ``str(levels - 1)`` beside an engine store's image ``"0"``.

    Parameters
    ----------
    store : Path
        Zarr v3 group created by the engine, holding the array ``"0"``.
    axes : sequence of str
        The volume's axis names (volume order; the store holds them in disk order).
    levels : int
        Levels wanted, level 0 included (1 creates nothing).

    Returns
    -------
    None

    Raises
    ------
    GeometryError
        If an axis is too short for ``levels`` (see :func:`check_levels`).
    OSError
        If the store cannot be written.

    Examples
    --------
    >>> import tempfile, zarr
    >>> with tempfile.TemporaryDirectory() as d:
    ...     group = zarr.open_group(d, mode="w", zarr_format=3)
    ...     _ = group.create_array("0", shape=(4, 8, 8), chunks=(4, 4, 4), dtype="f4")
    ...     create_levels(Path(d), ("i", "j", "band"), 3)
    ...     [zarr.open_group(d)[k].shape for k in ("1", "2")]
    [(4, 4, 4), (4, 2, 2)]
    """
    group, image = _open(store)
    spatial = _disk_spatial(axes)
    for level in range(1, levels):
        shape = _level_shape(image.shape, spatial, level)
        group.create_array(
            str(level), shape=shape, chunks=tuple(min(c, n) for c, n in zip(image.chunks, shape, strict=True)),
            dtype=image.dtype, compressors=image.compressors, dimension_names=image.metadata.dimension_names,
            overwrite=True,
        )  # fmt: skip


def build_pyramid(
    store: Path, axes: Sequence[str], levels: int, *, done: int, on_level: Callable[[int], None],
    nodata: float | None = None,
) -> None:  # fmt: skip
    """Fill levels ``done + 1`` .. ``levels - 1`` of an engine store, each from the one above.

    Parameters
    ----------
    store : Path
        Zarr v3 group whose image ``"0"`` is complete and whose level arrays exist
        (:func:`create_levels`).
    axes : sequence of str
        The volume's axis names (volume order).
    levels : int
        Levels wanted, level 0 included.
    done : int
        The highest level known to be complete (0 for a fresh build).
    on_level : callable
        Called with each level's index once all its chunks are written (to record it).
    nodata : float or None
        The no-data value (the input's ``meta["nodata"]``; NaN allowed): blocks with a
        no-data pixel get it exactly (:func:`block_mean`). None: plain means.

    Returns
    -------
    None

    Raises
    ------
    OSError
        If the store cannot be read or written (the levels recorded so far stay valid).

    Examples
    --------
    >>> import tempfile, zarr
    >>> with tempfile.TemporaryDirectory() as d:
    ...     group = zarr.open_group(d, mode="w", zarr_format=3)
    ...     group.create_array("0", shape=(4, 4), chunks=(2, 2), dtype="f4")[:] = np.arange(16).reshape(4, 4)
    ...     create_levels(Path(d), ("i", "j"), 2)
    ...     build_pyramid(Path(d), ("i", "j"), 2, done=0, on_level=print)
    ...     zarr.open_group(d)["1"][:].tolist()
    1
    [[2.5, 4.5], [10.5, 12.5]]
    """
    group, _ = _open(store)
    spatial = _disk_spatial(axes)
    for level in range(done + 1, levels):
        _build_level(group[str(level - 1)], group[str(level)], spatial, nodata)
        on_level(level)


def _open(store: Path) -> tuple[Any, Any]:
    import zarr
    from zarr.storage import LocalStore

    group = zarr.open_group(store=LocalStore(store), mode="r+")
    return group, group[_IMAGE]


def _build_level(source: Any, target: Any, spatial: tuple[bool, ...], nodata: float | None) -> None:
    """Write every chunk of ``target`` as :func:`block_mean` of its region of ``source``."""
    for region in _chunk_regions(target.shape, target.chunks):
        window = tuple(
            slice(2 * r.start, 2 * r.stop) if s else r for r, s in zip(region, spatial, strict=True)
        )  # fmt: skip
        target[region] = block_mean(source[window], spatial, nodata)


def _chunk_regions(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """The regions of a chunk grid in C order, clipped to ``shape`` (a generator: nothing kept)."""
    counts = [range(math.ceil(n / c)) for n, c in zip(shape, chunks, strict=True)]
    for index in itertools.product(*counts):
        yield tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, shape, strict=True))
