"""The one volume type: a lazy array, its axis names, its geometry and spectral coordinates."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import dask.array as da
import numpy as np

from volsr.errors import GeometryError, InvalidDataError
from volsr.geometry import check_affine, crop_affine, voxel_spacing

__all__ = ["Volume", "SPATIAL_AXES", "NONSPATIAL_AXES", "count_nonfinite"]

#: Names of spatial array axes, in the order their affine columns appear.
SPATIAL_AXES = ("i", "j", "k")
#: Names of non-spatial array axes: spectral bands (with wavelengths) and generic channels.
NONSPATIAL_AXES = ("band", "channel")
#: Most dask blocks :func:`count_nonfinite` puts in one graph.
_BLOCKS_PER_PASS = 4096


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A lazy volume with its voxel-to-world geometry.

    Parameters
    ----------
    data : dask.array.Array or array_like, shape follows ``axes``
        The voxels. A NumPy array is wrapped in a single-chunk dask array; readers pass a
        lazy dask array so that no voxel is read until asked.
    affine : (4, 4) array_like
        Maps the spatial voxel indices, in array order (``i``, ``j``, ``k``), to world
        coordinates in mm; stored as a float64 copy. Two spatial axes use its first two
        columns.
    axes : tuple of str
        One name per array axis: spatial axes are ``"i"``, ``"j"``, ``"k"`` (two or three
        of them, in that order), plus at most one of ``"band"`` (spectral) or ``"channel"``.
    wavelengths : (B,) float64 ndarray, optional
        Band centre wavelengths in nm (only with a ``band`` axis).
    fwhm : (B,) float64 ndarray, optional
        Band full widths at half maximum in nm.
    meta : mapping, optional
        Format-specific facts kept for round trips (for example ``"nifti_header"``: the
        raw 348-byte NIfTI-1 header; ``"envi"``: extra ENVI header fields). Read-only.

    Raises
    ------
    GeometryError
        If the affine is invalid or an axis has zero size.
    InvalidDataError
        If the axis names do not match the data's dimensionality or are not allowed.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 5, 6), np.float32), np.diag([1, 1, 3, 1]), ("i", "j", "k"))
    >>> v.spatial_shape, v.spacing.tolist()
    ((4, 5, 6), [1.0, 1.0, 3.0])
    """

    data: da.Array
    affine: np.ndarray
    axes: tuple[str, ...]
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        data = self.data if isinstance(self.data, da.Array) else da.from_array(np.asarray(self.data))
        axes = tuple(self.axes)
        _check_axes(axes, data.shape)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "affine", check_affine(self.affine))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        for name in ("wavelengths", "fwhm"):
            values = getattr(self, name)
            if values is None:
                continue
            values = np.array(values, dtype=np.float64).reshape(-1)
            if "band" not in axes or values.size != data.shape[axes.index("band")]:
                raise InvalidDataError(
                    f"{name} has {values.size} values but the volume has "
                    f"{data.shape[axes.index('band')] if 'band' in axes else 'no'} bands"
                )
            values.setflags(write=False)
            object.__setattr__(self, name, values)
        self.affine.setflags(write=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape (no voxel data read)."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def ndim(self) -> int:
        """Number of array axes."""
        return len(self.axes)

    @property
    def dtype(self) -> np.dtype:
        """Voxel data type."""
        return self.data.dtype

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Array positions of the spatial axes, in affine-column order."""
        return tuple(n for n, name in enumerate(self.axes) if name in SPATIAL_AXES)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Sizes of the spatial axes (voxels)."""
        return tuple(self.shape[n] for n in self.spatial_axes)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size per spatial axis in mm, ``(D,)`` float64."""
        return voxel_spacing(self.affine)[: len(self.spatial_axes)]

    @property
    def band_axis(self) -> int | None:
        """Array position of the spectral axis, or None."""
        return self.axes.index("band") if "band" in self.axes else None

    def replace(self, **changes: Any) -> Volume:
        """Return a copy with some fields replaced (see :func:`dataclasses.replace`).

        Parameters
        ----------
        **changes
            New values of fields (``data``, ``affine``, ``axes``, ...).

        Returns
        -------
        Volume
            The new volume.

        Raises
        ------
        TypeError
            If a name is not a field of :class:`Volume`.

        Examples
        --------
        >>> v = Volume(np.zeros((2, 2, 2)), np.eye(4), ("i", "j", "k"))
        >>> v.replace(affine=2 * np.eye(4) + np.diag([0, 0, 0, -1])).spacing.tolist()
        [2.0, 2.0, 2.0]
        """
        return dataclasses.replace(self, **changes)

    def crop(self, box: Sequence[slice]) -> Volume:
        """Crop (with optional positive steps); the affine follows the crop.

        Parameters
        ----------
        box : sequence of slice
            One slice per array axis (missing trailing axes are kept whole).

        Returns
        -------
        Volume
            The crop, lazily; affine ``A @ [diag(step) | start]`` over the spatial axes,
            wavelengths sliced along the band axis.

        Raises
        ------
        GeometryError
            If a slice is empty or has a non-positive step.

        Examples
        --------
        >>> v = Volume(np.zeros((8, 8, 8)), np.eye(4), ("i", "j", "k"))
        >>> v.crop((slice(2, 6), slice(None), slice(0, 8, 2))).affine[:3, 3].tolist()
        [2.0, 0.0, 0.0]
        """
        slices = list(box) + [slice(None)] * (self.ndim - len(box))
        resolved = [s.indices(n) for s, n in zip(slices, self.shape)]
        if any(step <= 0 or len(range(*r)) == 0 for r in resolved for step in [r[2]]):
            raise GeometryError(f"crop {tuple(slices)} is empty or reversed for shape {self.shape}")
        normalised = tuple(slice(*r) for r in resolved)
        starts = [resolved[n][0] for n in self.spatial_axes]
        steps = [resolved[n][2] for n in self.spatial_axes]
        band = self.band_axis
        spectral = {}
        for name in ("wavelengths", "fwhm"):
            values = getattr(self, name)
            spectral[name] = None if values is None else values[normalised[band]]
        return self.replace(
            data=self.data[normalised], affine=crop_affine(self.affine, starts, steps), **spectral
        )

    def numpy(self) -> np.ndarray:
        """Read all voxels into memory.

        Returns
        -------
        ndarray, shape ``self.shape``, dtype ``self.dtype``
            The voxels.

        Raises
        ------
        FormatError
            If the underlying file cannot be read.

        Examples
        --------
        >>> Volume(np.ones((2, 2, 2)), np.eye(4), ("i", "j", "k")).numpy().sum()
        np.float64(8.0)
        """
        return np.asarray(self.data.compute())


def _check_axes(axes: tuple[str, ...], shape: tuple[int, ...]) -> None:
    if len(axes) != len(shape):
        raise InvalidDataError(f"axes {axes} do not match data with {len(shape)} dimensions")
    spatial = [name for name in axes if name in SPATIAL_AXES]
    other = [name for name in axes if name not in SPATIAL_AXES]
    if tuple(spatial) not in (SPATIAL_AXES[:2], SPATIAL_AXES):
        raise InvalidDataError(f"need spatial axes ('i', 'j') or ('i', 'j', 'k'), got {axes}")
    if len(other) > 1 or any(name not in NONSPATIAL_AXES for name in other):
        raise InvalidDataError(
            f"at most one non-spatial axis from {NONSPATIAL_AXES} is allowed, got {axes}"
        )
    if any(int(n) == 0 for n in shape):
        raise GeometryError(f"zero-size axis in shape {tuple(shape)}")


def count_nonfinite(volume: Volume) -> int:
    """Count NaN and Inf voxels, streaming over the volume's chunks.

    Parameters
    ----------
    volume : Volume
        Any volume; integer volumes return 0 without reading. A volume of many blocks is
        counted in passes of at most 4096 blocks (bounded graph and memory). When
        ``meta["nodata"]`` is NaN (declared no-data pixels), only Inf voxels count.

    Returns
    -------
    int
        Number of voxels that are NaN or +-Inf.

    Raises
    ------
    FormatError
        If the underlying file cannot be read.

    Examples
    --------
    >>> count_nonfinite(Volume(np.array([[[np.nan, 1.0]]]), np.eye(4), ("i", "j", "k")))
    1
    """
    if not np.issubdtype(volume.dtype, np.floating):
        return 0
    data = volume.data
    nodata = volume.meta.get("nodata")
    # NaN declared as the no-data value (ENVI 'data ignore value = nan') marks pixels, not damage.
    bad = da.isinf if isinstance(nodata, float) and math.isnan(nodata) else (lambda x: ~da.isfinite(x))
    # Slabs of block rows: each pass builds a graph of at most _BLOCKS_PER_PASS blocks,
    # so the count streams over a volume of millions of blocks instead of graphing it whole.
    per_row = math.prod(data.numblocks[1:])
    step = max(1, _BLOCKS_PER_PASS // max(per_row, 1))
    return sum(
        int(bad(data.blocks[start : start + step]).sum().compute())
        for start in range(0, data.numblocks[0], step)
    )
