"""MATLAB ``.mat`` files (``file.mat:key``): v5 through SciPy, v7.3 through h5py.

Arrays keep MATLAB's order: a 3D array is a hyperspectral cube, rows x cols x bands, axes
``("i", "j", "band")``; a 2D array is an image, axes ``("i", "j")``. The affine is the identity
(unit pixel spacing) unless the file holds a (4, 4) ``affine`` variable. Band centres come
from a ``wavelengths`` (or ``wavelength``, ``wl``) variable with one value per band, and
band widths from ``fwhm``; the unit rule: if every wavelength is below 100 the values are
micrometres and are multiplied by 1000 (no sensor band centre lies below 100 nm, none above
100 um), otherwise they are nanometres. ``fwhm`` takes the same factor.

v7.3 files are HDF5 with MATLAB's 512-byte user block; HDF5 lists dimensions in reverse
(C order) relative to MATLAB (Fortran order), so datasets are transposed lazily. Their
variables are checked like HDF5 datasets (:mod:`volsr.io._hdf5_refs`): data held in other
files is refused unless ``allow_external``.

Classes. ``logical`` is read as uint8 (0 and 1, see :func:`volsr.io._common.voxel_dtype`);
complex variables (v5 and v7.3) are refused at load: take the magnitude first.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import scipy.io

from volsr.errors import FormatError, InvalidDataError, first_line
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
from volsr.io._matlab_vars import CLASS_OF_DTYPE, READ_ERRORS, v5_variables, v73_variables
from volsr.io.hdf5 import HDF5Array, dask_chunks
from volsr.volume import NONSPATIAL_AXES, Volume

__all__ = [
    "FORMAT", "MatV5Array", "load_matlab", "save_matlab", "files_matlab", "check_key_matlab",
    "stored_dtype_matlab", "V73_MIN_BYTES",
]  # fmt: skip

#: Arrays of at least this many bytes are written as v7.3 (v5 variables are limited to 2 GiB).
V73_MIN_BYTES = 2**31
#: Variable written when ``save`` gets no key.
DEFAULT_KEY = "data"
#: Metadata variables (affine, wavelengths, fwhm) larger than this are not read.
_MAX_META_VALUES = 2**16
_WAVELENGTH_NAMES = ("wavelengths", "wavelength", "wl")
_META_NAMES = frozenset({"affine", "fwhm", *_WAVELENGTH_NAMES})
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
#: MATLAB keywords (``iskeyword``): not usable as variable names.
_KEYWORDS = frozenset({
    "break", "case", "catch", "classdef", "continue", "else", "elseif", "end", "for",
    "function", "global", "if", "otherwise", "parfor", "persistent", "return", "spmd",
    "switch", "try", "while",
})  # fmt: skip


class MatV5Array(FileArray):
    """One variable of a MATLAB v5 file, read on first access.

    SciPy cannot read part of a v5 variable (each is one, usually zlib-compressed,
    record), so a read loads only this variable (``variable_names=[name]``) and slices it;
    the dask array over it has a single chunk.

    Parameters
    ----------
    path : Path
        ``.mat`` file (v4 or v5).
    name : str
        Variable name.
    shape : tuple of int
        MATLAB shape (rows, cols, ...).
    dtype : numpy.dtype
        Returned dtype (from the MATLAB class; ``logical`` -> uint8).

    Raises
    ------
    FormatError
        From ``__getitem__`` if the file is truncated or the variable is complex.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     scipy.io.savemat(Path(d) / "a.mat", {"x": np.arange(6.0).reshape(2, 3)})
    ...     MatV5Array(Path(d) / "a.mat", "x", (2, 3), np.dtype(np.float64))[1, :].tolist()
    [3.0, 4.0, 5.0]
    """

    kind = "volsr-matv5"

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._describe(path, shape, dtype)
        self.name = name

    def __getitem__(self, index: Any) -> np.ndarray:
        array = _read_v5(self.path, self.name)
        if array.dtype.kind == "c":
            raise FormatError(f"complex data in variable {self.name!r} of {self.path} is not supported: "
                              "take the magnitude first (abs(x) in MATLAB)")  # fmt: skip
        if array.shape != self.shape:
            raise FormatError(f"variable {self.name!r} in {self.path} changed shape on reading")
        return array.astype(self.dtype, copy=False)[index]


def load_matlab(path: Path, key: str | None, *, allow_external: bool = False) -> Volume:
    """Open one array variable of a ``.mat`` file (v5 or v7.3) lazily.

    Parameters
    ----------
    path : Path
        ``.mat`` file.
    key : str or None
        Variable name; None picks the only numeric array (ignoring names starting with
        ``_`` and the metadata variables ``affine``, ``fwhm``, ``wavelengths``, ``wavelength``,
        ``wl``).
    allow_external : bool
        v7.3 only: read variables whose data lies in other files (see :mod:`volsr.io.hdf5`).

    Returns
    -------
    Volume
        ``(rows, cols, bands)`` with axes ``("i", "j", "band")`` or ``(rows, cols)`` with
        ``("i", "j")``; dtype from the MATLAB class (``logical`` -> uint8); wavelengths and
        fwhm in nm (see the module notes for the unit rule).

    Raises
    ------
    FormatError
        If the file is not a MAT-file, is truncated, or the key is missing, complex, not a
        numeric array (the message lists the variables), or its data lies in other files.
    InvalidDataError
        If the array is not 2D or 3D.
    GeometryError
        If an axis has zero size.

    Examples
    --------
    >>> import tempfile
    >>> cube = np.zeros((4, 5, 3), np.uint16)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     scipy.io.savemat(Path(d) / "a.mat", {"cube": cube, "wl": [[0.4, 0.5, 0.6]]})
    ...     v = load_matlab(Path(d) / "a.mat", None)
    ...     v.axes, v.wavelengths.tolist()
    (('i', 'j', 'band'), [400.0, 500.0, 600.0])
    """
    v73 = h5py.is_hdf5(path)
    variables = v73_variables(path) if v73 else v5_variables(path)
    name = _pick(variables, key, path)
    if v73:
        _v73_references(path, [name, *_meta_variables(variables)], allow_external)
    shape, dtype = _checked_variable(variables, name, path)
    if v73:
        data = _v73_data(path, name, shape, dtype)
    else:
        source = MatV5Array(path, name, shape, voxel_dtype(dtype, f"variable {name!r} of {path}"))
        data = da.from_array(source, chunks=shape, meta=np.empty((0,) * len(shape), source.dtype))
    small = _read_small(path, variables, v73)
    bands = shape[2] if len(shape) == 3 else 0
    wavelengths, fwhm = _spectral(small, bands, path)
    affine = small.get("affine")
    affine = affine if affine is not None and affine.shape == (4, 4) else np.eye(4)
    axes = ("i", "j", "band") if bands else ("i", "j")
    return Volume(data=data, affine=affine, axes=axes, wavelengths=wavelengths, fwhm=fwhm)


def _checked_variable(
    variables: dict[str, tuple[tuple[int, ...], Any]], name: str, path: Path
) -> tuple[tuple[int, ...], np.dtype]:
    shape, dtype = variables[name]
    if isinstance(dtype, str) and dtype.startswith("plain HDF5"):
        raise FormatError(f"variable {name!r} in {path} has no MATLAB_class attribute (plain HDF5, "
                          f"not written by MATLAB); read it as HDF5 under a .h5 name: FILE.h5:/{name}")
    if isinstance(dtype, str) and dtype.startswith("complex"):
        raise FormatError(f"complex data ({dtype}) in variable {name!r} of {path} is not supported: "
                          "take the magnitude first (abs(x) in MATLAB)")  # fmt: skip
    if not isinstance(dtype, np.dtype):
        raise FormatError(f"variable {name!r} in {path} is a {dtype}, not a numeric array")
    if len(shape) not in (2, 3):
        raise InvalidDataError(
            f"variable {name!r} in {path} has shape {shape}: need rows x cols (x bands)"
        )
    return check_shape(shape, f"variable {name!r} in {path}"), dtype


def files_matlab(path: Path, key: str | None, allow_external: bool) -> tuple[Path, ...]:
    """The real paths of every file a load of ``path:key`` reads: the file itself first.

    Parameters
    ----------
    path : Path
        ``.mat`` file.
    key : str or None
        Variable name; None picks as :func:`load_matlab` does.
    allow_external : bool
        As for :func:`load_matlab`; when False, a refused reference raises here too.

    Returns
    -------
    tuple of Path
        ``path``, and for v7.3 the other files its variable's data lies in.

    Raises
    ------
    FormatError
        If the file is not a MAT-file, the key is missing, or a reference is refused.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     scipy.io.savemat(Path(d) / "a.mat", {"x": np.zeros((2, 2))})
    ...     [p.name for p in files_matlab(Path(d) / "a.mat", "x", False)]
    ['a.mat']
    """
    if not h5py.is_hdf5(path):
        return (real_path(path),)
    variables = v73_variables(path)
    names = [_pick(variables, key, path), *_meta_variables(variables)]
    return tuple(dict.fromkeys((real_path(path), *_v73_references(path, names, allow_external))))


def check_key_matlab(path: Path, key: str | None) -> None:
    """Refuse an output variable name MATLAB cannot use or volsr reserves.

    Parameters
    ----------
    path : Path
        Output file (messages only).
    key : str or None
        Variable name; None (``data``) is fine.

    Returns
    -------
    None

    Raises
    ------
    FormatError
        If ``key`` is not a MATLAB identifier (a letter, then up to 62 letters, digits or
        ``_``), is a keyword, or is one of the metadata names volsr writes and reads
        (``affine``, ``wavelengths``, ``wavelength``, ``wl``, ``fwhm``; any case).

    Examples
    --------
    >>> check_key_matlab(Path("o.mat"), "affine")
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: MATLAB variable name 'affine' for o.mat is reserved for volsr's metadata (affine, fwhm, wavelength, wavelengths, wl); choose another, e.g. o.mat:data
    """
    if key is None:
        return
    if key.lower() in _META_NAMES:
        raise FormatError(f"MATLAB variable name {key!r} for {path} is reserved for volsr's metadata "
                          f"({', '.join(sorted(_META_NAMES))}); choose another, e.g. {path}:data")  # fmt: skip
    if not _IDENTIFIER.fullmatch(key) or key in _KEYWORDS:
        raise FormatError(f"MATLAB variable name {key!r} for {path} is not a valid identifier (a "
                          "letter, then up to 62 letters, digits or '_'; not a keyword)")  # fmt: skip


def stored_dtype_matlab(dtype: np.dtype) -> np.dtype:
    """The dtype :func:`save_matlab` stores for ``dtype`` (float16 is written as single).

    Parameters
    ----------
    dtype : numpy.dtype
        Dtype of the volume.

    Returns
    -------
    numpy.dtype

    Raises
    ------
    FormatError
        If MATLAB has no class for it (complex, strings, records).

    Examples
    --------
    >>> stored_dtype_matlab(np.dtype(np.float16))
    dtype('float32')
    """
    return storable_dtype(dtype, where="MATLAB", allowed=frozenset(CLASS_OF_DTYPE),
                          widen={np.dtype(np.float16): np.dtype(np.float32)})  # fmt: skip


def _meta_variables(variables: dict[str, tuple[tuple[int, ...], Any]]) -> list[str]:
    return [n for n, (_, t) in variables.items() if n.lower() in _META_NAMES and isinstance(t, np.dtype)]


def _v73_references(path: Path, names: list[str], allow_external: bool) -> tuple[Path, ...]:
    files: list[Path] = []
    try:
        with h5py.File(path, "r") as handle:
            for name in names:
                files += open_dataset(handle, path, "/" + name, allow_external=allow_external)[1]
    except OSError as exc:
        raise FormatError(f"not a readable MAT-file (v7.3): {path} ({exc})") from exc
    return tuple(files)


def save_matlab(volume: Volume, path: Path, key: str | None, options: SaveOptions) -> None:
    """Write a volume as one MATLAB variable, rows x cols (x bands).

    Arrays under 2 GiB are written as v5 (``scipy.io.savemat``, compressed; SciPy needs the
    whole array in memory, so it is computed once); larger ones as v7.3 (HDF5 with MATLAB's
    header, streamed chunk by chunk). Wavelengths and fwhm (nm) go in ``wavelengths`` and
    ``fwhm`` column vectors, a non-identity affine in ``affine``.

    Parameters
    ----------
    volume : Volume
        2D, or 3D with the non-spatial axis moved last. Complex and float16 are refused /
        widened: float16 is written as single.
    path : Path
        New ``.mat`` file.
    key : str or None
        Variable name (a MATLAB identifier); None writes ``data``.
    options : SaveOptions
        ``chunks`` (v7.3 only): HDF5 chunk shape in MATLAB order; None lets h5py choose.

    Returns
    -------
    None

    Raises
    ------
    FormatError
        If the key is refused by :func:`check_key_matlab`, the volume is not 2D or 3D, or
        its dtype has no MATLAB class.

    Examples
    --------
    >>> import tempfile
    >>> v = Volume(np.ones((4, 5, 2), np.float32), np.eye(4), ("i", "j", "band"),
    ...            wavelengths=[450.0, 550.0])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_matlab(v, Path(d) / "a.mat", "cube", SaveOptions())
    ...     sorted(scipy.io.whosmat(Path(d) / "a.mat"))
    [('cube', (4, 5, 2), 'single'), ('wavelengths', (2, 1), 'double')]
    """
    name = DEFAULT_KEY if key is None else key
    check_key_matlab(path, name)
    data = _matlab_order(volume)
    stored = stored_dtype_matlab(data.dtype)
    data = data if stored == data.dtype else data.astype(stored)
    extras = {}
    if not np.allclose(volume.affine, np.eye(4)):
        extras["affine"] = volume.affine
    for field in ("wavelengths", "fwhm"):
        if getattr(volume, field) is not None:
            extras[field] = getattr(volume, field).reshape(-1, 1)
    if data.nbytes < V73_MIN_BYTES:
        # scipy.io.savemat writes from memory only: compute the dask array once.
        variables = {name: np.asarray(data.compute()), **extras}
        with open(path, "wb") as handle:
            scipy.io.savemat(handle, variables, do_compression=True, oned_as="column")
    else:
        _save_v73(path, name, data, extras, options.chunks)


def _matlab_order(volume: Volume) -> da.Array:
    if volume.ndim not in (2, 3):
        raise FormatError(f"MATLAB files hold rows x cols (x bands) arrays; got axes {volume.axes}")
    spatial = list(volume.spatial_axes)
    other = [n for n, axis in enumerate(volume.axes) if axis in NONSPATIAL_AXES]
    return volume.data.transpose(spatial + other)


def _save_v73(
    path: Path, name: str, data: da.Array, extras: dict[str, np.ndarray], chunks: Any
) -> None:
    with h5py.File(path, "w", userblock_size=512) as handle:
        stored_chunks = (
            True
            if chunks is None
            else tuple(
                min(int(c), int(n))
                for c, n in zip(reversed(chunks), reversed(data.shape), strict=True)
            )
        )
        cls = CLASS_OF_DTYPE[np.dtype(data.dtype)]
        target = handle.create_dataset(
            name,
            shape=tuple(reversed(data.shape)),
            dtype=np.uint8 if cls == "logical" else data.dtype,
            chunks=stored_chunks,
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        _mark(target, cls)
        for extra, values in extras.items():
            _mark(handle.create_dataset(extra, data=np.asarray(values, np.float64).T), "double")
        # h5py is not thread-safe for writes: the lock serialises them, reads stay parallel.
        da.store(data.transpose().astype(target.dtype), target, lock=True)
    with open(path, "r+b") as raw:
        raw.write(_v73_header())


def _mark(dataset: h5py.Dataset, cls: str) -> None:
    dataset.attrs.create("MATLAB_class", np.bytes_(cls))
    if cls == "logical":
        dataset.attrs.create("MATLAB_int_decode", np.int32(1))


def _v73_header() -> bytes:
    # MAT-file header: 116 bytes of text, 8-byte subsystem offset, version 0x0200, "IM".
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime())
    text = f"MATLAB 7.3 MAT-file, Platform: volsr, Created on: {stamp} HDF5 schema 1.00 ."
    return text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"


def _v73_data(path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> da.Array:
    stored = tuple(reversed(shape))
    # MATLAB stores logical as uint8, which is also what volsr hands on for bool.
    source = HDF5Array(path, "/" + name, stored, voxel_dtype(dtype, f"variable {name!r} of {path}"))
    return da.from_array(
        source, chunks=dask_chunks(stored, source.dtype, None), meta=np.empty((0,) * len(shape), source.dtype)
    ).transpose()


def _pick(variables: dict[str, tuple[tuple[int, ...], Any]], key: str | None, path: Path) -> str:
    listing = ", ".join(
        f"{n} {'x'.join(map(str, s))} {_class(t)}" for n, (s, t) in variables.items()
    )
    if key is not None:
        if key not in variables:
            raise FormatError(f"no variable {key!r} in {path} (variables: {listing or 'none'})")
        return key
    arrays = [
        n for n, (_, t) in variables.items()
        if isinstance(t, np.dtype) and not n.startswith("_") and n.lower() not in _META_NAMES
    ]  # fmt: skip
    if len(arrays) != 1:
        raise FormatError(
            f"{path} holds {len(arrays)} candidate arrays; name one as {path}:name "
            f"(variables: {listing or 'none'})"
        )
    return arrays[0]


def _class(kind: Any) -> str:
    return CLASS_OF_DTYPE.get(kind, str(kind)) if isinstance(kind, np.dtype) else str(kind)


def _read_small(
    path: Path, variables: dict[str, tuple[tuple[int, ...], Any]], v73: bool
) -> dict[str, np.ndarray]:
    """Read the metadata variables (a few hundred numbers) eagerly, keyed by lower-case name;
    one too large to be metadata is ignored rather than read."""
    wanted = [n for n in _meta_variables(variables) if math.prod(variables[n][0]) <= _MAX_META_VALUES]
    if not wanted:
        return {}
    try:
        if v73:
            with h5py.File(path, "r") as handle:
                found = {n: np.asarray(handle[n]).T for n in wanted}
        else:
            found = scipy.io.loadmat(path, variable_names=wanted)
    except READ_ERRORS as exc:
        raise FormatError(f"cannot read metadata variables of {path}: {first_line(exc)}") from exc
    return {n.lower(): np.asarray(found[n], dtype=np.float64) for n in wanted}


def _spectral(
    small: dict[str, np.ndarray], bands: int, path: Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    names = [n for n in _WAVELENGTH_NAMES if n in small]
    if not bands or not names:
        return None, None
    wavelengths = small[names[0]].reshape(-1)
    if wavelengths.size != bands:
        warnings.warn(
            f"ignoring {names[0]!r} in {path}: {wavelengths.size} values for {bands} bands",
            stacklevel=3,
        )
        return None, None
    factor = 1000.0 if np.all(wavelengths < 100) else 1.0  # micrometres -> nm
    fwhm = small.get("fwhm")
    fwhm = None if fwhm is None or fwhm.size != bands else fwhm.reshape(-1) * factor
    return wavelengths * factor, fwhm


def _read_v5(path: Path, name: str) -> np.ndarray:
    try:
        return np.asarray(scipy.io.loadmat(path, variable_names=[name])[name])
    except (*READ_ERRORS, scipy.io.matlab.MatReadError) as exc:
        raise FormatError(f"cannot read variable {name!r} of {path}: {first_line(exc)}") from exc


FORMAT = Format(
    name="matlab", suffixes=(".mat",), load=load_matlab, save=save_matlab, takes_key=True,
    files=files_matlab, check_key=check_key_matlab, stored_dtype=stored_dtype_matlab,
)  # fmt: skip
