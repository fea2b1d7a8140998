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
    check_rng,
    intensity_transforms,
    positive_ints,
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
from volsr.data.sampler_options import SamplerOptions
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
    options : SamplerOptions, optional
        How pairs are drawn (:class:`volsr.data.sampler_options.SamplerOptions`; default:
        its defaults).

    Raises
    ------
    ValueError
        If an option is out of range, ``volumes`` is empty, or a volume is too small for
        the patch, factor and halo (``InvalidDataError``: a volume without 3 spatial axes
        only; ``FormatError``: unreadable file).

    Examples
    --------
    >>> x = np.zeros((24, 24, 24), np.float32); x[4:20, 4:20, 4:20] = 1.0
    >>> s = PatchSampler([Volume(x, np.eye(4), ("i", "j", "k"))], SamplerOptions(patch_shape=(8, 8, 8),
    ... factor_range=(2.0, 2.0), axes=(2,)))
    >>> batch = s.sample_batch(np.random.default_rng(0), batch_size=2)
    >>> tuple(batch["lr"].shape), tuple(batch["hr"].shape), len(batch["positions"][2])
    ((2, 1, 8, 8, 6), (2, 1, 8, 8, 8), 8)
    """

    def __init__(self, volumes: Sequence[VolumeSpec], options: SamplerOptions | None = None) -> None:
        self.specs = tuple(volumes)
        if not self.specs:
            raise ValueError("volumes must name at least one volume, got none")
        self.options = options = SamplerOptions() if options is None else options
        self._augment, self._bias = intensity_transforms(options.scale_range, options.shift_range,
                                                         options.bias_field_range, options.bias_field_degree)  # fmt: skip
        self.cache = BlockCache(max_bytes=options.cache_bytes)
        self._pid, self._handles = os.getpid(), {}
        self.shapes = tuple(self._open(i).spatial_shape for i in range(len(self.specs)))
        self._check_sizes()
        stats = functools.partial(
            volume_stats, percentile=options.percentile, threshold=options.foreground_threshold,
            cell=options.foreground_cell, max_voxels=options.stats_voxels,
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
        >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
        >>> s.valid_origins(0, factor=2.0, axis=2)
        ((0, 12), (0, 12), (2, 10))
        """
        _, zoomed = self._frames(volume, permutation, zoom)
        ranges = origin_ranges(zoomed, self.options.patch_shape, slice_axes=(0, 1, 2) if isotropic else (axis,),
                               factor=factor, halo=self.options.lr_halo)  # fmt: skip
        if any(low > high for low, high in ranges):
            raise ValueError(f"volume {volume} (shape {zoomed} after zoom {zoom}, permutation "
                             f"{permutation}) is too small for patch {self.options.patch_shape} at factor "
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
        >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 3), axes=(1,)))
        >>> s.draw_factor_axis(np.random.default_rng(0))[1]
        1
        """
        check_rng(rng)
        factor = self._draw_factor(rng, self.options.factor_range)
        return factor, int(self.options.axes[rng.integers(len(self.options.axes))])

    def _draw_factor(self, rng: np.random.Generator, bounds: tuple[float, float]) -> float:
        low, high = bounds
        if self.options.integer_factors:
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
        >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
        >>> s.draw_params(np.random.default_rng(0), factor=2.0, axis=0).factor
        2.0
        """
        check_rng(rng)
        volume = int(rng.integers(len(self.specs)))
        permutation = (0, 1, 2)
        if self.options.permute_axes:
            permutation = tuple(int(v) for v in rng.permutation(3))
        flips = [False, False, False]
        for d in self.options.flip_axes:
            flips[d] = bool(rng.random() < 0.5)
        zoom = 1.0 if self.options.zoom_range is None else float(rng.uniform(*self.options.zoom_range))
        thickness = factor * float(rng.uniform(*self.options.thickness_ratio_range))
        profile = self.options.profiles[int(rng.integers(len(self.options.profiles)))]
        noise = None
        if self.options.snr_db_range is not None:
            noise = sample_noise_params(
                rng,
                snr_db_range=self.options.snr_db_range,
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
        >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
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
                thickness=params.thickness, profile=params.profile, halo=self.options.lr_halo,
                lr_length=lr_tile_length(self.options.patch_shape[d], params.factor, halo=self.options.lr_halo),
            )
            for d in params.degraded_axes
        }  # fmt: skip
        needed = [(o, o + p) for o, p in zip(params.origin, self.options.patch_shape)]
        for d, slicer in slicers.items():
            needed[d] = (min(needed[d][0], int(slicer.indices.min())),
                         max(needed[d][1], int(slicer.indices.max()) + 1))  # fmt: skip
        region = self._read_zoomed(params, needed, original, zoomed)
        region = augment_intensity(region, seed=params.augment_seed, needed=needed, frame=zoomed,
                                   bias=self._bias, augment=self._augment)  # fmt: skip
        noisy = region if params.noise is None else rician_noise(region, params.noise)
        target = noisy if self.options.noisy_target else region
        hr = target[tuple(slice(o - a, o - a + p)
                          for o, (a, _), p in zip(params.origin, needed, self.options.patch_shape))]  # fmt: skip
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
        >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
        >>> s.sample_batch(np.random.default_rng(0), batch_size=3)["params"]["factor"].tolist()
        [2.0, 2.0, 2.0]
        """
        positive_ints((batch_size,), "batch_size", 1, minimum=1)
        factor, axis = self.draw_factor_axis(rng)
        # Drawn only when configured, so a thick-slice stream stays what it was.
        isotropic = self.options.isotropic_probability > 0 and rng.random() < self.options.isotropic_probability
        if isotropic:
            factor = self._draw_factor(rng, self.options.isotropic_factor_range)
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
        grid = [np.arange(n, dtype=np.float64) for n in self.options.patch_shape]
        for d in axes:
            grid[d] = tile_positions(self.options.patch_shape[d], factor, halo=self.options.lr_halo)
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
        f_max, h = self.options.factor_range[1], self.options.lr_halo
        f_iso = self.options.isotropic_factor_range[1] if self.options.isotropic_probability > 0 else 0.0
        factors = [max(f_max if d in self.options.axes else 0.0, f_iso) for d in range(3)]
        needs = [p + ((2 * h + 1) * f + 2 if f else 0) for p, f in zip(self.options.patch_shape, factors)]
        zoom = 1.0 if self.options.zoom_range is None else self.options.zoom_range[1]
        for index, shape in enumerate(self.shapes):
            zoomed = shape if zoom == 1.0 else resampled_shape(shape, (1.0 / zoom,) * 3)
            wanted = [max(needs)] * 3 if self.options.permute_axes else needs
            if any(n < w for n, w in zip(zoomed, wanted)):
                raise ValueError(
                    f"volume {index} of shape {shape} ({tuple(zoomed)} at zoom {zoom}) is too "
                    f"small: patch {self.options.patch_shape} with factors up to {f_max} and lr_halo "
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
        half = [p // 2 for p in self.options.patch_shape]
        centre = None
        if rng.random() < self.options.p_foreground:
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
