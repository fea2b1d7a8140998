"""Random (LR tile, HR patch) training pairs drawn from many lazy volumes.

:class:`PatchSampler` draws HR patches from volumes opened with :func:`volsr.io.load`
(NIfTI, Zarr, HDF5, ... through dask), reading only the blocks a patch needs through a
byte-bounded LRU :class:`~volsr.data.blocks.BlockCache`, and favouring the foreground (a
coarse per-volume map computed once). Each pair is made by one deterministic function of a
frozen :class:`PatchParams` (STYLE R10: sample parameters, then apply them), in this order:

1. **Normalise** with whole-volume statistics computed once per volume:
   ``clip(x / P99.9(volume), 0, 1)`` (the evaluation protocol; never per patch).
2. **Reorient** (optional): permute the three axes and flip some of them. This happens
   before the degradation, i.e. the pair is drawn from the reoriented volume, so the slice
   lattice and the ``positions`` stay canonical (flipping a finished pair along the slice
   axis would mirror the lattice, and the batch could no longer share ``positions``).
3. **Zoom** (optional): isotropic resampling of the volume to a voxel size ``zoom`` times
   the original (MATLAB-style antialiased cubic, :func:`volsr.resample.antialiased_cubic_matrix`,
   field of view kept), then clipped to [0, 1] again. Only the rows the patch needs are used.
4. **Intensity** (optional, MONAI, seeded per item): ``RandBiasField`` (a field spanning
   the whole volume), ``RandScaleIntensity``, ``RandShiftIntensity``. The clean result is
   the target ``"hr"``.
5. **Noise** (optional): Rician noise at an SNR drawn in a range is added to every HR voxel
   (real scans have noise in every acquired voxel; thick slices average it away).
6. **Thick slices** (Gaussian or box profile, thickness/gap jitter) along the slice axis, or
   along all three axes for an isotropic batch: rows of the whole-volume
   :func:`volsr.degrade.thick_slice` weights, so the region read includes the profile's
   support (4 sigma) and the tile has no border artefact inside the volume.

Slice lattice and ``positions``: see :mod:`volsr.data.pairs`. Each tile's slices lie inside
the volume and the patch starts on a slice boundary; when the origin is a multiple of the
factor (and ``n_lr f`` is an integer: always for integer factors), the tile is exactly
``thick_slice`` of the whole volume restricted to it.

Batches: :meth:`PatchSampler.sample_batch` draws one (factor, slice axis, isotropic) per
batch, shared by its items, because ``positions`` (one 1-D array per axis for the whole batch,
the model contract) and the LR shape depend on them; everything else is drawn per item.
:class:`volsr.data.dataset.PatchDataset` yields such batches (``DataLoader(batch_size=None)``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from volsr.data._options import (
    axis_subset,
    check_rng,
    factor_range_option,
    intensity_transforms,
    optional_range,
    positive_ints,
    probability,
    profile_subset,
)
from volsr.data.blocks import BlockCache, VolumeStats, read_box, volume_stats
from volsr.data.pairs import (
    PatchParams,
    augment_intensity,
    foreground_centre,
    lr_tile_length,
    origin_ranges,
    reorient,
    slice_weights,
    source_box,
    tile_positions,
)
from volsr.errors import InvalidDataError
from volsr.geometry import resampled_shape
from volsr.io import load
from volsr.noise import rician_noise, sample_noise_params
from volsr.resample import apply_matrix
from volsr.volume import SPATIAL_AXES, Volume

__all__ = ["PatchSampler"]

VolumeSpec = str | os.PathLike | Volume | np.ndarray
_EPS = 1e-9
#: Bias field samples per axis over the whole volume (a degree-3 field is smooth at this grid).


class PatchSampler:
    """Draw (LR tile, HR patch) pairs from lazy volumes; see the module docstring.

    Per-volume statistics (intensity reference, foreground map) are computed once, here,
    in the constructing process; workers only open the volumes (by path) and read blocks.

    Parameters
    ----------
    volumes : sequence of str, path, Volume or (X, Y, Z) ndarray
        :func:`volsr.io.load` specs (``"scan.nii.gz"``, ``"x.h5:/group/data"``,
        ``"x.zarr"``), volumes with axes ``("i", "j", "k")``, or arrays. Paths are reopened
        in every process; a Volume or array is pickled as it is (give paths to workers).
    patch_shape : (3,) tuple of int
        HR patch shape (voxels), in patch axis order.
    factor_range : (2,) tuple of float
        Slice factor ``f`` (slice spacing / HR voxel size), uniform in ``[low, high]``,
        ``low >= 1``; one draw per batch.
    integer_factors : bool
        Draw ``f`` uniformly among the integers in ``factor_range`` instead.
    axes : sequence of int
        Patch axes that may be the slice axis (uniformly, one draw per batch).
    thickness_ratio_range : (2,) tuple of float
        Thickness / ``f``, uniform (> 0): below 1 leaves gaps, above 1 overlaps slices.
    profiles : sequence of {"gaussian", "box"}
        Slice profiles, chosen uniformly per item.
    snr_db_range : (2,) tuple of float, optional
        SNR (dB, :mod:`volsr.noise` convention on the normalised volume) of the Rician
        noise added to each HR voxel before slice averaging; None: no noise.
    noisy_target : bool
        With noise, the target ``"hr"`` carries the same noise field as the voxels the LR
        slices average (a real reference scan is noisy: the MSE-optimal estimate of it keeps
        the noise the LR slices carry, and the Rician floor of the background); False: the
        clean patch (the network also learns to denoise).
    isotropic_probability : float
        Probability in [0, 1] that a batch is degraded alike along all three axes (an
        isotropic low-resolution acquisition, for arbitrary-scale models) instead of along
        one slice axis.
    isotropic_factor_range : (2,) tuple of float, optional
        Factor range of those batches (default: ``factor_range``).
    lr_halo : int
        Extra LR slices on each side of the patch in the LR tile (>= 0).
    p_foreground : float
        Probability in [0, 1] that a patch centre is drawn from foreground cells.
    foreground_threshold : float
        Normalised intensity above which a voxel is foreground, in [0, 1).
    foreground_cell : int
        Foreground map cell edge (voxels, >= 1).
    zoom_range : (2,) tuple of float, optional
        Voxel size multiplier, uniform per item (e.g. ``(0.7, 1.3)``); None: no resampling.
    permute_axes : bool
        Permute the volume axes uniformly at random per item (the slice axis then falls
        on any anatomical axis).
    flip_axes : sequence of int
        Patch axes each reversed with probability 1/2 per item.
    scale_range, shift_range : (2,) tuple of float, optional
        Intensity ``x * s + t`` with ``s``, ``t`` uniform in these ranges (MONAI
        ``RandScaleIntensity`` / ``RandShiftIntensity``); None: off.
    bias_field_range : (2,) tuple of float, optional
        MONAI ``RandBiasField`` ``coeff_range`` (e.g. ``(0.0, 0.05)``); the multiplicative
        field spans the whole volume (drawn on a 17^3 grid over it, linearly interpolated at
        the patch); None: off.
    bias_field_degree : int
        Polynomial degree of the bias field (>= 1).
    percentile : float
        Intensity reference percentile in (0, 100].
    cache_bytes : int
        Bound of the block cache (bytes, per process).
    stats_voxels : int
        Most voxels read per volume for the statistics (strided beyond that).

    Raises
    ------
    ValueError
        If an option is out of range, ``volumes`` is empty, or a volume is too small for
        the patch, factor and halo (``InvalidDataError``: a volume without 3 spatial axes
        only; ``FormatError``: unreadable file).

    Examples
    --------
    >>> x = np.zeros((24, 24, 24), np.float32); x[4:20, 4:20, 4:20] = 1.0
    >>> s = PatchSampler([Volume(x, np.eye(4), ("i", "j", "k"))], patch_shape=(8, 8, 8),
    ...                  factor_range=(2.0, 2.0), axes=(2,))
    >>> batch = s.sample_batch(np.random.default_rng(0), batch_size=2)
    >>> tuple(batch["lr"].shape), tuple(batch["hr"].shape), len(batch["positions"][2])
    ((2, 1, 8, 8, 6), (2, 1, 8, 8, 8), 8)
    """

    def __init__(
        self,
        volumes: Sequence[VolumeSpec],
        *,
        patch_shape: tuple[int, int, int] = (64, 64, 64),
        factor_range: tuple[float, float] = (2.0, 5.0),
        integer_factors: bool = False,
        axes: Sequence[int] = (0, 1, 2),
        thickness_ratio_range: tuple[float, float] = (1.0, 1.0),
        profiles: Sequence[str] = ("gaussian",),
        snr_db_range: tuple[float, float] | None = None,
        noisy_target: bool = False,
        isotropic_probability: float = 0.0,
        isotropic_factor_range: tuple[float, float] | None = None,
        lr_halo: int = 1,
        p_foreground: float = 0.9,
        foreground_threshold: float = 0.1,
        foreground_cell: int = 8,
        zoom_range: tuple[float, float] | None = None,
        permute_axes: bool = False,
        flip_axes: Sequence[int] = (),
        scale_range: tuple[float, float] | None = None,
        shift_range: tuple[float, float] | None = None,
        bias_field_range: tuple[float, float] | None = None,
        bias_field_degree: int = 3,
        percentile: float = 99.9,
        cache_bytes: int = 512 * 2**20,
        stats_voxels: int = 2**24,
    ) -> None:
        self.specs = tuple(volumes)
        if not self.specs:
            raise ValueError("volumes must name at least one volume, got none")
        self.patch_shape = positive_ints(patch_shape, "patch_shape", 3, minimum=1)
        self.factor_range = factor_range_option(factor_range, integer=integer_factors)
        self.integer_factors = bool(integer_factors)
        self.axes = axis_subset(axes, "axes", allow_empty=False)
        self.flip_axes = axis_subset(flip_axes, "flip_axes", allow_empty=True)
        self.thickness_ratio_range = optional_range(thickness_ratio_range, "thickness_ratio_range", 0.0)
        self.profiles = profile_subset(profiles)
        self.snr_db_range = optional_range(snr_db_range, "snr_db_range", -math.inf)
        self.noisy_target = bool(noisy_target)
        self.isotropic_probability = probability(isotropic_probability, "isotropic_probability")
        iso_range = self.factor_range if isotropic_factor_range is None else isotropic_factor_range
        self.isotropic_factor_range = factor_range_option(iso_range, integer=integer_factors)
        self.zoom_range = optional_range(zoom_range, "zoom_range", 0.0)
        (self.lr_halo,) = positive_ints((lr_halo,), "lr_halo", 1, minimum=0)
        self.p_foreground = probability(p_foreground, "p_foreground")
        self.permute_axes = bool(permute_axes)
        self._augment, self._bias = intensity_transforms(scale_range, shift_range, bias_field_range,
                                                         bias_field_degree)  # fmt: skip
        self.cache = BlockCache(max_bytes=cache_bytes)
        self._pid, self._handles = os.getpid(), {}
        self.shapes = tuple(self._open(i).spatial_shape for i in range(len(self.specs)))
        self._check_sizes()
        stats = functools.partial(
            volume_stats, percentile=percentile, threshold=foreground_threshold,
            cell=foreground_cell, max_voxels=stats_voxels,
        )  # fmt: skip
        self.stats: tuple[VolumeStats, ...] = tuple(stats(self._open(i).data) for i in range(len(self.specs)))

    def __getstate__(self) -> dict[str, Any]:
        # Open file handles and cached blocks stay in the process that made them.
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, -1
        state["cache"] = BlockCache(max_bytes=self.cache.max_bytes)
        return state

    def valid_origins(
        self,
        volume: int,
        *,
        factor: float,
        axis: int,
        zoom: float = 1.0,
        permutation: tuple[int, int, int] = (0, 1, 2),
        isotropic: bool = False,
    ) -> tuple[tuple[int, int], ...]:
        """Inclusive range of patch origins per axis that keeps every sample inside.

        Parameters
        ----------
        volume : int
            Volume index.
        factor : float
            Slice factor.
        axis : int
            Slice axis of the patch.
        zoom : float
            Voxel size multiplier of the resampled volume.
        permutation : (3,) tuple of int
            Patch axis ``d`` is volume axis ``permutation[d]``.
        isotropic : bool
            Every axis is a slice axis (``axis`` is not used).

        Returns
        -------
        tuple of (low, high)
            ``[0, n_d - P_d]`` in-plane; along each slice axis the LR slices (each
            ``factor`` voxels wide, ``lr_halo`` of them before the patch) lie inside.

        Raises
        ------
        ValueError
            If no origin fits along some axis.

        Examples
        --------
        >>> s = PatchSampler([np.ones((20, 20, 20))], patch_shape=(8, 8, 8), factor_range=(2, 2))
        >>> s.valid_origins(0, factor=2.0, axis=2)
        ((0, 12), (0, 12), (2, 10))
        """
        _, zoomed = self._frames(volume, permutation, zoom)
        ranges = origin_ranges(zoomed, self.patch_shape, slice_axes=(0, 1, 2) if isotropic else (axis,),
                               factor=factor, halo=self.lr_halo)  # fmt: skip
        if any(low > high for low, high in ranges):
            raise ValueError(f"volume {volume} (shape {zoomed} after zoom {zoom}, permutation "
                             f"{permutation}) is too small for patch {self.patch_shape} at factor "
                             f"{factor} along axis {'0, 1, 2' if isotropic else axis}")  # fmt: skip
        return tuple(ranges)

    def draw_factor_axis(self, rng: np.random.Generator) -> tuple[float, int]:
        """Draw the factor and slice axis that one batch shares.

        Parameters
        ----------
        rng : np.random.Generator
            Source of randomness (consumed).

        Returns
        -------
        factor : float
        axis : int

        Raises
        ------
        TypeError
            If ``rng`` is not a ``np.random.Generator``.

        Examples
        --------
        >>> s = PatchSampler([np.ones((20, 20, 20))], patch_shape=(8, 8, 8), factor_range=(2, 3), axes=(1,))
        >>> s.draw_factor_axis(np.random.default_rng(0))[1]
        1
        """
        check_rng(rng)
        factor = self._draw_factor(rng, self.factor_range)
        return factor, int(self.axes[rng.integers(len(self.axes))])

    def _draw_factor(self, rng: np.random.Generator, bounds: tuple[float, float]) -> float:
        low, high = bounds
        if self.integer_factors:
            return float(rng.integers(math.ceil(low), math.floor(high) + 1))
        return float(rng.uniform(low, high))

    def draw_params(
        self, rng: np.random.Generator, *, factor: float, axis: int, isotropic: bool = False
    ) -> PatchParams:
        """Draw the per-item parameters of one pair for a given factor and slice axis.

        Parameters
        ----------
        rng : np.random.Generator
            Source of randomness (consumed).
        factor : float
            Slice factor (from :meth:`draw_factor_axis`).
        axis : int
            Slice axis of the patch.
        isotropic : bool
            Degrade along all three axes (see :class:`PatchParams`).

        Returns
        -------
        PatchParams
            With an origin inside :meth:`valid_origins`.

        Raises
        ------
        TypeError
            If ``rng`` is not a ``np.random.Generator``.

        Examples
        --------
        >>> s = PatchSampler([np.ones((20, 20, 20))], patch_shape=(8, 8, 8), factor_range=(2, 2))
        >>> s.draw_params(np.random.default_rng(0), factor=2.0, axis=0).factor
        2.0
        """
        check_rng(rng)
        volume = int(rng.integers(len(self.specs)))
        permutation = (0, 1, 2)
        if self.permute_axes:
            permutation = tuple(int(v) for v in rng.permutation(3))
        flips = [False, False, False]
        for d in self.flip_axes:
            flips[d] = bool(rng.random() < 0.5)
        zoom = 1.0 if self.zoom_range is None else float(rng.uniform(*self.zoom_range))
        thickness = factor * float(rng.uniform(*self.thickness_ratio_range))
        profile = self.profiles[int(rng.integers(len(self.profiles)))]
        noise = None
        if self.snr_db_range is not None:
            noise = sample_noise_params(
                rng,
                snr_db_range=self.snr_db_range,
                reference_level=self.stats[volume].foreground_mean,
            )
        seed = -1 if self._augment is None and self._bias is None else int(rng.integers(2**32))
        origin = self._draw_origin(rng, volume, factor, axis, zoom, permutation, tuple(flips),
                                   isotropic)  # fmt: skip
        return PatchParams(
            volume=volume, origin=origin, axis=axis, factor=factor, thickness=thickness,
            profile=profile, zoom=zoom, permutation=permutation, flips=tuple(flips),
            noise=noise, augment_seed=seed, isotropic=isotropic,
        )  # fmt: skip

    def make_item(self, params: PatchParams) -> dict[str, Any]:
        """Make the pair that ``params`` describes (deterministic).

        Parameters
        ----------
        params : PatchParams
            From :meth:`draw_params`, a log, or chosen by hand.

        Returns
        -------
        dict
            ``"lr"``: ``(1, *lr_shape)`` float32 tensor; ``"hr"``: ``(1, *patch_shape)``
            float32 tensor (normalised; clean unless ``noisy_target``); ``"positions"``:
            three float64 arrays, the LR-tile coordinates of the patch voxels (:func:`volsr.
            data.pairs.tile_positions` along slice axes, else ``arange(P_d)``); ``"params"``.

        Raises
        ------
        ValueError
            If the origin lies outside :meth:`valid_origins` or the volume index is unknown.

        Examples
        --------
        >>> s = PatchSampler([np.ones((20, 20, 20))], patch_shape=(8, 8, 8), factor_range=(2, 2))
        >>> p = PatchParams(volume=0, origin=(0, 0, 2), axis=2, factor=2.0, thickness=2.0)
        >>> float(s.make_item(p)["lr"].max())
        1.0
        """
        if not 0 <= params.volume < len(self.specs):
            raise ValueError(f"volume index {params.volume} is not in [0, {len(self.specs)})")
        ranges = self.valid_origins(
            params.volume, factor=params.factor, axis=params.axis, zoom=params.zoom,
            permutation=params.permutation, isotropic=params.isotropic,
        )  # fmt: skip
        if any(not low <= o <= high for o, (low, high) in zip(params.origin, ranges)):
            raise ValueError(f"origin {params.origin} is outside the valid ranges {ranges}")
        original, zoomed = self._frames(params.volume, params.permutation, params.zoom)
        slicers = {
            d: slice_weights(
                zoomed[d], origin=params.origin[d], factor=params.factor,
                thickness=params.thickness, profile=params.profile, halo=self.lr_halo,
                lr_length=lr_tile_length(self.patch_shape[d], params.factor, halo=self.lr_halo),
            )
            for d in params.degraded_axes
        }  # fmt: skip
        needed = [(o, o + p) for o, p in zip(params.origin, self.patch_shape)]
        for d, slicer in slicers.items():
            needed[d] = (min(needed[d][0], int(slicer.indices.min())),
                         max(needed[d][1], int(slicer.indices.max()) + 1))  # fmt: skip
        region = self._read_zoomed(params, needed, original, zoomed)
        region = augment_intensity(region, seed=params.augment_seed, needed=needed, frame=zoomed,
                                   bias=self._bias, augment=self._augment)  # fmt: skip
        noisy = region if params.noise is None else rician_noise(region, params.noise)
        target = noisy if self.noisy_target else region
        hr = target[tuple(slice(o - a, o - a + p)
                          for o, (a, _), p in zip(params.origin, needed, self.patch_shape))]  # fmt: skip
        lr = noisy
        for d, slicer in slicers.items():
            lr = apply_matrix(lr, slicer[:, needed[d][0] : needed[d][1]], d)
        return {
            "lr": torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)[None]),
            "hr": torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32)[None]),
            "positions": self._positions(params.factor, params.degraded_axes),
            "params": params.as_dict(),
        }

    def sample_batch(self, rng: np.random.Generator, *, batch_size: int) -> dict[str, Any]:
        """Draw one batch sharing a (factor, slice axis) draw.

        Parameters
        ----------
        rng : np.random.Generator
            Source of randomness (consumed).
        batch_size : int
            Items per batch (>= 1).

        Returns
        -------
        dict
            ``"lr"`` ``(B, 1, *lr_shape)`` and ``"hr"`` ``(B, 1, *patch_shape)`` float32
            tensors, ``"params"`` a dict of ``(B,)`` tensors (``default_collate`` of the
            items), ``"positions"`` a tuple of three 1-D float64 tensors shared by the batch.

        Raises
        ------
        ValueError
            If ``batch_size < 1`` (``TypeError``: ``rng`` is not a Generator).

        Examples
        --------
        >>> s = PatchSampler([np.ones((20, 20, 20))], patch_shape=(8, 8, 8), factor_range=(2, 2))
        >>> s.sample_batch(np.random.default_rng(0), batch_size=3)["params"]["factor"].tolist()
        [2.0, 2.0, 2.0]
        """
        positive_ints((batch_size,), "batch_size", 1, minimum=1)
        factor, axis = self.draw_factor_axis(rng)
        # Drawn only when configured, so a thick-slice stream stays what it was.
        isotropic = self.isotropic_probability > 0 and rng.random() < self.isotropic_probability
        if isotropic:
            factor = self._draw_factor(rng, self.isotropic_factor_range)
        items = [
            self.make_item(self.draw_params(rng, factor=factor, axis=axis, isotropic=isotropic))
            for _ in range(batch_size)
        ]
        batch = default_collate([{k: item[k] for k in ("lr", "hr", "params")} for item in items])
        batch["positions"] = tuple(torch.from_numpy(p) for p in items[0]["positions"])
        return batch

    def _open(self, index: int) -> Volume:
        if self._pid != os.getpid():
            # A forked worker inherits the parent's handles and cache: start afresh.
            self._pid, self._handles = os.getpid(), {}
            self.cache = BlockCache(max_bytes=self.cache.max_bytes)
        volume = self._handles.get(index)
        if volume is None:
            spec = self.specs[index]
            if isinstance(spec, np.ndarray):
                volume = Volume(spec, np.eye(4), SPATIAL_AXES)
            else:
                volume = spec if isinstance(spec, Volume) else load(spec)
            if tuple(volume.axes) != SPATIAL_AXES:
                raise InvalidDataError(
                    f"volume {index} ({type(spec).__name__}) must "
                    f"have axes {SPATIAL_AXES}, got {volume.axes}"
                )
            self._handles[index] = volume
        return volume

    def _positions(self, factor: float, axes: Sequence[int]) -> tuple[np.ndarray, ...]:
        grid = [np.arange(n, dtype=np.float64) for n in self.patch_shape]
        for d in axes:
            grid[d] = tile_positions(self.patch_shape[d], factor, halo=self.lr_halo)
        return tuple(grid)

    def _frames(
        self, volume: int, permutation: Sequence[int], zoom: float
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        original = tuple(self.shapes[volume][p] for p in permutation)
        if zoom == 1.0:
            return original, original
        return original, resampled_shape(original, (1.0 / zoom,) * 3)

    def _check_sizes(self) -> None:
        # Sufficient for every factor <= the largest: m f < P + (2 h + 1) f, plus rounding.
        f_max, h = self.factor_range[1], self.lr_halo
        f_iso = self.isotropic_factor_range[1] if self.isotropic_probability > 0 else 0.0
        factors = [max(f_max if d in self.axes else 0.0, f_iso) for d in range(3)]
        needs = [p + ((2 * h + 1) * f + 2 if f else 0) for p, f in zip(self.patch_shape, factors)]
        zoom = 1.0 if self.zoom_range is None else self.zoom_range[1]
        for index, shape in enumerate(self.shapes):
            zoomed = shape if zoom == 1.0 else resampled_shape(shape, (1.0 / zoom,) * 3)
            wanted = [max(needs)] * 3 if self.permute_axes else needs
            if any(n < w for n, w in zip(zoomed, wanted)):
                raise ValueError(
                    f"volume {index} of shape {shape} ({tuple(zoomed)} at zoom {zoom}) is too "
                    f"small: patch {self.patch_shape} with factors up to {f_max} and lr_halo "
                    f"{h} needs at least {tuple(math.ceil(w) for w in wanted)} voxels"
                )

    def _draw_origin(
        self,
        rng: np.random.Generator,
        volume: int,
        factor: float,
        axis: int,
        zoom: float,
        permutation: tuple[int, int, int],
        flips: tuple[bool, bool, bool],
        isotropic: bool,
    ) -> tuple[int, int, int]:
        ranges = self.valid_origins(
            volume, factor=factor, axis=axis, zoom=zoom, permutation=permutation, isotropic=isotropic
        )
        half = [p // 2 for p in self.patch_shape]
        centre = None
        if rng.random() < self.p_foreground:
            original, zoomed = self._frames(volume, permutation, zoom)
            centre = foreground_centre(
                rng, self.stats[volume].foreground, cell=self.stats[volume].cell,
                centres=[(low + k, high + k) for (low, high), k in zip(ranges, half)],
                original=original, zoomed=zoomed, permutation=permutation, flips=flips,
            )  # fmt: skip
        if centre is None:
            return tuple(int(rng.integers(low, high + 1)) for low, high in ranges)
        return tuple(
            int(np.clip(c - k, low, high)) for c, k, (low, high) in zip(centre, half, ranges)
        )

    def _read_zoomed(
        self,
        params: PatchParams,
        needed: Sequence[tuple[int, int]],
        original: Sequence[int],
        zoomed: Sequence[int],
    ) -> np.ndarray:
        box, matrices = source_box(
            needed, original, zoomed, permutation=params.permutation, flips=params.flips
        )
        raw = read_box(self._open(params.volume).data, box, cache=self.cache, key=params.volume)
        scaled = np.asarray(raw, dtype=np.float64) / self.stats[params.volume].reference
        region = reorient(
            np.clip(scaled, 0.0, 1.0).astype(np.float32),
            permutation=params.permutation,
            flips=params.flips,
        )
        for d, matrix in enumerate(matrices):
            if matrix is not None:
                region = apply_matrix(region, matrix, d)
        if any(matrix is not None for matrix in matrices):
            # Cubic overshoot: keep the protocol's [0, 1] range.
            region = np.clip(region, 0.0, 1.0)
        return np.ascontiguousarray(region)
