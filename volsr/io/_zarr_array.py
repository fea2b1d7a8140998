"""Reading a zarr array for dask: by path, with decode errors named, and its chunk census.

:class:`ZarrArray` is what :mod:`volsr.io.zarr_ome` hands to dask instead of the zarr array
itself: it reopens the store by path (workers get paths, never handles), converts to the
dtype volsr hands on, and turns an undecodable chunk (garbage bytes, a wrong codec) into a
:class:`~volsr.errors.FormatError` naming the store and the chunk's key, instead of a codec
exception from deep inside a dask computation.

:func:`count_missing_chunks` lists the chunk files of an array (no chunk is read): by the
Zarr specification a chunk that is not stored reads as the fill value, which is legal and
common for sparse data, but in a volume meant to be complete it means lost data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
from zarr.storage import LocalStore

from volsr.errors import FormatError, first_line
from volsr.io._common import FileArray

__all__ = ["ZarrArray", "zarr_dask", "count_missing_chunks", "storage_shape"]

#: Above this many zarr chunks, dask blocks group several of them (about 64 MiB each).
_MAX_FINE_BLOCKS = 2**16
_BLOCK_BYTES = 64 * 2**20
_METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})


class ZarrArray(FileArray):
    """A zarr array read by path: reopened per process, decode errors named.

    Parameters
    ----------
    root : Path
        The store's directory.
    name : str
        Path of the array inside the store (``""`` for a store that is one array).
    shape : tuple of int
        Array shape.
    dtype : numpy.dtype
        Returned dtype (stored values are converted: bool to uint8, big-endian to native).

    Raises
    ------
    FormatError
        From ``__getitem__``, naming the chunk, if a chunk cannot be read or decoded.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     z = zarr.create_array(LocalStore(Path(d) / "a.zarr"), data=np.arange(6).reshape(2, 3))
    ...     ZarrArray(Path(d) / "a.zarr", "", (2, 3), np.dtype(np.int64))[1, 1:].tolist()
    [4, 5]
    """

    kind = "volsr-zarr"

    def __init__(self, root: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._describe(root, shape, dtype)
        self.name = name
        self._array: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def _open(self) -> Any:
        if self._array is None:
            store = LocalStore(self.path, read_only=True)
            self._array = zarr.open_array(store=store, path=self.name, mode="r")
        return self._array

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            block = np.asarray(self._open()[index])
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001 -- codecs raise anything (RuntimeError, ValueError, ...)
            raise FormatError(self._describe_failure(index, error)) from error
        return block.astype(self.dtype, copy=False)

    def _describe_failure(self, index: Any, error: Exception) -> str:
        """Find the first chunk of ``index`` that fails on its own, for the message."""
        where = f"{self.path}" + (f"/{self.name}" if self.name else "")
        try:
            array = self._open()
            unit = storage_shape(array)
            ranges = _chunk_ranges(index, self.shape, unit)
            for coords in np.ndindex(*[len(r) for r in ranges]):
                chunk = tuple(r[c] for r, c in zip(ranges, coords, strict=True))
                box = tuple(slice(c * u, min((c + 1) * u, n)) for c, u, n in zip(chunk, unit, self.shape, strict=True))
                try:
                    array[box]
                except Exception:  # noqa: BLE001 -- the same failure, now located
                    key = array.metadata.encode_chunk_key(chunk)
                    return f"cannot decode chunk {key!r} of zarr store {where}: {first_line(error)}"
        except Exception:  # noqa: BLE001 -- the store itself is unreadable: say so below
            pass
        return f"cannot read zarr store {where}: {first_line(error)}"


def _chunk_ranges(index: Any, shape: tuple[int, ...], unit: tuple[int, ...]) -> list[range]:
    index = index if isinstance(index, tuple) else (index,)
    index = index + (slice(None),) * (len(shape) - len(index))
    ranges = []
    for item, n, u in zip(index, shape, unit, strict=True):
        if isinstance(item, slice):
            start, stop, _ = item.indices(n)
            ranges.append(range(start // u, max(start, stop - 1) // u + 1))
        else:
            ranges.append(range(int(item) % n // u, int(item) % n // u + 1))
    return ranges


def storage_shape(array: Any) -> tuple[int, ...]:
    """Shape of one stored object of ``array``: its shard shape if sharded, else its chunks.

    Parameters
    ----------
    array : zarr.Array
        Any zarr v2 or v3 array.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> storage_shape(zarr.create_array({}, shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="u1"))
    (4, 4)
    """
    return tuple(int(n) for n in (getattr(array, "shards", None) or array.chunks))


def zarr_dask(root: Path, name: str, array: Any, dtype: np.dtype) -> da.Array:
    """A dask array over ``array`` whose blocks are its chunks (or, for very many chunks,
    whole groups of them of about 64 MiB, so that a graph over it stays small).

    Parameters
    ----------
    root : Path
        The store's directory.
    name : str
        Path of the array inside the store.
    array : zarr.Array
        The open array (shape and chunks only are used).
    dtype : numpy.dtype
        Dtype to hand on.

    Returns
    -------
    dask.array.Array

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     z = zarr.create_array(LocalStore(Path(d) / "a.zarr"), shape=(10, 10), chunks=(5, 5), dtype="f4")
    ...     zarr_dask(Path(d) / "a.zarr", "", z, np.dtype("f4")).chunks
    ((5, 5), (5, 5))
    """
    shape = tuple(int(n) for n in array.shape)
    chunks: Any = tuple(int(c) for c in array.chunks)
    if math.prod(math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)) > _MAX_FINE_BLOCKS:
        chunks = da.core.normalize_chunks("auto", shape, limit=_BLOCK_BYTES, dtype=dtype,
                                          previous_chunks=storage_shape(array))  # fmt: skip
    source = ZarrArray(root, name, shape, dtype)
    return da.from_array(source, chunks=chunks, meta=np.empty((0,) * len(shape), dtype))


def count_missing_chunks(root: Path, array: Any) -> tuple[int, int]:
    """Count the stored objects (chunks, or shards) of an array that are absent from disk.

    Parameters
    ----------
    root : Path
        The store's directory.
    array : zarr.Array
        The open array (its path, shape, chunk grid and key encoding are used).

    Returns
    -------
    missing : int
        Chunks (shards for a sharded array) of the grid with no file: they read as the
        fill value.
    total : int
        Chunks (shards) in the grid.

    Raises
    ------
    OSError
        If the array's folder cannot be listed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     z = zarr.create_array(LocalStore(Path(d) / "a.zarr"), shape=(4, 4), chunks=(2, 2), dtype="f4")
    ...     z[:2, :] = 1
    ...     count_missing_chunks(Path(d) / "a.zarr", z)
    (2, 4)
    """
    unit = storage_shape(array)
    grid = tuple(math.ceil(int(n) / u) for n, u in zip(array.shape, unit, strict=True))
    total = math.prod(grid)
    folder = Path(root) / array.path if array.path else Path(root)
    prefix, separator = _key_format(array)
    present = 0
    for directory, _, names in os.walk(folder):
        relative = Path(directory).relative_to(folder).as_posix()
        for name in names:
            if name in _METADATA_FILES:
                continue
            key = name if relative == "." else f"{relative}/{name}"
            present += _is_chunk_key(key, prefix, separator, grid)
    return total - present, total


def _key_format(array: Any) -> tuple[str, str]:
    metadata = array.metadata
    if getattr(metadata, "zarr_format", 3) == 2:
        return "", metadata.dimension_separator or "."
    encoding = metadata.chunk_key_encoding
    separator = str(getattr(encoding, "separator", "/"))
    return ("c" + separator if getattr(encoding, "name", "default") == "default" else ""), separator


def _is_chunk_key(key: str, prefix: str, separator: str, grid: tuple[int, ...]) -> bool:
    if not key.startswith(prefix):
        return False
    parts = key[len(prefix) :].split(separator)
    if len(parts) != len(grid) or not all(p.isdigit() for p in parts):
        return False
    return all(int(p) < n for p, n in zip(parts, grid, strict=True))
