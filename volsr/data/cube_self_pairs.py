"""Training pairs cut from the cube that will be upsampled (self-supervised adaptation, HSI).

A cube asked for x``r`` super-resolution is the HR of its own x``r`` degradation by the SR
protocol's LR model (:func:`volsr.data.hsi.make_pair`: MATLAB's antialiased bicubic
``imresize`` of rows and columns): pairs whose input is the cube degraded again by ``r``
and whose target is the cube itself. :func:`cube_self_pairs` splits the cube once along its
longer spatial axis: the last rows (or columns) are held out whole, as one pair, for the
adaptation guard; the rest feeds an :class:`~volsr.data.hsi.HSIPatchDataset` (patches with
flips and rotations, contiguous band windows and band reversal, on all ``r * r`` shifted LR
grids, as in training). Each part is degraded on its own, so no training input reads a
held-out pixel.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from volsr.data.hsi import HSIPair, HSIPatchDataset, make_pair
from volsr.errors import TooSmallForPairsError

__all__ = ["CubeSelfPairs", "cube_self_pairs", "holdout_split", "HOLDOUT_SHARE", "MIN_INPUT"]

#: Share of the longer spatial axis held out for the guard (rounded to whole LR pixels of the pairs).
HOLDOUT_SHARE = 0.25
#: Smallest input edge (pixels of the cube degraded again) of a training patch and of the held-out block.
MIN_INPUT = 4


@dataclasses.dataclass(frozen=True)
class CubeSelfPairs:
    """The pairs of one cube: a training stream and the held-out pair.

    Parameters
    ----------
    training : HSIPatchDataset
        Patches from the cube outside the held-out block.
    held_out : HSIPair
        The held-out block (``hr``: its covered part) and its degradation (``lr``).
    slab : (3,) tuple of int
        The held-out block ``(axis, start, stop)`` in cube pixels (``stop`` is the axis length).
    """

    training: HSIPatchDataset
    held_out: HSIPair
    slab: tuple[int, int, int]


def holdout_split(shape: tuple[int, ...], *, scale: int, patch: int) -> tuple[tuple[int, int, int], int]:
    """Where a cube of ``shape`` is split, and the input patch edge that fits the rest.

    Parameters
    ----------
    shape : (rows, cols, bands) tuple of int
        The cube's shape.
    scale : int
        Integer factor of the pairs (>= 2).
    patch : int
        Largest target patch edge in cube pixels; the input edge is ``patch // scale``.

    Returns
    -------
    slab : (3,) tuple of int
        ``(axis, start, stop)``: the last ``max(MIN_INPUT, round(HOLDOUT_SHARE * n / scale))
        * scale`` pixels of the longer spatial axis ``axis`` (length ``n``).
    lr_patch : int
        Input patch edge: at most ``patch // scale``, and such that every one of the ``scale``
        shifted grids of the rest holds it along both axes.

    Raises
    ------
    ValueError
        If ``patch // scale < MIN_INPUT``, or the cube is too small for a held-out block and
        input patches of ``MIN_INPUT`` pixels (the message gives the size needed).

    Examples
    --------
    >>> holdout_split((64, 64, 31), scale=4, patch=32)
    ((0, 48, 64), 8)
    """
    if patch // scale < MIN_INPUT:
        raise ValueError(f"patch must be at least {MIN_INPUT * scale} pixels at x{scale}, got {patch}")
    axis = int(shape[1] > shape[0])
    n, m = shape[axis], shape[1 - axis]
    hold = scale * max(MIN_INPUT, round(HOLDOUT_SHARE * n / scale))
    fits = min(n - hold, m) - (scale - 1)  # the shifted grids start up to scale - 1 pixels later
    lr_patch = min(patch // scale, fits // scale)
    if lr_patch < MIN_INPUT:
        need = scale * MIN_INPUT + scale - 1
        raise TooSmallForPairsError(f"the cube of {shape[0]}x{shape[1]} pixels is too small for self-supervised "
                                    f"pairs at x{scale}: it needs {hold + need} pixels along one spatial axis "
                                    f"and {need} along the other")
    return (axis, n - hold, n), lr_patch


def cube_self_pairs(
    cube: np.ndarray,
    *,
    scale: int,
    patch: int,
    batch_size: int,
    seed: int,
    band_window_probability: float = 1.0,
    min_bands: int = 24,
    max_bands: int | None = 40,
) -> CubeSelfPairs:
    """Split ``cube`` (:func:`holdout_split`) into a training stream and the held-out pair.

    Parameters
    ----------
    cube : (rows, cols, bands) ndarray
        The cube, normalised as the network reads it (the engine's input scaling).
    scale : int
        The network's integer factor (>= 2).
    patch : int
        Largest target patch edge in cube pixels (:func:`holdout_split`).
    batch_size : int
        Patches per batch.
    seed : int
        Seed of the training stream (batch ``i`` is a pure function of ``seed`` and ``i``).
    band_window_probability, min_bands, max_bands : float, int, int or None
        Band windows of the training patches, as :class:`~volsr.data.hsi.HSIPatchDataset`
        takes them (default: every batch a window of 24 to 40 contiguous bands, the shipped
        networks' training windows; a step costs in proportion to its band count).

    Returns
    -------
    CubeSelfPairs
        Float32 pairs; training batches as :class:`~volsr.data.hsi.HSIPatchDataset` gives them.

    Raises
    ------
    ValueError
        If ``cube`` is not 3-D, the cube is too small (:func:`holdout_split`) or an option is
        out of range.

    Examples
    --------
    >>> cube = np.random.default_rng(0).random((40, 24, 5)).astype(np.float32)
    >>> pairs = cube_self_pairs(cube, scale=2, patch=16, batch_size=2, seed=0)
    >>> pairs.slab, pairs.held_out.lr.shape, tuple(pairs.training.batch(0)["lr"].shape)
    ((0, 30, 40), (5, 12, 5), (2, 5, 8, 8))
    """
    cube = np.asarray(cube, dtype=np.float32)
    if cube.ndim != 3:
        raise ValueError(f"cube must be (rows, cols, bands), got shape {cube.shape}")
    slab, lr_patch = holdout_split(cube.shape, scale=scale, patch=patch)
    axis, start, _ = slab
    training, held = np.split(cube, [start], axis=axis)
    stream = HSIPatchDataset(
        [training], scale=scale, lr_patch=lr_patch, batch_size=batch_size, grid_phases=scale, seed=seed,
        band_window_probability=band_window_probability, min_bands=min_bands, max_bands=max_bands,
    )  # fmt: skip
    return CubeSelfPairs(training=stream, held_out=make_pair(held, scale=scale, name="held out"), slab=slab)
