"""Readers and writers: ``load(path) -> Volume`` and ``save(volume, path)``, format by suffix.

Supported: NIfTI (``.nii``, ``.nii.gz``), HDF5 (``file.h5:/group/dataset``), MATLAB
(``file.mat:key``, v5 and v7.3), Zarr v3 with OME-Zarr metadata (``.zarr``), ENVI
(``.hdr`` + binary). Every reader is lazy: header facts (shape, affine, wavelengths) are
read without touching voxels.

Hostile input. Every user error is a :class:`~volsr.errors.VolsrError`: absurd or negative
shapes, truncated files, complex or non-numeric dtypes (bool is read as uint8) are refused
at load, undecodable chunks when read. A load reads only the files :func:`files_read`
names: data in other files (HDF5 external links, external storage, virtual datasets with
sources outside the input's folder or missing) is refused unless ``allow_external=True``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volsr.errors import FormatError, OutputExistsError
from volsr.io._common import (
    Format,
    SaveOptions,
    atomic_output,
    check_readable,
    check_writable,
    real_path,
    split_key,
)
from volsr.io.envi import FORMAT as ENVI
from volsr.io.envi import output_files as envi_output_files
from volsr.io.hdf5 import FORMAT as HDF5
from volsr.io.matlab import FORMAT as MATLAB
from volsr.io.nifti import FORMAT as NIFTI
from volsr.io.zarr_ome import FORMAT as ZARR
from volsr.io.zarr_ome import missing_chunks as zarr_missing_chunks
from volsr.volume import Volume

__all__ = [
    "load", "save", "check_output", "files_read", "missing_chunks", "writable_dtype",
    "format_for", "FORMATS", "Format", "SaveOptions",
]  # fmt: skip

#: Every registered format, in lookup order.
FORMATS: tuple[Format, ...] = (NIFTI, HDF5, MATLAB, ZARR, ENVI)
_KEY_SUFFIXES = tuple(s for f in FORMATS if f.takes_key for s in f.suffixes)


def format_for(spec: str | os.PathLike[str]) -> tuple[Format, Path, str | None]:
    """Find the format of a path spec from its suffix.

    Parameters
    ----------
    spec : str or path
        ``path`` or ``path:key`` (HDF5 / MATLAB).

    Returns
    -------
    format : Format
    path : Path
    key : str or None

    Raises
    ------
    FormatError
        If the suffix is unknown, or a key is given for a format without keys.

    Examples
    --------
    >>> format_for("scan.nii.gz")[0].name
    'nifti'
    """
    path, key = split_key(spec, _KEY_SUFFIXES)
    name = path.name.lower().rstrip("/")
    for fmt in FORMATS:
        if name.endswith(fmt.suffixes):
            return fmt, path, key
    known = ", ".join(s for f in FORMATS for s in f.suffixes)
    raise FormatError(f"unknown file type for {os.fspath(spec)!r}; known suffixes: {known}")


def load(spec: str | os.PathLike[str], *, allow_external: bool = False) -> Volume:
    """Open a volume lazily.

    Parameters
    ----------
    spec : str or path
        ``path`` or ``path:key``; the suffix picks the format.
    allow_external : bool
        Let the data live in other files than ``spec`` names (HDF5 and MATLAB v7.3:
        external links, external raw storage, virtual datasets whose sources are outside
        the file's folder or missing). Off: such a file is refused, naming the other file.

    Returns
    -------
    Volume
        Lazy volume; voxels are read only when computed.

    Raises
    ------
    FormatError
        If the file is missing, unreadable, truncated, not of its suffix's format, declares
        an absurd shape, holds complex or non-numeric data, or refers to other files.
    GeometryError
        If an axis has zero size or the affine is singular.
    InvalidDataError
        If the array has an unsupported dimensionality.

    Examples
    --------
    >>> load("missing.nii.gz")
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: no such file: missing.nii.gz
    """
    fmt, path, key = format_for(spec)
    check_readable(path)
    return fmt.load(path, key, allow_external=allow_external)


def files_read(spec: str | os.PathLike[str], *, allow_external: bool = False) -> tuple[Path, ...]:
    """The real paths of every file whose bytes ``load(spec)`` reads.

    The file itself first; then an ENVI header's binary file, an HDF5 dataset's
    external-link targets, external raw files and virtual-dataset sources (MATLAB v7.3
    too). A Zarr store is one entry: its directory. Nothing is read but headers.

    Parameters
    ----------
    spec : str or path
        ``path`` or ``path:key``.
    allow_external : bool
        As for :func:`load`. When False, an input that ``load`` would refuse for its
        references raises the same error here.

    Returns
    -------
    tuple of Path
        Real (symlink-resolved, absolute) paths, without duplicates.

    Raises
    ------
    FormatError
        If the file is missing or unreadable, the key is missing, or a reference is refused.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> v = Volume(np.zeros((2, 3, 4), np.uint16), np.eye(4), ("i", "j", "band"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save(v, Path(d) / "cube.hdr")
    ...     [p.name for p in files_read(Path(d) / "cube.hdr")]
    ['cube.hdr', 'cube.img']
    """
    fmt, path, key = format_for(spec)
    check_readable(path)
    return tuple(dict.fromkeys(fmt.files(path, key, allow_external)))


def missing_chunks(spec: str | os.PathLike[str]) -> tuple[int, int] | None:
    """How many chunks of a Zarr input are absent from disk (they read as the fill value).

    Lists chunk files only (no chunk is read). By the Zarr specification a missing chunk is
    legal (sparse data), but in a volume meant to be complete it usually means lost data.

    Parameters
    ----------
    spec : str or path
        Any input spec.

    Returns
    -------
    (missing, total) or None
        For a ``.zarr`` store: chunks (shards, if sharded) of the image that have no file,
        and the grid's total. None for every other format, which has no missing chunks.

    Raises
    ------
    FormatError
        If the store is missing or cannot be read as :func:`load` reads it.

    Examples
    --------
    >>> missing_chunks("scan.nii.gz") is None
    True
    """
    fmt, path, _ = format_for(spec)
    if fmt is not ZARR:
        return None
    check_readable(path)
    return zarr_missing_chunks(path)


def writable_dtype(spec: str | os.PathLike[str], dtype: np.dtype) -> np.dtype:
    """The dtype :func:`save` would store for volumes of ``dtype`` at ``spec``, or a refusal.

    Parameters
    ----------
    spec : str or path
        Output ``path`` or ``path:key`` (only the format matters).
    dtype : numpy.dtype
        Dtype of the volume to write.

    Returns
    -------
    numpy.dtype
        Native byte order; lossless widening where the format lacks the dtype (NIfTI and
        ENVI: bool as uint8, float16 as float32; ENVI: int8 as int16; MATLAB: float16 as
        single).

    Raises
    ------
    FormatError
        If the format cannot store it (complex: take the magnitude first; strings, records).

    Examples
    --------
    >>> writable_dtype("sr.nii.gz", np.dtype(np.float16))
    dtype('float32')
    """
    fmt, _, _ = format_for(spec)
    return fmt.stored_dtype(np.dtype(dtype))


def check_output(
    spec: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
    dtype: np.dtype | None = None,
    allow_external: bool = False,
) -> Path:
    """Check, before any work, that ``save`` could write ``spec`` without touching an input.

    Parameters
    ----------
    spec : str or path
        Output ``path`` or ``path:key``.
    overwrite : bool
        Whether an existing output may be replaced.
    inputs : sequence of str or path
        Input specs the run reads: the output must not be (or contain) any file that a
        load of them reads (:func:`files_read`: an HDF5 virtual dataset's sources
        included), whatever the keys (``save`` replaces the whole file, and ``--overwrite``
        would destroy the input). An input that cannot be opened counts as its own path
        (its load fails later with the reason).
    dtype : numpy.dtype, optional
        Dtype of the volume to write: refused here if the format cannot store it.
    allow_external : bool
        As passed to :func:`load` for the inputs (their external files are protected too).

    Returns
    -------
    Path
        The output path (without key).

    Raises
    ------
    OutputExistsError
        If the output exists and ``overwrite`` is False, or it would replace a file an
        input reads.
    FormatError
        If the suffix is unknown, the key is not usable (HDF5: the root, empty, ``.`` or
        ``..`` components; MATLAB: not an identifier, or a name volsr reserves), the dtype
        cannot be stored, or the folder is missing or not writable.

    Examples
    --------
    >>> check_output("/no/such/folder/sr.nii.gz")
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: output folder does not exist: /no/such/folder
    >>> check_output("/tmp/a.h5:/sr", overwrite=True, inputs=["/tmp/./a.h5:/lr"])
    Traceback (most recent call last):
    ...
    volsr.errors.OutputExistsError: the output /tmp/a.h5:/sr would replace the input file /tmp/./a.h5:/lr; write it to another file (volsr never changes its input)
    """
    fmt, path, key = format_for(spec)
    fmt.check_key(path, key)
    if dtype is not None:
        fmt.stored_dtype(np.dtype(dtype))
    written = _written_files(fmt, path)
    for source in inputs:
        for read in _read_files(source, allow_external):
            if any(read == w or read.is_relative_to(w) or w.is_relative_to(read) for w in written):
                shown = "" if read == real_path(format_for(source)[1]) else f" (it reads {read})"
                raise OutputExistsError(
                    f"the output {os.fspath(spec)} would replace the input file {os.fspath(source)}"
                    f"{shown}; write it to another file (volsr never changes its input)"
                )
    check_writable(path, overwrite=overwrite)
    return path


def _read_files(source: str | os.PathLike[str], allow_external: bool) -> tuple[Path, ...]:
    try:
        return files_read(source, allow_external=allow_external)
    except FormatError:
        return (real_path(format_for(source)[1]),)


def _written_files(fmt: Format, path: Path) -> tuple[Path, ...]:
    """Real paths ``save`` replaces: the file or store; an ENVI header and its binary file."""
    if fmt is ENVI:
        return tuple(real_path(p) for p in envi_output_files(path))
    return (real_path(path),)


def save(
    volume: Volume,
    spec: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    chunks: tuple[int, ...] | None = None,
) -> Path:
    """Write a volume, atomically (a temporary name, renamed when complete).

    Parameters
    ----------
    volume : Volume
        What to write; computed chunk by chunk where the format allows.
    spec : str or path
        Output ``path`` or ``path:key``; the suffix picks the format.
    overwrite : bool
        Replace an existing output.
    chunks : tuple of int, optional
        Chunk shape for chunked formats, one per array axis.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    OutputExistsError
        If the output exists and ``overwrite`` is False.
    FormatError
        If the folder is missing or not writable, the key is not usable, or the format
        cannot hold the volume's dtype (checked before any voxel is computed).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> v = Volume(np.zeros((2, 3, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save(v, Path(d) / "x.nii.gz").name
    'x.nii.gz'
    """
    fmt, path, key = format_for(spec)
    fmt.check_key(path, key)
    stored = fmt.stored_dtype(volume.dtype)
    if stored != volume.dtype:
        volume = volume.replace(data=volume.data.astype(stored))
    options = SaveOptions(chunks=None if chunks is None else tuple(int(c) for c in chunks))
    with atomic_output(path, overwrite=overwrite, companions=options.companions) as temporary:
        fmt.save(volume, temporary, key, options)
    return path
