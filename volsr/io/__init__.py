"""Readers and writers: ``load(path) -> Volume`` and ``save(volume, path)``, format by suffix.

Supported: NIfTI (``.nii``, ``.nii.gz``), HDF5 (``file.h5:/group/dataset``), MATLAB
(``file.mat:key``, v5 and v7.3), Zarr v3 with OME-Zarr metadata (``.zarr``), ENVI
(``.hdr`` + binary). Every reader is lazy: header facts (shape, affine, wavelengths) are
read without touching voxels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from volsr.errors import FormatError, OutputExistsError
from volsr.io._common import (
    Format,
    SaveOptions,
    atomic_output,
    check_readable,
    check_writable,
    split_key,
)
from volsr.io.envi import DATA_SUFFIXES as ENVI_DATA_SUFFIXES
from volsr.io.envi import FORMAT as ENVI
from volsr.io.hdf5 import FORMAT as HDF5
from volsr.io.matlab import FORMAT as MATLAB
from volsr.io.nifti import FORMAT as NIFTI
from volsr.io.zarr_ome import FORMAT as ZARR
from volsr.volume import Volume

__all__ = ["load", "save", "check_output", "format_for", "FORMATS", "Format", "SaveOptions"]

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


def load(spec: str | os.PathLike[str]) -> Volume:
    """Open a volume lazily.

    Parameters
    ----------
    spec : str or path
        ``path`` or ``path:key``; the suffix picks the format.

    Returns
    -------
    Volume
        Lazy volume; voxels are read only when computed.

    Raises
    ------
    FormatError
        If the file is missing, unreadable, truncated or not of its suffix's format.

    Examples
    --------
    >>> load("missing.nii.gz")
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: no such file: missing.nii.gz
    """
    fmt, path, key = format_for(spec)
    check_readable(path)
    return fmt.load(path, key)


def check_output(
    spec: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Check, before any work, that ``save`` could write ``spec`` without touching an input.

    Parameters
    ----------
    spec : str or path
        Output ``path`` or ``path:key``.
    overwrite : bool
        Whether an existing output may be replaced.
    inputs : sequence of str or path
        Input specs the run reads: the output must not be (or share a file with) any of
        them, whatever the keys (``save`` replaces the whole file, and ``--overwrite``
        would destroy the input).

    Returns
    -------
    Path
        The output path (without key).

    Raises
    ------
    OutputExistsError
        If the output exists and ``overwrite`` is False, or it is one of ``inputs``' files.
    FormatError
        If the suffix is unknown or the folder is missing or not writable.

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
    _, path, _ = format_for(spec)
    for source in inputs:
        if _file_identity(format_for(source)[1]) == _file_identity(path):
            raise OutputExistsError(
                f"the output {os.fspath(spec)} would replace the input file {os.fspath(source)}; "
                "write it to another file (volsr never changes its input)"
            )
    check_writable(path, overwrite=overwrite)
    return path


def _file_identity(path: Path) -> str:
    """The real path of ``path``'s data: an ENVI header and its binary file count as one."""
    real = os.path.realpath(path)
    if real.lower().endswith(".hdr"):
        real = real[: -len(".hdr")]
        if real.lower().endswith(ENVI_DATA_SUFFIXES):
            real = os.path.splitext(real)[0]
    return real


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
        If the folder is missing or not writable, or the format cannot hold the volume.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> v = Volume(np.zeros((2, 3, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save(v, Path(d) / "x.nii.gz").name
    'x.nii.gz'
    """
    fmt, path, key = format_for(spec)
    options = SaveOptions(chunks=None if chunks is None else tuple(int(c) for c in chunks))
    with atomic_output(path, overwrite=overwrite) as temporary:
        fmt.save(volume, temporary, key, options)
    return path
