"""Hyperspectral training data: cubes, LR by the SR protocol, and a patch sampler with all bands.

Protocol (the SSPSR family's, ``shared/research/hsi_anchors.md`` section 4.1):

- a cube is read with :func:`volsr.io.load` (ENVI, .mat v5/v7.3, HDF5, Zarr: any spec) as
  ``(rows, cols, bands)`` and divided by its own maximum (per-cube normalisation; negative
  values of a sensor's dark bands are kept, not clipped);
- LR = :func:`volsr.degrade.bicubic_downsample` (MATLAB ``imresize(HR, 1/s)``, antialiased)
  of the whole cube, or the Gaussian-blur + decimation variant
  (:func:`volsr.degrade.gaussian_decimate`, FWHM = ``s`` HR pixels); the HR target is the
  covered ("modcropped") part, so LR pixel ``k`` covers HR pixels ``[k s, (k+1) s)``;
- patches are aligned crops of both (LR ``p x p``, HR ``ps x ps``, all bands), augmented by
  one of the 8 flips/rotations of rows and columns, and, for band-count independence, by a
  random contiguous band window and a band reversal.

Every batch is a pure function of ``(seed, batch index)``, so a resumed run draws the same
stream (the generic trainer's :data:`~volsr.train.trainer.BatchSource` contract).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from volsr import io
from volsr.data._options import positive_ints
from volsr.degrade import bicubic_downsample, gaussian_decimate
from volsr.geometry import downsampled_grid, output_coordinates

__all__ = ["DEGRADATIONS", "HSIPair", "load_cube", "make_pair", "lr_peak", "HSIPatchDataset"]

#: LR models: MATLAB antialiased bicubic, or Gaussian blur (FWHM = s) + decimation.
DEGRADATIONS = ("bicubic", "gaussian")


def load_cube(spec: str) -> tuple[np.ndarray, float]:
    """Read a cube and divide it by its maximum.

    Parameters
    ----------
    spec : str
        Any :func:`volsr.io.load` spec (``file.mat:key``, ``file.hdr``, ``file.h5:/x``, ...)
        of a volume with axes ``("i", "j", "band")``.

    Returns
    -------
    cube : (rows, cols, bands) float32 ndarray
        The cube over its maximum (largest value 1).
    peak : float
        The maximum divided by (same units as the file), to restore them.

    Raises
    ------
    volsr.errors.FormatError
        If the file cannot be read.
    ValueError
        If the volume is not ``(i, j, band)`` or its maximum is not positive and finite.

    Examples
    --------
    >>> load_cube("missing.mat")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: no such file: missing.mat
    """
    volume = io.load(spec)
    if tuple(volume.axes) != ("i", "j", "band"):
        raise ValueError(f"{spec} must have axes ('i', 'j', 'band'), got {volume.axes}")
    cube = np.asarray(volume.data.compute(), dtype=np.float32)
    peak = float(np.max(cube))
    if not (np.isfinite(peak) and peak > 0):
        raise ValueError(f"{spec}: maximum must be positive and finite, got {peak}")
    return cube / np.float32(peak), peak


@dataclasses.dataclass(frozen=True)
class HSIPair:
    """An HR cube and its LR version on the protocol grid.

    Parameters
    ----------
    name : str
        Where the cube came from.
    hr : (s * h, s * w, bands) float32 ndarray
        The covered part of the normalised cube.
    lr : (h, w, bands) float32 ndarray
        Its degraded version.
    scale : int
        The factor ``s``.
    """

    name: str
    hr: np.ndarray
    lr: np.ndarray
    scale: int


def make_pair(cube: np.ndarray, *, scale: int, degradation: str = "bicubic",
              name: str = "") -> HSIPair:
    """Degrade a cube's rows and columns by an integer factor (see the module docstring).

    Parameters
    ----------
    cube : (rows, cols, bands) ndarray
        Normalised HR cube.
    scale : int
        Integer factor >= 2.
    degradation : {"bicubic", "gaussian"}
        LR model.
    name : str
        Label kept in the pair.

    Returns
    -------
    HSIPair
        Float32 arrays; ``hr`` is ``cube`` cut to the rows and columns the LR grid covers
        (a view of a float32 ``cube``, not a copy: shifted pairs of one cube share memory).

    Raises
    ------
    ValueError
        If ``degradation`` or ``scale`` is invalid or ``cube`` is not 3-D.

    Examples
    --------
    >>> pair = make_pair(np.ones((10, 9, 4)), scale=2)
    >>> pair.lr.shape, pair.hr.shape, float(pair.lr.min())
    ((5, 4, 4), (10, 8, 4), 1.0)
    """
    if degradation not in DEGRADATIONS:
        raise ValueError(f"degradation must be one of {list(DEGRADATIONS)}, got {degradation!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    cube = np.asarray(cube, dtype=np.float32)
    if cube.ndim != 3:
        raise ValueError(f"cube must be (rows, cols, bands), got shape {cube.shape}")
    covered = [downsampled_grid(n, scale)[1] for n in cube.shape[:2]]
    hr = cube[: covered[0], : covered[1]]
    if degradation == "bicubic":
        lr = bicubic_downsample(cube, factors=scale, axes=(0, 1))
    else:
        lr = gaussian_decimate(cube, factors=scale, axes=(0, 1))
    return HSIPair(name=name, hr=hr, lr=np.asarray(lr, dtype=np.float32), scale=int(scale))


def lr_peak(specs: Sequence[str], *, scale: int, degradation: str = "bicubic") -> float:
    """The median over cubes of their LR maximum, each cube divided by its own maximum first.

    What a network trained on these cubes saw as the brightest input: blur lowers the
    peak (x4: 0.24-0.98 over the 14 training cubes of ``attn1d2d.x4``, median 0.75), and
    the network answers best near it (an LR cube scaled to peak 1 instead lost 0.05 dB and
    3 % SAM on San Diego). Exports write it into the card (``input_peak``), and the engine
    maps an input's maximum there.

    Parameters
    ----------
    specs : sequence of str
        Cube specs (:func:`load_cube`).
    scale : int
        Integer factor >= 2.
    degradation : {"bicubic", "gaussian"}
        LR model.

    Returns
    -------
    float
        In (0, 1] for non-negative cubes.

    Raises
    ------
    ValueError
        If ``specs`` is empty (or as :func:`make_pair`).
    volsr.errors.FormatError
        If a cube cannot be read.

    Examples
    --------
    >>> lr_peak([], scale=4)
    Traceback (most recent call last):
    ...
    ValueError: lr_peak needs at least one cube
    """
    if not specs:
        raise ValueError("lr_peak needs at least one cube")
    peaks = [float(make_pair(load_cube(spec)[0], scale=scale, degradation=degradation).lr.max())
             for spec in specs]
    return float(np.median(peaks))


def _band_major(array: np.ndarray) -> np.ndarray:
    # The same (rows, cols, bands) array, stored band by band: a batch is (B, bands, rows,
    # cols), and copying patches out of band-major memory takes half the time of transposing
    # pixel-major ones (bench/hsi_batches.py); whole-spectrum batches kept a GPU waiting.
    return np.ascontiguousarray(array.transpose(2, 0, 1)).transpose(1, 2, 0)


class HSIPatchDataset(IterableDataset):
    """Endless, deterministic batches of aligned LR/HR patches with all (or a window of) bands.

    Parameters
    ----------
    specs : sequence of str or (rows, cols, bands) ndarray
        Cube specs for :func:`load_cube`, or cubes already in memory, taken as they are (not
        divided by their maximum; named ``array N`` in the batches' ``"cubes"``).
    scale : int
        Integer factor >= 2.
    lr_patch : int
        LR patch side in pixels (HR side ``scale * lr_patch``); cubes with fewer LR rows or
        columns are skipped with a warning.
    batch_size : int
        Patches per batch.
    degradation : {"bicubic", "gaussian"}
        LR model.
    augment : bool
        Random flips/rotations of rows and columns.
    band_window_probability : float
        Probability that a batch mixes cubes, each patch cut to a random contiguous window
        of one common band count in ``[min_bands, min(max_bands, fewest bands among the
        drawn cubes)]``; otherwise the batch comes from one cube with all its bands.
    min_bands : int
        Smallest band window (>= 2).
    max_bands : int or None
        Largest band window (>= ``min_bands``; None: the drawn cubes' fewest bands). Small
        windows make a step cheaper (the network's cost grows with the band count) while
        every patch keeps its full spatial extent.
    reverse_probability : float
        Probability that a batch's bands are reversed.
    grid_phases : int
        LR sampling grids per spatial axis (1 to ``scale``): each cube is also degraded
        after cutting ``round(k * scale / grid_phases)`` HR rows and columns off its start
        (``k < grid_phases``), so the same scene gives LR pixels centred elsewhere: up to
        ``scale**2`` distinct pairs per cube (scarce training scenes, and every pair obeys
        the same degradation).
    seed : int
        Seed of the stream.

    Raises
    ------
    ValueError
        If an option is out of range or no cube is large enough.

    Notes
    -----
    Batches are dicts: ``"lr"`` ``(B, bands, p, p)`` and ``"hr"`` ``(B, bands, sp, sp)``
    float32 tensors, ``"positions"`` (``output_coordinates(p, s p)`` per axis) and
    ``"cubes"`` (names). Iterating splits the stream between DataLoader workers;
    :meth:`batches` is the trainer's ``BatchSource``.

    Examples
    --------
    >>> HSIPatchDataset([], scale=2, lr_patch=8, batch_size=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: no cube has at least 8 LR rows and columns ...
    """

    def __init__(
        self,
        specs: Sequence[str | np.ndarray],
        *,
        scale: int,
        lr_patch: int,
        batch_size: int,
        degradation: str = "bicubic",
        augment: bool = True,
        band_window_probability: float = 0.5,
        min_bands: int = 24,
        max_bands: int | None = None,
        reverse_probability: float = 0.5,
        grid_phases: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value, low in (("lr_patch", lr_patch, 1), ("batch_size", batch_size, 1),
                                 ("min_bands", min_bands, 2)):
            positive_ints(value, name, 1, minimum=low)
        if isinstance(grid_phases, bool) or not isinstance(grid_phases, int) or not (
                1 <= grid_phases <= scale):
            raise ValueError(f"grid_phases must be an integer in [1, scale={scale}], got {grid_phases!r}")
        if max_bands is not None and (isinstance(max_bands, bool) or not isinstance(max_bands, int)
                                      or max_bands < min_bands):
            raise ValueError(f"max_bands must be None or an integer >= min_bands ({min_bands}), "
                             f"got {max_bands!r}")
        for name, value in (("band_window_probability", band_window_probability),
                            ("reverse_probability", reverse_probability)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        self.scale, self.lr_patch, self.batch_size = scale, lr_patch, batch_size
        self.augment, self.min_bands, self.max_bands, self.seed = augment, min_bands, max_bands, seed
        self.p_window, self.p_reverse = band_window_probability, reverse_probability
        offsets = sorted({round(k * scale / grid_phases) for k in range(grid_phases)})
        self.pairs = self._load(specs, degradation, offsets)
        sizes = np.array([p.lr.shape[0] * p.lr.shape[1] for p in self.pairs], dtype=np.float64)
        self.weights = sizes / sizes.sum()

    def _load(self, specs: Sequence[str | np.ndarray], degradation: str, offsets: Sequence[int]
              ) -> list[HSIPair]:
        pairs = []
        for number, spec in enumerate(specs):
            in_memory = isinstance(spec, np.ndarray)
            name = f"array {number}" if in_memory else str(spec)
            cube = _band_major(np.asarray(spec, np.float32) if in_memory else load_cube(spec)[0])  # HR crops: views
            shifted = [make_pair(cube[dr:, dc:], scale=self.scale, degradation=degradation,
                                 name=name) for dr in offsets for dc in offsets]
            shifted = [dataclasses.replace(pair, lr=_band_major(pair.lr)) for pair in shifted]
            large = [pair for pair in shifted if min(pair.lr.shape[:2]) >= self.lr_patch]
            if not large:
                warnings.warn(f"skipping {name}: LR {shifted[0].lr.shape[:2]} is smaller than "
                              f"lr_patch={self.lr_patch}", stacklevel=3)
            pairs.extend(large)
        if not pairs:
            raise ValueError(f"no cube has at least {self.lr_patch} LR rows and columns "
                             f"at scale {self.scale} (got {len(specs)} specs)")
        return pairs

    def batch(self, index: int) -> dict[str, Any]:
        """Batch number ``index`` of the stream (a pure function of the seed and index).

        Parameters
        ----------
        index : int
            Zero-based batch number.

        Returns
        -------
        dict
            See the class Notes.

        Examples
        --------
        See ``tests/data/test_hsi.py``.
        """
        rng = np.random.default_rng([self.seed, index])
        mixed = rng.random() < self.p_window
        if mixed:
            chosen = rng.choice(len(self.pairs), size=self.batch_size, p=self.weights)
            fewest = min(self.pairs[i].lr.shape[2] for i in chosen)
            if self.max_bands is not None:
                fewest = min(fewest, self.max_bands)
            count = int(rng.integers(min(self.min_bands, fewest), fewest + 1))
        else:
            chosen = np.full(self.batch_size, rng.choice(len(self.pairs), p=self.weights))
            count = self.pairs[chosen[0]].lr.shape[2]
        reverse = rng.random() < self.p_reverse
        lrs, hrs = [], []
        for i in chosen:
            lr, hr = self._patch(self.pairs[i], count, rng)
            if reverse:
                lr, hr = lr[:, :, ::-1], hr[:, :, ::-1]
            lrs.append(lr)
            hrs.append(hr)
        p, s = self.lr_patch, self.scale
        grid = output_coordinates(p, s * p)

        def stack(patches: list[np.ndarray]) -> torch.Tensor:  # (rows, cols, bands) views -> (B, bands, rows, cols)
            return torch.from_numpy(np.stack([patch.transpose(2, 0, 1) for patch in patches]))

        return {"lr": stack(lrs), "hr": stack(hrs), "positions": (grid, grid.copy()),
                "cubes": [self.pairs[i].name for i in chosen]}

    def _patch(self, pair: HSIPair, count: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
        p, s = self.lr_patch, self.scale
        r = int(rng.integers(0, pair.lr.shape[0] - p + 1))
        c = int(rng.integers(0, pair.lr.shape[1] - p + 1))
        b = int(rng.integers(0, pair.lr.shape[2] - count + 1))
        lr = pair.lr[r : r + p, c : c + p, b : b + count]
        hr = pair.hr[r * s : (r + p) * s, c * s : (c + p) * s, b : b + count]
        if self.augment:
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            lr, hr = np.rot90(lr, turns, axes=(0, 1)), np.rot90(hr, turns, axes=(0, 1))
            if flip:
                lr, hr = lr[::-1], hr[::-1]
        return lr, hr

    def batches(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Batches ``start, start + 1, ...`` (the trainer's ``BatchSource``).

        Parameters
        ----------
        start : int
            First batch number.

        Returns
        -------
        iterator of dict
            Endless.

        Examples
        --------
        See ``tests/data/test_hsi.py``.
        """
        index = start
        while True:
            yield self.batch(index)
            index += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        index = worker
        while True:
            yield self.batch(index)
            index += workers
