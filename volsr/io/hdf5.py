"""HDF5 (``file.h5:/group/dataset``) through h5py: lazy reads by path, chunked compressed writes.

A volume is one dataset. volsr writes its geometry as attributes of that dataset
(``affine``: (4, 4) float64; ``axes``: axis names; ``wavelengths`` and ``fwhm`` in nm) and
reads them back when present; a plain dataset gets axes by dimensionality and an identity
affine, except a 3-D one with a ``wavelengths`` attribute as long as its last axis: a
hyperspectral cube, rows x cols x bands. Readers hand dask a :class:`HDF5Array`, which opens the file by path on each read:
h5py handles are neither picklable nor safe to share between processes.

Other files. A key through an external link, external raw storage and virtual datasets
with sources outside the file's folder (or missing) are refused unless ``allow_external``
(see :mod:`volsr.io._hdf5_refs`); :func:`files_hdf5` lists every file a load reads.
Dtypes follow :func:`volsr.io._common.voxel_dtype` (bool read as uint8, big-endian as
native, complex and records refused); null (``h5py.Empty``) and scalar datasets are refused.
"""

from __future__ import annotations

import errno
import functools
import shutil
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np

from volsr.errors import FormatError, InvalidDataError
from volsr.io._common import (
    FileArray,
    Format,
    SaveOptions,
    check_shape,
    real_path,
    storable_dtype,
    voxel_dtype,
)
from volsr.io._hdf5_refs import open_dataset
from volsr.volume import SPATIAL_AXES, Volume

__all__ = [
    "FORMAT", "HDF5Array", "load_hdf5", "save_hdf5", "files_hdf5", "check_key_hdf5",
    "list_datasets", "dask_chunks",
]  # fmt: skip

#: Target bytes per dask chunk (aligned to the dataset's HDF5 chunks).
_CHUNK_BYTES = 64 * 2**20
#: Dataset used when ``save`` gets no key.
DEFAULT_KEY = "/data"
_DEFAULT_AXES = {2: ("i", "j"), 3: SPATIAL_AXES, 4: (*SPATIAL_AXES, "channel")}
_MAX_LISTED = 20


class HDF5Array(FileArray):
    """A lazily read HDF5 dataset that opens its file by path on every read.

    Parameters
    ----------
    path : Path
        HDF5 file (a MATLAB v7.3 file is one too).
    name : str
        Absolute dataset path inside the file (``"/group/dataset"``).
    shape : tuple of int
        Dataset shape.
    dtype : numpy.dtype
        Returned dtype; stored values are converted to it (bool to uint8, big-endian to
        native order).

    Raises
    ------
    FormatError
        From ``__getitem__`` if the file or dataset cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with h5py.File(Path(d) / "a.h5", "w") as f:
    ...         _ = f.create_dataset("x", data=np.arange(6).reshape(2, 3))
    ...     HDF5Array(Path(d) / "a.h5", "/x", (2, 3), np.dtype(np.int64))[1, :2].tolist()
    [3, 4]
    """

    kind = "volsr-hdf5"

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._describe(path, shape, dtype)
        self.name = name

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            with h5py.File(self.path, "r") as handle:
                block = np.asarray(handle[self.name][index])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise FormatError(f"cannot read {self.path}:{self.name}: {exc}") from exc
        return block.astype(self.dtype, copy=False)


def list_datasets(handle: h5py.Group) -> list[str]:
    """Absolute names of every dataset under a file or group.

    Parameters
    ----------
    handle : h5py.File or h5py.Group
        Open file or group.

    Returns
    -------
    list of str
        Dataset paths such as ``"/group/dataset"``, in HDF5 visiting order.

    Raises
    ------
    OSError
        If the file structure cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, h5py.File(Path(d) / "a.h5", "w") as f:
    ...     _ = f.create_dataset("g/x", data=[1])
    ...     list_datasets(f)
    ['/g/x']
    """
    names: list[str] = []
    handle.visititems(
        lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None
    )
    return names


def dask_chunks(
    shape: tuple[int, ...], dtype: np.dtype, stored: tuple[int, ...] | None
) -> tuple[tuple[int, ...], ...]:
    """Dask chunks of about 64 MiB, whole multiples of the stored chunks where possible.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    dtype : numpy.dtype
        Array dtype.
    stored : tuple of int or None
        HDF5 chunk shape (None for a contiguous dataset).

    Returns
    -------
    tuple of tuple of int
        Dask chunk sizes per axis.

    Raises
    ------
    ValueError
        If ``stored`` does not match ``shape``.

    Examples
    --------
    >>> dask_chunks((100, 100), np.dtype(np.float32), (10, 10))
    ((100,), (100,))
    """
    return da.core.normalize_chunks(
        "auto", shape, limit=_CHUNK_BYTES, dtype=dtype, previous_chunks=stored
    )


def load_hdf5(path: Path, key: str | None, *, allow_external: bool = False) -> Volume:
    """Open one dataset of an HDF5 file lazily.

    Parameters
    ----------
    path : Path
        ``.h5``, ``.hdf5`` or ``.he5`` file.
    key : str or None
        Dataset path (``"/group/dataset"`` or ``"group/dataset"``). None picks the file's
        only dataset.
    allow_external : bool
        Read data held in other files: external links, external raw storage, virtual
        datasets with sources outside the file's folder or missing (read as fill value).

    Returns
    -------
    Volume
        Axes and affine from the ``axes`` and ``affine`` attributes, else ``("i", "j")``,
        ``("i", "j", "k")`` or ``("i", "j", "k", "channel")`` by dimensionality and the
        identity; ``wavelengths``/``fwhm`` (nm) from attributes of those names. Without an
        ``axes`` attribute, a 3-D dataset whose ``wavelengths`` has one value per entry of
        its last axis is a cube ``("i", "j", "band")`` (rows x cols x bands, as in .mat
        files; values all below 100 are micrometres, converted to nm); spectral
        attributes that fit no band axis are ignored with a warning. Dtype as stored, in
        native byte order; bool becomes uint8.

    Raises
    ------
    FormatError
        If the file is not HDF5; the dataset is missing (the message lists the datasets),
        null, complex or not numeric; its data lies in other files and ``allow_external``
        is False; its shape is absurd; or its volsr attributes are malformed.
    InvalidDataError
        If a plain dataset is not 2D, 3D or 4D (a scalar, say).
    GeometryError
        If an axis has zero size or the affine is singular.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with h5py.File(Path(d) / "a.h5", "w") as f:
    ...         _ = f.create_dataset("scan/t1", data=np.zeros((4, 5, 6), np.int16))
    ...     v = load_hdf5(Path(d) / "a.h5", "/scan/t1")
    ...     v.shape, v.axes, v.dtype
    ((4, 5, 6), ('i', 'j', 'k'), dtype('int16'))
    """
    with _open_file(path) as handle:
        name, dataset, _ = _find_dataset(handle, path, key, allow_external)
        where = f"dataset {name} in {path}"
        if dataset.shape is None:
            raise FormatError(f"{where} has a null dataspace (h5py.Empty): it holds no voxels")
        dtype = voxel_dtype(dataset.dtype, where)
        shape = check_shape(dataset.shape, where) if dataset.shape else ()
        stored_chunks = dataset.chunks
        facts = _volsr_attributes(dataset, path)
    axes = facts.pop("axes", None) or _plain_axes(shape, facts, where)
    if axes is None:
        raise InvalidDataError(f"{where} has shape {shape}: need 2D, 3D or 4D")
    source = HDF5Array(path, name, shape, dtype)
    data = da.from_array(
        source, chunks=dask_chunks(shape, dtype, stored_chunks), meta=np.empty((0,) * len(shape), dtype)
    )
    affine = facts.pop("affine", np.eye(4))
    return Volume(data=data, affine=affine, axes=axes, **facts)


def files_hdf5(path: Path, key: str | None, allow_external: bool) -> tuple[Path, ...]:
    """The real paths of every file a load of ``path:key`` reads: the file itself first.

    Parameters
    ----------
    path : Path
        HDF5 file (a MATLAB v7.3 file is one too).
    key : str or None
        Dataset path; None: the only dataset.
    allow_external : bool
        As for :func:`load_hdf5`; when False, a refused reference raises here too.

    Returns
    -------
    tuple of Path
        ``path`` and the external-link targets, external raw files and VDS sources.

    Raises
    ------
    FormatError
        As :func:`load_hdf5` does for a missing dataset or a refused reference.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with h5py.File(Path(d) / "a.h5", "w") as f:
    ...         _ = f.create_dataset("x", data=np.zeros((2, 2)))
    ...     [p.name for p in files_hdf5(Path(d) / "a.h5", "x", False)]
    ['a.h5']
    """
    with _open_file(path) as handle:
        _, _, files = _find_dataset(handle, path, key, allow_external)
    return tuple(dict.fromkeys((real_path(path), *files)))


def check_key_hdf5(path: Path, key: str | None) -> None:
    """Refuse an output dataset name ``save_hdf5`` cannot create as asked.

    Parameters
    ----------
    path : Path
        Output file (messages only).
    key : str or None
        Dataset path; None (``"/data"``) is fine.

    Returns
    -------
    None

    Raises
    ------
    FormatError
        If the key names the root group, or has an empty, ``.`` or ``..`` component.

    Examples
    --------
    >>> check_key_hdf5(Path("o.h5"), "/a/../b")
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: HDF5 output key '/a/../b' for o.h5 has a '..' component; name a dataset such as /group/data
    """
    if key is None:
        return
    parts = key[1:].split("/") if key.startswith("/") else key.split("/")
    if parts == [""]:
        raise FormatError(f"HDF5 output key {key!r} for {path} names the root group; name a "
                          "dataset such as /data")  # fmt: skip
    for part in parts:
        if part in ("", ".", ".."):
            shown = "an empty" if not part else f"a {part!r}"
            raise FormatError(f"HDF5 output key {key!r} for {path} has {shown} component; name "
                              "a dataset such as /group/data")  # fmt: skip


def _open_file(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise FormatError(f"not a readable HDF5 file: {path} ({exc})") from exc


#: Free disk kept beyond each block written to HDF5: the chunk cache and the metadata that
#: closing the file flushes must still fit.
ROOM_MARGIN = 2 * 2**20


class _RoomChecked:
    """A dataset that refuses a block when the disk could not hold it (``da.store`` target).

    libhdf5 does not survive a full disk: the failed write is reported, then the process
    crashes when the file is closed. So the free space is checked before every block
    (uncompressed size plus :data:`ROOM_MARGIN`) and a full disk is an ``OSError`` raised
    here, before HDF5 sees it.
    """

    def __init__(self, dataset: h5py.Dataset, folder: Path) -> None:
        self.dataset, self.folder = dataset, folder
        self.shape, self.dtype, self.ndim = dataset.shape, dataset.dtype, dataset.ndim

    def __setitem__(self, index: Any, block: np.ndarray) -> None:
        free = shutil.disk_usage(self.folder).free
        if free < block.nbytes + ROOM_MARGIN:
            raise OSError(errno.ENOSPC, f"No space left on device: {free} bytes free in {self.folder}, "
                                        f"an HDF5 block needs up to {block.nbytes + ROOM_MARGIN}")
        self.dataset[index] = block


def save_hdf5(volume: Volume, path: Path, key: str | None, options: SaveOptions) -> None:
    """Write a volume as one chunked, gzip-compressed dataset with its geometry attributes.

    Streams chunk by chunk (``dask.array.store``): the volume is never whole in memory.

    Parameters
    ----------
    volume : Volume
        What to write; dtype kept.
    path : Path
        New HDF5 file.
    key : str or None
        Dataset path; None writes ``"/data"``.
    options : SaveOptions
        ``chunks``: HDF5 chunk shape (one value per axis, clipped to the shape); None lets
        h5py choose.

    Returns
    -------
    None

    Raises
    ------
    ValueError
        If ``options.chunks`` has the wrong length or a value < 1.

    Examples
    --------
    >>> import tempfile
    >>> v = Volume(np.ones((4, 5, 6), np.float32), np.diag([1, 1, 2, 1]), ("i", "j", "k"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_hdf5(v, Path(d) / "a.h5", "/g/v", SaveOptions(chunks=(2, 5, 6)))
    ...     load_hdf5(Path(d) / "a.h5", "g/v").spacing.tolist()
    [1.0, 1.0, 2.0]
    """
    name = "/" + (key or DEFAULT_KEY).strip("/")
    chunks = _stored_chunks(options.chunks, volume.shape)
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(
            name,
            shape=volume.shape,
            dtype=volume.dtype,
            chunks=chunks,
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        dataset.attrs["affine"] = volume.affine
        dataset.attrs["axes"] = list(volume.axes)
        for field in ("wavelengths", "fwhm"):
            if getattr(volume, field) is not None:
                dataset.attrs[field] = getattr(volume, field)
        # h5py is not thread-safe for writes: the lock serialises them, reads stay parallel.
        da.store(volume.data, _RoomChecked(dataset, path.parent), lock=True)


def _find_dataset(
    handle: h5py.File, path: Path, key: str | None, allow_external: bool
) -> tuple[str, h5py.Dataset, tuple[Path, ...]]:
    """The dataset's name as addressed in this file (reads reopen it by this name), the
    dataset, and the other files its reads touch."""
    names = list_datasets(handle)
    if key is None and len(names) != 1:
        raise FormatError(
            f"{path} holds {len(names)} datasets; name one as {path}:/dataset "
            f"(available: {_listing(names)})"
        )
    name = names[0] if key is None else "/" + key.strip("/")
    dataset, files = open_dataset(handle, path, name, allow_external=allow_external)
    if dataset is None:
        raise FormatError(f"no dataset {key!r} in {path} (available: {_listing(names)})")
    return name, dataset, files


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED]) or "none"
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _volsr_attributes(dataset: h5py.Dataset, path: Path) -> dict[str, Any]:
    where = f"attribute of {dataset.name} in {path}"
    try:
        attrs = {k: dataset.attrs[k] for k in ("affine", "axes", "wavelengths", "fwhm") if k in dataset.attrs}
    except (OSError, TypeError, ValueError) as exc:
        raise FormatError(f"cannot read the volsr attributes of {dataset.name} in {path}: {exc}") from exc
    facts: dict[str, Any] = {}
    for field in ("affine", "wavelengths", "fwhm"):
        if field in attrs:
            try:
                facts[field] = np.asarray(attrs[field], dtype=np.float64)
            except (TypeError, ValueError):
                raise FormatError(f"{field!r} {where} is not numeric: {attrs[field]!r:.80}") from None
    if "affine" in facts and facts["affine"].shape != (4, 4):
        raise FormatError(f"'affine' {where} has shape {facts['affine'].shape}, expected (4, 4)")
    for field in ("wavelengths", "fwhm"):
        if field in facts:
            facts[field] = facts[field].reshape(-1)
    if "axes" in attrs:
        raw = np.atleast_1d(np.asarray(attrs["axes"]))
        axes = tuple(a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in raw.tolist())
        if len(axes) != dataset.ndim:
            raise FormatError(f"'axes' {where} names {axes} for {dataset.ndim} dimensions")
        facts["axes"] = axes
    return facts


def _plain_axes(shape: tuple[int, ...], facts: dict[str, Any], where: str) -> tuple[str, ...] | None:
    """Axes of a dataset without an ``axes`` attribute; spectral facts fitted (in place).

    A 3-D dataset whose ``wavelengths`` has one value per entry of its last axis is a cube,
    rows x cols x bands (as in .mat files); wavelengths all below 100 are micrometres.
    Spectral attributes that fit no band axis are ignored with a warning.
    """
    wavelengths = facts.get("wavelengths")
    if len(shape) == 3 and wavelengths is not None and wavelengths.size == shape[2]:
        factor = 1000.0 if np.all(wavelengths < 100) else 1.0
        facts["wavelengths"] = wavelengths * factor
        fwhm = facts.get("fwhm")
        if fwhm is not None and fwhm.size != shape[2]:
            warnings.warn(f"ignoring 'fwhm' of {where}: {fwhm.size} values for {shape[2]} bands", stacklevel=4)
            del facts["fwhm"]
        elif fwhm is not None:
            facts["fwhm"] = fwhm * factor
        return ("i", "j", "band")
    for field in ("wavelengths", "fwhm"):
        if field in facts:
            warnings.warn(f"ignoring {field!r} of {where} (shape {shape}): a cube needs 3 axes and one "
                          "wavelength per entry of the last", stacklevel=4)  # fmt: skip
            del facts[field]
    return _DEFAULT_AXES.get(len(shape))


def _stored_chunks(chunks: tuple[int, ...] | None, shape: tuple[int, ...]) -> Any:
    if chunks is None:
        return True
    if len(chunks) != len(shape) or any(int(c) < 1 for c in chunks):
        raise ValueError(f"chunks must be {len(shape)} positive integers, got {chunks}")
    return tuple(min(int(c), int(n)) for c, n in zip(chunks, shape, strict=True))


FORMAT = Format(
    name="hdf5",
    suffixes=(".hdf5", ".h5", ".he5"),
    load=load_hdf5,
    save=save_hdf5,
    takes_key=True,
    files=files_hdf5,
    check_key=check_key_hdf5,
    stored_dtype=functools.partial(storable_dtype, where="HDF5"),
)
