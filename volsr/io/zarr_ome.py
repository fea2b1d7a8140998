"""Zarr v3 directory stores with OME-Zarr (NGFF v0.5) metadata: lazy read, chunked write.

Layout written (``volume.zarr/``)::

    zarr.json        group; attributes {"ome": {NGFF v0.5 multiscales}, "volsr": {...}}
    0/               the image, full resolution, zstd-compressed chunks
    1/, 2/, ...      optional coarser levels (the engine's ``pyramid``): 2x block means per
                     spatial axis, affine from :func:`volsr.geometry.pyramid_affine`; read
                     only by viewers, the reader here reads the first dataset (level 0)

Axis order. NGFF requires the ``channel`` axis to come before the ``space`` axes and the
space axes to be last. Spatial axes keep our array order and are named ``z, y, x`` for
``i, j, k`` (``y, x`` for ``i, j``): array order is what napari and ome-zarr-py display (the
last two axes on screen), and the NGFF names are only labels of array axes, so naming
``i`` "z" moves no data. A ``band``/``channel`` axis is stored *first* on disk (named
``c``, type ``channel``) so that napari opens a cube as a channel stack of images; the
reader moves it back to where the volume had it. NGFF can express only per-axis scale and
translation, so the full voxel-to-world affine (oblique or flipped) is kept under the
``"volsr"`` attribute and preferred on read; ``scale`` holds the voxel spacing (column
norms, mm, unsigned) and ``translation`` voxel 0's centre along each array axis's own world
axis (for an ENVI cube: lines get the northing, samples the easting), which is exact for
an axis-aligned affine with positive spacing; a flipped axis is mirrored about voxel 0 in
the NGFF frame, and an oblique affine gets world x, y, z for ``i, j, k`` (approximate).
Pyramid levels follow level 0 in that frame: ``s_0 2**k`` and ``t_0 + s_0 (2**k - 1) / 2``
(:func:`volsr.geometry.pyramid_transform`). Foreign stores without ``"volsr"`` get the
affine ``diag(scale) | translation`` (converted to mm). ``Volume.meta`` is not stored,
except the no-data value (``meta["nodata"]``, in ``"volsr"``; NaN and infinities as the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``), which a re-read restores.

Units. The affine is always in mm; the NGFF length unit of the space axes (``micrometer``,
``nanometer``, ...) is kept in ``meta["ngff_unit"]`` and the writer expresses ``scale`` and
``translation`` in it, so a microscopy store keeps its unit through volsr. A missing unit
means mm; an unknown one is refused. NGFF 0.3 axes (plain strings such as ``"z"``) are read
as space axes (``t``: time, ``c``: channel).

Hostile stores. Empty ``multiscales`` or ``datasets`` lists, dataset paths with ``..``,
absurd shapes (:func:`volsr.io._common.check_shape`), complex or non-numeric dtypes are
refused at load; an undecodable chunk raises a FormatError naming it when read
(:mod:`volsr.io._zarr_array`). Chunks absent from disk read as the fill value, as the Zarr
specification says: :func:`missing_chunks` counts them.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
import zarr.codecs
import zarr.errors
from zarr.storage import LocalStore

from volsr.errors import FormatError, GeometryError, VolsrError
from volsr.geometry import check_affine, pyramid_transform, voxel_spacing
from volsr.io._common import Format, SaveOptions, check_shape, storable_dtype, voxel_dtype
from volsr.io._zarr_array import count_missing_chunks, zarr_dask
from volsr.volume import SPATIAL_AXES, Volume

__all__ = [
    "FORMAT", "load_zarr", "save_zarr", "missing_chunks", "default_chunks", "disk_order",
    "ome_attributes",
]  # fmt: skip

_NGFF_VERSION = "0.5"
_IMAGE_PATH = "0"
_SPACE_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}
#: Length units NGFF allows (UDUNITS-2 names) that we convert to mm.
_MM_PER_UNIT = {
    "meter": 1e3, "decimeter": 1e2, "centimeter": 10.0, "millimeter": 1.0,
    "micrometer": 1e-3, "nanometer": 1e-6, "angstrom": 1e-7, "picometer": 1e-9,
    "kilometer": 1e6, "inch": 25.4, "foot": 304.8,
}  # fmt: skip
#: Common spellings that are not UDUNITS-2 names.
_UNIT_ALIASES = {"mm": "millimeter", "um": "micrometer", "\u00b5m": "micrometer", "micron": "micrometer",
                 "nm": "nanometer", "cm": "centimeter", "m": "meter"}  # fmt: skip
_OPEN_ERRORS = (zarr.errors.BaseZarrError, OSError, ValueError, KeyError, TypeError)
#: What malformed JSON metadata raises when walked (a list where a dict belongs, ...).
_METADATA_ERRORS = (*_OPEN_ERRORS, IndexError, AttributeError)
#: The ``Volume.meta`` key of the no-data value (as :data:`volsr.engine.nodata.NODATA_KEY`).
_NODATA = "nodata"
#: Non-finite floats as JSON strings (the Zarr v3 spelling of fill values).
_JSON_FLOATS_OUT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_JSON_FLOATS_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: NGFF 0.3 axis names and their types.
_V03_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def default_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Default chunk shape: at most 64 voxels per axis (64^3 float32 voxels = 1 MiB).

    Parameters
    ----------
    shape : tuple of int
        Array shape, any axis order.

    Returns
    -------
    tuple of int
        ``min(n, 64)`` per axis.

    Examples
    --------
    >>> default_chunks((300, 20, 64))
    (64, 20, 64)
    """
    return tuple(min(int(n), 64) for n in shape)


def _disk_order(axes: tuple[str, ...]) -> list[int]:
    """Volume-axis positions in on-disk order: the non-spatial axis first (NGFF)."""
    other = [n for n, name in enumerate(axes) if name not in SPATIAL_AXES]
    return other + [n for n, name in enumerate(axes) if name in SPATIAL_AXES]


def disk_order(axes: tuple[str, ...]) -> list[int]:
    """Volume-axis positions in on-disk order (a band/channel axis first, as NGFF wants).

    Parameters
    ----------
    axes : tuple of str
        The volume's axis names.

    Returns
    -------
    list of int

    Examples
    --------
    >>> disk_order(("i", "j", "band"))
    [2, 0, 1]
    """
    return _disk_order(axes)


def ome_attributes(volume: Volume, *, levels: int = 1) -> dict[str, Any]:
    """The group attributes :func:`save_zarr` writes (``"ome"`` NGFF v0.5 and ``"volsr"``).

    For writers that fill the image array themselves (the out-of-core engine) and write
    these attributes last, so that a store without them is visibly incomplete.

    Parameters
    ----------
    volume : Volume
        Supplies axes, affine, wavelengths, fwhm and ``meta["nodata"]`` (the data is not read).
    levels : int
        Multiscale datasets ``"0"`` .. ``str(levels - 1)``; level ``k`` gets level 0's
        ``scale`` times ``2**k`` and ``translation`` plus ``scale (2**k - 1) / 2`` on the
        space axes (:func:`volsr.geometry.pyramid_transform`: the NGFF image of
        :func:`volsr.geometry.pyramid_affine`), channel axes unchanged. The ``"volsr"``
        affine is level 0's.

    Returns
    -------
    dict
        ``{"ome": ..., "volsr": ...}``, JSON-able.

    Raises
    ------
    GeometryError
        If the affine is invalid, or ``levels`` is not an integer >= 1.
    ValueError
        If ``meta["nodata"]`` is not a number.

    Examples
    --------
    >>> v = Volume(np.zeros((2, 3, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> ome_attributes(v)["ome"]["multiscales"][0]["datasets"][0]["path"]
    '0'
    >>> ome_attributes(v, levels=2)["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"]
    [{'type': 'scale', 'scale': [2.0, 2.0, 2.0]}, {'type': 'translation', 'translation': [0.5, 0.5, 0.5]}]
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise GeometryError(f"levels must be an integer >= 1, got {levels!r}")
    order = _disk_order(volume.axes)
    return {"ome": _ngff_metadata(volume, order, levels=levels), "volsr": _volsr_metadata(volume)}


def _ngff_metadata(volume: Volume, order: list[int], *, levels: int = 1) -> dict[str, Any]:
    unit = str(volume.meta.get("ngff_unit", "millimeter"))
    unit = unit if unit in _MM_PER_UNIT else "millimeter"
    n_space = len(volume.spatial_axes)
    axes = []
    for position in order:
        label = volume.axes[position]
        if label in SPATIAL_AXES:
            name = _SPACE_NAMES[n_space][SPATIAL_AXES.index(label)]
            axes.append({"name": name, "type": "space", "unit": unit})
        else:
            axes.append({"name": "c", "type": "channel"})
    scale, translation = _space_transform(volume.affine, n_space)
    datasets = [
        {"path": _IMAGE_PATH if level == 0 else str(level),
         "coordinateTransformations": _transforms(volume, order, *pyramid_transform(scale, translation, level),
                                                  _MM_PER_UNIT[unit])}
        for level in range(levels)
    ]  # fmt: skip
    return {"version": _NGFF_VERSION, "multiscales": [{"axes": axes, "datasets": datasets}]}


def _space_transform(affine: np.ndarray, n_space: int) -> tuple[np.ndarray, np.ndarray]:
    """Level 0's NGFF scale and translation (mm) per spatial array axis ``i, j[, k]``.

    Scale: the column norms (unsigned spacing). Translation of axis ``a``: voxel 0's world
    coordinate along the world axis that ``a``'s affine column points along, when every
    spatial column is parallel to a distinct world axis (flips and permutations included:
    an ENVI cube's lines axis gets the northing, its samples axis the easting). An oblique
    affine has no such axis; axis ``a`` then gets world coordinate ``a`` (x for ``i``, ...),
    an approximation only (the exact affine is in the ``"volsr"`` record).
    """
    columns = np.abs(affine[:3, :n_space])
    spacing = voxel_spacing(affine)[:n_space]
    rows = np.argmax(columns, axis=0)
    off_axis = columns.copy()
    off_axis[rows, np.arange(n_space)] = 0.0
    aligned = len(set(rows.tolist())) == n_space and bool(np.all(off_axis.max(axis=0) <= 1e-9 * spacing))
    origin = affine[:3, 3]
    return spacing, origin[rows] if aligned else origin[:n_space]


def _transforms(
    volume: Volume, order: list[int], scale: np.ndarray, translation: np.ndarray, unit_mm: float,
) -> list[dict[str, Any]]:  # fmt: skip
    """NGFF ``scale`` and ``translation`` in disk order from per-spatial-axis values (mm)."""
    disk_scale, disk_translation = [], []
    for position in order:
        label = volume.axes[position]
        index = SPATIAL_AXES.index(label) if label in SPATIAL_AXES else None
        disk_scale.append(1.0 if index is None else float(scale[index] / unit_mm))
        disk_translation.append(0.0 if index is None else float(translation[index] / unit_mm))
    return [{"type": "scale", "scale": disk_scale}, {"type": "translation", "translation": disk_translation}]


def _volsr_metadata(volume: Volume) -> dict[str, Any]:
    record: dict[str, Any] = {"affine": volume.affine.tolist(), "axes": list(volume.axes)}
    for key in ("wavelengths", "fwhm"):
        values = getattr(volume, key)
        if values is not None:
            record[key] = values.tolist()
    nodata = volume.meta.get(_NODATA)
    if nodata is not None:
        try:
            value = float(nodata)
        except (TypeError, ValueError):
            raise ValueError(f"meta[{_NODATA!r}] must be a number, got {nodata!r}") from None
        record[_NODATA] = value if math.isfinite(value) else _JSON_FLOATS_OUT[str(value)]
    return record


def _nodata_meta(record: dict[str, Any], path: Path) -> dict[str, float]:
    """``{"nodata": value}`` from a ``"volsr"`` record, or ``{}`` when it has none."""
    value = record.get(_NODATA)
    if value is None:
        return {}
    if isinstance(value, str) and value in _JSON_FLOATS_IN:
        return {_NODATA: _JSON_FLOATS_IN[value]}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FormatError(f"{path}: 'volsr' no-data value {value!r:.80} is not a number")
    return {_NODATA: float(value)}


def _check_chunks(chunks: tuple[int, ...] | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    if chunks is None:
        return default_chunks(shape)
    if len(chunks) != len(shape) or any(int(c) < 1 for c in chunks):
        raise ValueError(f"chunks must give one positive size per array axis of shape {shape}, got {chunks}")
    return tuple(min(int(c), n) for c, n in zip(chunks, shape, strict=True))


def save_zarr(volume: Volume, path: Path, key: str | None, options: SaveOptions) -> None:
    """Write a volume as an OME-Zarr (NGFF v0.5) image in a new zarr v3 directory store.

    Chunks are computed and written one dask block at a time (the data is rechunked to
    the zarr chunk grid first, so every chunk is written exactly once).

    Parameters
    ----------
    volume : Volume
        Any volume; its axes, affine, wavelengths, fwhm and ``meta["nodata"]`` are stored.
    path : Path
        New directory (must not exist).
    key : None
        Zarr stores take no ``:key``.
    options : SaveOptions
        ``chunks``: chunk shape in the volume's axis order; default :func:`default_chunks`.

    Returns
    -------
    None

    Raises
    ------
    FormatError
        If a key is given, or the store cannot be created.
    ValueError
        If ``options.chunks`` does not match the volume's dimensionality, or
        ``meta["nodata"]`` is not a number.

    Examples
    --------
    >>> import tempfile
    >>> v = Volume(np.ones((4, 5, 6), np.float32), np.diag([2.0, 2, 3, 1]), ("i", "j", "k"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_zarr(v, Path(d) / "v.zarr", None, SaveOptions())
    ...     load_zarr(Path(d) / "v.zarr", None).spacing.tolist()
    [2.0, 2.0, 3.0]
    """
    if key is not None:
        raise FormatError(f"zarr stores take no ':key', got {key!r} for {path}")
    order = _disk_order(volume.axes)
    chunks = _check_chunks(options.chunks, volume.shape)
    disk_chunks = tuple(chunks[n] for n in order)
    data = volume.data.transpose(order)
    try:
        group = zarr.open_group(store=LocalStore(path), mode="w-", zarr_format=3)
        group.attrs.update({"ome": _ngff_metadata(volume, order),
                            "volsr": _volsr_metadata(volume)})  # fmt: skip
        names = [axis["name"] for axis in group.attrs["ome"]["multiscales"][0]["axes"]]
        array = group.create_array(
            _IMAGE_PATH, shape=data.shape, chunks=disk_chunks, dtype=data.dtype,
            compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=names,
        )  # fmt: skip
    except _OPEN_ERRORS as error:
        raise FormatError(f"cannot create zarr store {path}: {error}") from error
    # Whole zarr chunks per dask block: no two tasks touch one chunk, so no lock is needed.
    da.store(data.rechunk(disk_chunks), array, lock=False)


def _open(path: Path) -> Any:
    if not Path(path).exists():
        raise FormatError(f"no such file: {path}")
    try:
        return zarr.open(store=LocalStore(path, read_only=True), mode="r")
    except _OPEN_ERRORS as error:
        raise FormatError(f"{path} is not a readable zarr store: {error}") from error


def load_zarr(path: Path, key: str | None, *, allow_external: bool = False) -> Volume:
    """Open an OME-Zarr image, or a plain zarr array, lazily.

    Parameters
    ----------
    path : Path
        A zarr directory store: an OME-Zarr group (image at its first ``datasets`` path),
        or a bare 2-D or 3-D array (axes ``i, j[, k]``, identity affine).
    key : None
        Zarr stores take no ``:key``.
    allow_external : bool
        Ignored (a store is read from its own folder only).

    Returns
    -------
    Volume
        Dask array over the zarr chunks (nothing read but metadata). The affine is the
        stored ``"volsr"`` affine if present, else ``diag(scale) | translation`` in mm.
        Foreign channel axes become a trailing ``channel`` axis; size-1 time axes are dropped.
        Dtype as stored in native byte order (bool as uint8); ``meta["ngff_unit"]`` holds
        the NGFF space unit, ``meta["nodata"]`` the no-data value a volsr store records.

    Raises
    ------
    FormatError
        If the store is missing or broken, its metadata cannot describe a volume (empty
        ``multiscales`` or ``datasets``, unknown unit), its shape is absurd, or its dtype
        is complex or not numeric.

    Examples
    --------
    >>> load_zarr(Path("missing.zarr"), None)
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: no such file: missing.zarr
    """
    if key is not None:
        raise FormatError(f"zarr stores take no ':key', got {key!r} for {path}")
    node = _open(path)
    try:
        if isinstance(node, zarr.Array):
            return _plain_array(node, path)
        return _ome_image(node, path)
    except (VolsrError, *_METADATA_ERRORS) as error:
        if isinstance(error, FormatError):
            raise
        raise FormatError(f"{path}: cannot read the image metadata: {error}") from error


def missing_chunks(path: Path) -> tuple[int, int]:
    """Count the chunks of a store's image that are not on disk (they read as fill value).

    Lists the chunk files only: no chunk is read, so this is cheap even for large stores.

    Parameters
    ----------
    path : Path
        A ``.zarr`` store that :func:`load_zarr` reads.

    Returns
    -------
    missing : int
        Chunks (shards, for a sharded array) of the image's grid that have no file.
    total : int
        Chunks (shards) in the grid.

    Raises
    ------
    FormatError
        If the store cannot be read as :func:`load_zarr` reads it.

    Examples
    --------
    >>> import tempfile
    >>> v = Volume(np.ones((4, 4, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_zarr(v, Path(d) / "v.zarr", None, SaveOptions(chunks=(2, 4, 4)))
    ...     missing_chunks(Path(d) / "v.zarr")
    (0, 2)
    """
    node = _open(path)
    try:
        array = node if isinstance(node, zarr.Array) else _image_array(node, path)[0]
        return count_missing_chunks(path, array)
    except (VolsrError, *_METADATA_ERRORS) as error:
        if isinstance(error, FormatError):
            raise
        raise FormatError(f"{path}: cannot list the image's chunks: {error}") from error


def _lazy(array: Any, path: Path) -> da.Array:
    where = f"zarr store {path}" + (f" (array {array.path})" if array.path else "")
    check_shape(array.shape, where)
    return zarr_dask(path, array.path, array, voxel_dtype(array.dtype, where))


def _plain_array(array: Any, path: Path) -> Volume:
    if array.ndim not in (2, 3):
        raise FormatError(f"a plain zarr array needs 2 or 3 dimensions, got shape {array.shape}")
    return Volume(_lazy(array, path), np.eye(4), SPATIAL_AXES[: array.ndim])


def _image_array(group: Any, path: Path) -> tuple[Any, dict, dict]:
    """The first dataset of the first multiscale: (array, multiscale, dataset)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)  # NGFF v0.4 (zarr v2) keeps multiscales at the top level
    if not isinstance(ome, dict) or "multiscales" not in ome:
        raise FormatError(f"{path} is a zarr group without OME-Zarr 'multiscales' metadata")
    multiscales = ome["multiscales"]
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise FormatError(f"{path}: OME-Zarr 'multiscales' is empty or not a list of images: {multiscales!r:.80}")
    multiscale = multiscales[0]
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise FormatError(f"{path}: the OME-Zarr multiscale has no 'datasets' (no image to read): {datasets!r:.80}")
    dataset = datasets[0]
    name = dataset.get("path")
    if not isinstance(name, str) or any(p in ("", ".", "..") for p in name.split("/")):
        raise FormatError(f"{path}: OME-Zarr dataset path {name!r} is not a path inside the store")
    array = group.get(name)
    if not isinstance(array, zarr.Array):
        raise FormatError(f"{path}: OME-Zarr dataset {name!r} is not an array in the store")
    return array, multiscale, dataset


def _ome_image(group: Any, path: Path) -> Volume:
    array, multiscale, dataset = _image_array(group, path)
    axes = _ngff_axes(multiscale.get("axes"), array.ndim, path)
    if len(axes) != array.ndim:
        raise FormatError(f"{path}: {len(axes)} NGFF axes for an array of shape {array.shape}")
    data = _lazy(array, path)
    unit = _space_unit(axes, path)
    record = dict(group.attrs).get("volsr")
    if record is not None:
        return _volsr_image(data, record, path).replace(meta={"ngff_unit": unit, **_nodata_meta(record, path)})
    return _foreign_image(data, axes, multiscale, dataset, path).replace(meta={"ngff_unit": unit})


def _ngff_axes(axes: Any, ndim: int, path: Path) -> list[dict[str, Any]]:
    """NGFF axes as dicts: absent -> ``z, y, x`` space axes; 0.3 strings -> typed dicts."""
    if not axes:
        return [{"name": n, "type": "space"} for n in "zyx"[-ndim:]]
    if not isinstance(axes, list):
        raise FormatError(f"{path}: NGFF 'axes' must be a list, got {axes!r:.80}")
    result = []
    for axis in axes:
        if isinstance(axis, str):  # NGFF 0.3
            axis = {"name": axis, "type": _V03_TYPES.get(axis.lower(), "space")}
        if not isinstance(axis, dict) or not isinstance(axis.get("name"), str):
            raise FormatError(f"{path}: NGFF axis {axis!r:.80} has no name")
        result.append(axis)
    return result


def _unit_factor(unit: Any, path: Path) -> float:
    if unit is None:
        return 1.0
    name = _UNIT_ALIASES.get(str(unit).strip().lower(), str(unit).strip().lower())
    if name not in _MM_PER_UNIT:
        raise FormatError(f"{path}: unknown NGFF space unit {unit!r}; known: {', '.join(_MM_PER_UNIT)}")
    return _MM_PER_UNIT[name]


def _space_unit(axes: list[dict[str, Any]], path: Path) -> str:
    """The common unit of the space axes (UDUNITS name), ``"millimeter"`` if none or mixed."""
    units = set()
    for axis in axes:
        if axis.get("type", "space" if axis["name"] in ("z", "y", "x") else "channel") == "space":
            _unit_factor(axis.get("unit"), path)
            raw = str(axis.get("unit") or "millimeter").strip().lower()
            units.add(_UNIT_ALIASES.get(raw, raw))
    return units.pop() if len(units) == 1 else "millimeter"


def _volsr_image(data: da.Array, record: dict[str, Any], path: Path) -> Volume:
    axes = tuple(str(a) for a in record["axes"])
    order = _disk_order(axes)
    if len(order) != data.ndim:
        raise FormatError(f"{path}: 'volsr' axes {axes} do not match the array shape {data.shape}")
    volume_order = [order.index(n) for n in range(len(axes))]
    return Volume(
        data.transpose(volume_order), check_affine(np.asarray(record["affine"], dtype=np.float64)),
        axes, wavelengths=record.get("wavelengths"), fwhm=record.get("fwhm"),
    )  # fmt: skip


def _foreign_image(data: da.Array, axes: list, multiscale: dict, dataset: dict, path: Path) -> Volume:
    scale, translation = _compose_transforms(
        dataset.get("coordinateTransformations", []), multiscale.get("coordinateTransformations", []),
        data.ndim,
    )  # fmt: skip
    kinds = [axis.get("type", "space" if axis["name"] in ("z", "y", "x") else "channel") for axis in axes]
    space = [n for n, kind in enumerate(kinds) if kind == "space"]
    other = [n for n, kind in enumerate(kinds) if kind != "space"]
    drop = [n for n in other if kinds[n] == "time" and data.shape[n] == 1]
    other = [n for n in other if n not in drop]
    if len(space) not in (2, 3) or len(other) > 1:
        raise FormatError(f"{path}: cannot map NGFF axes {[a['name'] for a in axes]} to a volume")
    data = data[tuple(0 if n in drop else slice(None) for n in range(data.ndim))]
    kept = [n for n in range(len(axes)) if n not in drop]
    data = data.transpose([kept.index(n) for n in space + other])
    affine = np.eye(4)
    for column, n in enumerate(space):
        factor = _unit_factor(axes[n].get("unit"), path)
        affine[column, column] = scale[n] * factor
        affine[column, 3] = translation[n] * factor
    names = SPATIAL_AXES[: len(space)] + ("channel",) * len(other)
    return Volume(data, check_affine(affine), names)


def _compose_transforms(inner: list, outer: list, ndim: int) -> tuple[list[float], list[float]]:
    """Scale and translation of ``outer o inner`` (NGFF applies dataset transforms first)."""
    scale, translation = np.ones(ndim), np.zeros(ndim)
    for transform in list(inner) + list(outer):
        kind = transform.get("type")
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            raise FormatError(f"unsupported NGFF coordinate transformation {kind!r}")
        values = np.asarray(transform[kind], dtype=np.float64)
        if values.shape != (ndim,) or not np.all(np.isfinite(values)):
            raise FormatError(f"NGFF {kind} {values.tolist()} does not fit an array of {ndim} dimensions")
        if kind == "scale":
            scale, translation = scale * values, translation * values
        else:
            translation = translation + values
    if np.any(scale == 0):
        raise FormatError(f"NGFF scale {scale.tolist()} has a zero entry")
    return scale.tolist(), translation.tolist()


#: The OME-Zarr format record (suffix ``.zarr``, a directory).
FORMAT = Format(
    name="zarr", suffixes=(".zarr",), load=load_zarr, save=save_zarr,
    stored_dtype=functools.partial(storable_dtype, where="Zarr"),
)  # fmt: skip
