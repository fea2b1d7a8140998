"""One training pair's parameters and the pure geometry that turns them into weights.

:class:`PatchParams` is the frozen record of everything that determines one (LR tile, HR
patch) pair; the functions here compute, without reading voxels, what
:class:`volsr.data.sampler.PatchSampler` applies.

Slice lattice (the contract of :func:`volsr.geometry.downsampled_grid`, anchored at the
patch): the LR tile has ``m = ceil(P / f) + 2 h`` slices (``P`` patch voxels along the
slice axis, factor ``f``, ``h`` halo slices on each side); slice ``j`` is centred at HR
coordinate ``o + (j - h + 1/2) f - 1/2``, ``o`` the patch origin, so the patch starts on a
slice boundary as HR voxel 0 of a whole volume does, and patch voxel ``t`` sits at LR-tile
coordinate ``(t + 1/2) / f - 1/2 + h``. For a whole volume of ``n_lr`` slices covering
``n_cov = n_lr f`` voxels this is ``geometry.output_coordinates(n_lr, n_cov)[o + t]`` minus
the tile's first slice ``o / f - h``: the engine's ``model(lr, positions)`` contract.
(The formula is written out here because ``output_coordinates`` takes integer grid sizes
and ``f`` is any real >= 1.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from monai.utils import convert_to_numpy

from volsr.degrade import PROFILES
from volsr.geometry import output_coordinates, sample_coordinates
from volsr.noise import NoiseParams
from volsr.resample import (
    antialiased_cubic_matrix,
    apply_matrix,
    box_profile,
    gaussian_profile,
    interpolation_matrix_at,
    kernel_matrix,
)

__all__ = [
    "PatchParams",
    "lr_tile_length",
    "tile_positions",
    "origin_ranges",
    "slice_weights",
    "source_box",
    "reorient",
    "foreground_centre",
    "augment_intensity",
]

_EPS = 1e-9


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchParams:
    """Everything that determines one training pair (see the module docstring for the order).

    Parameters
    ----------
    volume : int
        Index into the sampler's volumes.
    origin : (3,) tuple of int
        First HR voxel of the patch in the reoriented, zoomed volume.
    axis : int
        Slice axis (0, 1 or 2) of the patch.
    factor : float
        Slice spacing / HR voxel size (>= 1).
    thickness : float
        Slice thickness (FWHM for a Gaussian) in HR voxels (> 0).
    profile : {"gaussian", "box"}
        Slice profile.
    zoom : float
        Voxel size of the resampled volume / original voxel size (1: no resampling).
    permutation : (3,) tuple of int
        Patch axis ``d`` is volume axis ``permutation[d]``.
    flips : (3,) tuple of bool
        Patch axes reversed (after the permutation).
    noise : NoiseParams, optional
        Rician noise added to the HR voxels before slice averaging; None for none.
    augment_seed : int
        Seed of the MONAI intensity transforms (-1: none configured).
    isotropic : bool
        Degrade all three axes alike (``factor``, ``thickness``, ``profile``): an isotropic
        low-resolution acquisition; ``axis`` is then not used.

    Raises
    ------
    ValueError
        If a value is out of range.

    Examples
    --------
    >>> p = PatchParams(volume=0, origin=(0, 0, 3), axis=2, factor=3.0, thickness=3.0)
    >>> p.as_dict()["origin_2"], p.as_dict()["profile"]
    (3, 0)
    """

    volume: int
    origin: tuple[int, int, int]
    axis: int
    factor: float
    thickness: float
    profile: str = "gaussian"
    zoom: float = 1.0
    permutation: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)
    noise: NoiseParams | None = None
    augment_seed: int = -1
    isotropic: bool = False

    @property
    def degraded_axes(self) -> tuple[int, ...]:
        """Patch axes the thick-slice degradation runs along."""
        return (0, 1, 2) if self.isotropic else (self.axis,)

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2) or isinstance(self.axis, bool):
            raise ValueError(f"axis must be 0, 1 or 2, got {self.axis!r}")
        if sorted(self.permutation) != [0, 1, 2] or len(self.flips) != 3 or len(self.origin) != 3:
            raise ValueError(
                f"origin, permutation and flips need 3 entries (permutation of 0, 1, 2), got "
                f"{self.origin}, {self.permutation}, {self.flips}"
            )
        checks = {"factor": self.factor >= 1, "thickness": self.thickness > 0, "zoom": self.zoom > 0}
        for name, ok in checks.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and ok):
                raise ValueError(f"{name} must be finite and {'>= 1' if name == 'factor' else '> 0'}, got {value}")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")

    def as_dict(self) -> dict[str, int | float]:
        """Flat record of ints and floats (collatable, loggable).

        Returns
        -------
        dict
            ``volume, origin_0..2, axis, factor, thickness, profile`` (index into
            ``volsr.degrade.PROFILES``), ``snr_db`` (inf without noise), ``noise_sigma``,
            ``noise_seed`` (-1 without noise), ``zoom``, ``perm_0..2``, ``flip_0..2``,
            ``augment_seed``, ``isotropic`` (0 or 1).

        Examples
        --------
        >>> PatchParams(volume=1, origin=(0, 0, 0), axis=0, factor=2.0, thickness=2.0).as_dict()["snr_db"]
        inf
        """
        record: dict[str, int | float] = {"volume": int(self.volume)}
        record.update({f"origin_{d}": int(v) for d, v in enumerate(self.origin)})
        record.update(
            axis=int(self.axis),
            factor=float(self.factor),
            thickness=float(self.thickness),
            profile=PROFILES.index(self.profile),
            snr_db=math.inf if self.noise is None else float(self.noise.snr_db),
            noise_sigma=0.0 if self.noise is None else float(self.noise.sigma),
            noise_seed=-1 if self.noise is None else int(self.noise.seed),
            zoom=float(self.zoom),
        )
        record.update({f"perm_{d}": int(v) for d, v in enumerate(self.permutation)})
        record.update({f"flip_{d}": int(bool(v)) for d, v in enumerate(self.flips)})
        record["augment_seed"] = int(self.augment_seed)
        record["isotropic"] = int(bool(self.isotropic))
        return record



def lr_tile_length(patch_length: int, factor: float, *, halo: int) -> int:
    """Number of LR slices of a tile: ``ceil(P / f) + 2 h``.

    Parameters
    ----------
    patch_length : int
        HR patch voxels along the slice axis (>= 1).
    factor : float
        Slice factor (>= 1).
    halo : int
        Extra slices on each side (>= 0).

    Returns
    -------
    int
        Slices of the LR tile.

    Examples
    --------
    >>> lr_tile_length(64, 3.0, halo=1), lr_tile_length(64, 4.0, halo=0)
    (24, 16)
    """
    return math.ceil(patch_length / factor - _EPS) + 2 * halo


def origin_ranges(
    shape: Sequence[int],
    patch_shape: Sequence[int],
    *,
    slice_axes: Sequence[int],
    factor: float,
    halo: int,
) -> list[tuple[int, int]]:
    """Inclusive patch-origin range per axis that keeps the patch and its LR slices inside.

    Parameters
    ----------
    shape, patch_shape : (3,) sequence of int
        Volume (reoriented, zoomed) and HR patch shapes (voxels).
    slice_axes : sequence of int
        Axes degraded into slices of ``factor`` voxels, ``halo`` of them before the patch.
    factor : float
        Slice factor (>= 1).
    halo : int
        LR slices on each side of the patch (>= 0).

    Returns
    -------
    list of (low, high)
        ``(0, n - P)`` along other axes; an empty range has ``low > high``.

    Examples
    --------
    >>> origin_ranges((20, 20, 20), (8, 8, 8), slice_axes=(2,), factor=2.0, halo=1)
    [(0, 12), (0, 12), (2, 10)]
    """
    ranges = [(0, n - p) for n, p in zip(shape, patch_shape)]
    for d in slice_axes:
        m = lr_tile_length(patch_shape[d], factor, halo=halo)
        ranges[d] = (math.ceil(halo * factor - _EPS), math.floor(shape[d] - (m - halo) * factor + _EPS))
    return ranges


def tile_positions(patch_length: int, factor: float, *, halo: int) -> np.ndarray:
    """LR-tile coordinates of the HR patch voxels along the slice axis.

    Parameters
    ----------
    patch_length : int
        HR patch voxels along the slice axis.
    factor : float
        Slice factor (>= 1).
    halo : int
        Halo slices before the patch.

    Returns
    -------
    (patch_length,) float64 ndarray
        ``(t + 1/2) / factor - 1/2 + halo`` (0 is the centre of the tile's first slice).

    Examples
    --------
    >>> tile_positions(4, 2.0, halo=1).tolist()
    [0.75, 1.25, 1.75, 2.25]
    """
    return sample_coordinates(np.arange(patch_length), factor) + halo


def slice_weights(
    n: int,
    *,
    origin: int,
    factor: float,
    thickness: float,
    profile: str,
    lr_length: int,
    halo: int,
) -> sp.csr_matrix:
    """Thick-slice weights of an LR tile over a whole axis of ``n`` HR voxels.

    The rows of :func:`volsr.degrade.thick_slice`'s matrix for a lattice anchored at the
    patch origin: same profile, 4-sigma cut, row normalisation and symmetric borders, so a
    tile equals the whole-volume degradation restricted to it.

    Parameters
    ----------
    n : int
        HR voxels along the slice axis of the (reoriented, zoomed) volume.
    origin : int
        First HR voxel of the patch along that axis.
    factor, thickness : float
        Slice factor (>= 1) and thickness (FWHM for a Gaussian) in HR voxels (> 0).
    profile : {"gaussian", "box"}
        Slice profile.
    lr_length : int
        Slices of the tile (:func:`lr_tile_length`).
    halo : int
        Slices before the patch.

    Returns
    -------
    (lr_length, n) scipy.sparse.csr_matrix, float64
        Rows sum to one; the non-zero columns are the HR voxels the tile needs.

    Raises
    ------
    ValueError
        If ``profile`` is unknown or ``thickness`` is not positive.

    Examples
    --------
    >>> w = slice_weights(8, origin=2, factor=2.0, thickness=2.0, profile="box", lr_length=2, halo=0)
    >>> w.toarray().tolist()
    [[0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0]]
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    kernel, radius = (gaussian_profile if profile == "gaussian" else box_profile)(thickness)
    centres = origin + sample_coordinates(np.arange(lr_length) - halo, 1.0 / factor)  # LR centres, HR voxels
    return kernel_matrix(centres, n, kernel, radius)


def source_box(
    needed: Sequence[tuple[int, int]],
    original: Sequence[int],
    zoomed: Sequence[int],
    *,
    permutation: Sequence[int],
    flips: Sequence[bool],
) -> tuple[list[tuple[int, int]], list[sp.csr_matrix | None]]:
    """Map ranges needed in the reoriented, zoomed frame to the volume box to read.

    Parameters
    ----------
    needed : sequence of (start, stop)
        Half-open voxel range per axis of the reoriented, zoomed frame.
    original : (3,) sequence of int
        Reoriented frame shape before zooming (``shape[permutation[d]]``).
    zoomed : (3,) sequence of int
        Reoriented frame shape after zooming.
    permutation : (3,) sequence of int
        Frame axis ``d`` is volume axis ``permutation[d]``.
    flips : (3,) sequence of bool
        Frame axes reversed.

    Returns
    -------
    box : list of (start, stop)
        Half-open range per *volume* axis to read.
    matrices : list of (stop - start, read) csr_matrix or None
        Per frame axis, the zoom weights (antialiased cubic, field of view kept) from the
        read range to the needed range; None where the axis is not resampled.

    Raises
    ------
    ValueError
        If a range is empty or outside the frame.

    Examples
    --------
    >>> source_box([(0, 2), (1, 3), (4, 5)], (4, 6, 8), (4, 6, 8),
    ...            permutation=(2, 0, 1), flips=(True, False, False))[0]
    [(1, 3), (4, 5), (2, 4)]
    """
    box: list[tuple[int, int]] = [(0, 0)] * 3
    matrices: list[sp.csr_matrix | None] = []
    for d, (start, stop) in enumerate(needed):
        if not 0 <= start < stop <= zoomed[d]:
            raise ValueError(f"needed range {(start, stop)} is outside axis {d} of {tuple(zoomed)}")
        matrix = None
        if zoomed[d] != original[d]:
            matrix = antialiased_cubic_matrix(original[d], zoomed[d])[start:stop]
            start, stop = int(matrix.indices.min()), int(matrix.indices.max()) + 1
            matrix = matrix[:, start:stop]
        matrices.append(matrix)
        if flips[d]:
            start, stop = original[d] - stop, original[d] - start
        box[permutation[d]] = (start, stop)
    return box, matrices


def reorient(region: np.ndarray, *, permutation: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """Bring a region read in volume axis order into the patch frame.

    Parameters
    ----------
    region : (X, Y, Z) ndarray
        Voxels in volume axis order.
    permutation : (3,) sequence of int
        Frame axis ``d`` is volume axis ``permutation[d]``.
    flips : (3,) sequence of bool
        Frame axes reversed after the permutation.

    Returns
    -------
    ndarray
        A view: ``transpose(region, permutation)``, flipped where asked.

    Raises
    ------
    ValueError
        If ``permutation`` is not a permutation of the axes.

    Examples
    --------
    >>> x = np.arange(6).reshape(1, 2, 3)
    >>> reorient(x, permutation=(2, 1, 0), flips=(True, False, False))[:, 0, 0].tolist()
    [2, 1, 0]
    """
    out = np.transpose(region, tuple(permutation))
    flipped = tuple(d for d, flip in enumerate(flips) if flip)
    return np.flip(out, axis=flipped) if flipped else out


def foreground_centre(
    rng: np.random.Generator,
    foreground: np.ndarray,
    *,
    cell: int,
    centres: Sequence[tuple[int, int]],
    original: Sequence[int],
    zoomed: Sequence[int],
    permutation: Sequence[int],
    flips: Sequence[bool],
) -> tuple[int, int, int] | None:
    """Draw a patch centre in a foreground cell, within the allowed centre ranges.

    A foreground cell that meets the allowed box is chosen uniformly, then a voxel of the
    cell inside the box, which is mapped to the nearest voxel of the reoriented, zoomed
    frame (exact without zoom).

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness (consumed).
    foreground : (C0, C1, C2) bool ndarray
        Foreground cells in volume axis order (:class:`volsr.data.blocks.VolumeStats`).
    cell : int
        Cell edge in voxels: cell ``c`` covers voxels ``[c cell, (c + 1) cell)``.
    centres : sequence of (low, high)
        Inclusive allowed centre range per frame axis (reoriented, zoomed frame).
    original, zoomed : (3,) sequence of int
        Reoriented frame shape before and after zooming.
    permutation : (3,) sequence of int
        Frame axis ``d`` is volume axis ``permutation[d]``.
    flips : (3,) sequence of bool
        Frame axes reversed.

    Returns
    -------
    tuple of int or None
        The centre in the frame, or None if no foreground cell meets the allowed box.

    Examples
    --------
    >>> fg = np.zeros((2, 2, 2), bool); fg[1, 0, 1] = True
    >>> foreground_centre(np.random.default_rng(0), fg, cell=4, centres=[(0, 7)] * 3,
    ...                   original=(8, 8, 8), zoomed=(8, 8, 8), permutation=(0, 1, 2),
    ...                   flips=(False, False, False))[0] >= 4
    True
    """
    grids = [output_coordinates(n, z) for n, z in zip(original, zoomed)]
    box: list[tuple[int, int]] = [(0, 0)] * 3
    for d, (low, high) in enumerate(centres):
        first = max(0, math.ceil(grids[d][low] - _EPS))
        last = min(original[d] - 1, math.floor(grids[d][high] + _EPS))
        if first > last:
            return None
        if flips[d]:
            first, last = original[d] - 1 - last, original[d] - 1 - first
        box[permutation[d]] = (first, last)
    window = tuple(slice(low // cell, high // cell + 1) for low, high in box)
    candidates = np.argwhere(foreground[window])
    if len(candidates) == 0:
        return None
    chosen = candidates[rng.integers(len(candidates))] + [w.start for w in window]
    voxel = [
        int(rng.integers(max(low, c * cell), min(high, (c + 1) * cell - 1) + 1))
        for c, (low, high) in zip(chosen, box)
    ]
    centre = []
    for d in range(3):
        position = voxel[permutation[d]]
        position = original[d] - 1 - position if flips[d] else position
        centre.append(int(np.argmin(np.abs(grids[d] - position))))
    return tuple(centre)


#: Edge of the coarse grid the bias field is drawn on (over the whole volume).
_BIAS_GRID = 17


def augment_intensity(
    region: np.ndarray,
    *,
    seed: int,
    needed: Sequence[tuple[int, int]],
    frame: Sequence[int],
    bias: Any | None,
    augment: Any | None,
) -> np.ndarray:
    """Apply the seeded MONAI bias field and intensity transforms to a region of a volume.

    Parameters
    ----------
    region : (X, Y, Z) ndarray
        Normalised voxels of the box ``needed``.
    seed : int
        :attr:`PatchParams.augment_seed` (< 0: return ``region`` unchanged).
    needed : (3,) sequence of (start, stop)
        The region's box in the (reoriented, zoomed) volume.
    frame : (3,) sequence of int
        That volume's shape: the bias field spans it, as a scanner's does (MONAI draws it
        on a coarse grid over the volume; it is read here at the region's voxels).
    bias, augment : MONAI randomisable transforms or None
        From :func:`volsr.data._options.intensity_transforms`.

    Returns
    -------
    (X, Y, Z) float32 ndarray

    Examples
    --------
    >>> augment_intensity(np.ones((2, 2, 2)), seed=-1, needed=[(0, 2)] * 3, frame=(2, 2, 2),
    ...                   bias=None, augment=None).shape
    (2, 2, 2)
    """
    if seed < 0:
        return region
    bias_seed, augment_seed = (int(v) for v in np.random.SeedSequence(seed).generate_state(2))
    if bias is not None:
        bias.set_random_state(seed=bias_seed)
        field = convert_to_numpy(bias(np.ones((1,) + (_BIAS_GRID,) * 3, np.float32)))[0]
        for d, ((start, stop), n) in enumerate(zip(needed, frame)):
            where = np.arange(start, stop) * (_BIAS_GRID - 1) / max(n - 1, 1)
            field = apply_matrix(field, interpolation_matrix_at(where, _BIAS_GRID, "linear"), d)
        region = region * field.astype(np.float32)
    if augment is not None:
        augment.set_random_state(seed=augment_seed)
        region = convert_to_numpy(augment(region[None]))[0]
    return np.asarray(region, dtype=np.float32)
