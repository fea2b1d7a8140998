"""What every format module shares: the format record, path parsing and atomic output."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from volsr.errors import FormatError, GeometryError, OutputExistsError
from volsr.io.outputs import (
    clean_leftovers,
    output_lock,
    replace_together,
    replace_with,
    temporary_sibling,
)
from volsr.volume import Volume

__all__ = [
    "FileArray",
    "Format",
    "SaveOptions",
    "MAX_VOXELS",
    "split_key",
    "atomic_output",
    "check_readable",
    "check_writable",
    "check_shape",
    "voxel_dtype",
    "storable_dtype",
    "final_path",
    "real_path",
]

#: Most voxels a volume may declare (2**45, about 3.5e13: 32768**3). Far beyond any file
#: volsr can process, and far below what a corrupt header can declare (10**18 voxels
#: would build a dask graph of 4e12 blocks); every reader refuses a larger shape at once.
MAX_VOXELS = 2**45
#: Kinds of the dtypes a reader hands on: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


@dataclasses.dataclass(frozen=True)
class SaveOptions:
    """Options every writer understands.

    Parameters
    ----------
    chunks : tuple of int, optional
        Chunk shape for chunked formats (Zarr, HDF5), one per array axis; None picks a default.
    companions : list of (Path, Path)
        Filled by writers of multi-file formats: ``(temporary, final)`` of each file besides
        the main one (an ENVI binary), renamed together with it (:func:`atomic_output`).
    """

    chunks: tuple[int, ...] | None = None
    companions: list[tuple[Path, Path]] = dataclasses.field(default_factory=list)


def _own_file(path: Path, key: str | None, allow_external: bool) -> tuple[Path, ...]:
    return (real_path(path),)


def _no_key(path: Path, key: str | None) -> None:
    if key is not None:
        raise FormatError(f"{path.name} takes no ':key', got {key!r}")


def _native_dtype(dtype: np.dtype) -> np.dtype:
    return storable_dtype(dtype, where="the output format")


@dataclasses.dataclass(frozen=True)
class Format:
    """One file format: its suffixes and its reader/writer.

    Parameters
    ----------
    name : str
        Short name shown to users (``"nifti"``, ``"zarr"``, ...).
    suffixes : tuple of str
        Lower-case suffixes, longest first where they overlap (``".nii.gz"``).
    load : callable ``(path, key, *, allow_external=False) -> Volume``
        Lazy reader; ``key`` is the part after ``:`` (None if absent). ``allow_external``
        lets a file's data live in other files (HDF5 external storage, external links,
        virtual datasets); formats without such references ignore it.
    save : callable ``(volume, path, key, options) -> None``
        Writer; ``path`` does not exist yet (the caller renames it into place).
    takes_key : bool
        Whether ``file:key`` addressing applies (HDF5 and MATLAB files).
    files : callable ``(path, key, allow_external) -> tuple of Path``
        The real paths of every file a load reads; default: ``path`` itself.
    check_key : callable ``(path, key) -> None``
        Refuses (FormatError) an output key the writer cannot use; default: a key is refused.
    stored_dtype : callable ``(dtype) -> numpy.dtype``
        The dtype the writer stores for ``dtype`` (lossless widening, native byte order), or
        FormatError; default: :func:`storable_dtype` without widening.
    """

    name: str
    suffixes: tuple[str, ...]
    load: Callable[..., Volume]
    save: Callable[[Volume, Path, str | None, SaveOptions], None]
    takes_key: bool = False
    files: Callable[[Path, str | None, bool], tuple[Path, ...]] = _own_file
    check_key: Callable[[Path, str | None], None] = _no_key
    stored_dtype: Callable[[np.dtype], np.dtype] = _native_dtype


class FileArray:
    """Base of the lazy array-likes that reopen their file by path on every read.

    Dask workers then receive paths, never open handles. Subclasses call
    :meth:`_describe` in their constructor and implement ``__getitem__``.

    Parameters
    ----------
    None

    Examples
    --------
    >>> a = FileArray()
    >>> a._describe(Path("/"), (2, 3), np.dtype(np.float32))
    >>> a.shape, a.ndim
    ((2, 3), 2)
    """

    #: Tag that starts the Dask token (one per format).
    kind = "volsr-file"
    #: Variable or dataset inside the file, if the format has several.
    name: str | None = None

    def _describe(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __dask_tokenize__(self) -> tuple[object, ...]:
        stat = os.stat(self.path)
        return (self.kind, str(self.path), self.name, stat.st_mtime_ns, stat.st_size, self.shape)


def real_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path with every symbolic link resolved (``os.path.realpath``).

    Parameters
    ----------
    path : str or path
        Any path, existing or not.

    Returns
    -------
    Path

    Examples
    --------
    >>> real_path("/tmp/../tmp/x.nii") == real_path("/tmp/x.nii")
    True
    """
    return Path(os.path.realpath(path))


def check_shape(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """Refuse a declared shape that no file can hold, before anything is built on it.

    Parameters
    ----------
    shape : tuple of int
        Array shape as a header declares it.
    where : str
        What declares it, for messages (``"NIfTI header of scan.nii"``).

    Returns
    -------
    tuple of int
        The shape, as Python ints.

    Raises
    ------
    FormatError
        If a size is negative, or the shape has more than :data:`MAX_VOXELS` voxels.
    GeometryError
        If a size is zero.

    Examples
    --------
    >>> check_shape((10**6,) * 3, "header of x.nii")
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: header of x.nii declares shape (1000000, 1000000, 1000000) = 1e+18 voxels, beyond volsr's limit of 3.5e+13 (a corrupt header?)
    """
    sizes = tuple(int(n) for n in shape)
    if any(n < 0 for n in sizes):
        raise FormatError(f"{where} declares a negative size in shape {sizes} (a corrupt header?)")
    if any(n == 0 for n in sizes):
        raise GeometryError(f"zero-size axis in shape {sizes} ({where})")
    total = math.prod(sizes)
    if total > MAX_VOXELS:
        raise FormatError(
            f"{where} declares shape {sizes} = {total:.2g} voxels, beyond volsr's limit of "
            f"{MAX_VOXELS:.2g} (a corrupt header?)"
        )
    return sizes


def voxel_dtype(dtype: np.dtype, where: str) -> np.dtype:
    """The dtype a reader hands on for a stored dtype, or a refusal.

    Policy, the same for every format: integers and float16/32/64 are kept, in native byte
    order (big-endian files read correctly); bool (HDF5, Zarr, MATLAB ``logical``) becomes
    uint8 (0 and 1), so that models and arithmetic get a number; complex, long double,
    strings, objects and compound/void records are refused.

    Parameters
    ----------
    dtype : numpy.dtype
        Stored dtype.
    where : str
        What holds it, for messages (``"dataset /d in v.h5"``).

    Returns
    -------
    numpy.dtype
        Native-order numeric dtype.

    Raises
    ------
    FormatError
        If the dtype is complex, wider than float64, or not numeric.

    Examples
    --------
    >>> voxel_dtype(np.dtype(">f4"), "x"), voxel_dtype(np.dtype(bool), "x")
    (dtype('float32'), dtype('uint8'))
    >>> voxel_dtype(np.dtype("c8"), "dataset /d in v.h5")
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: complex data (complex64) in dataset /d in v.h5 is not supported: take the magnitude first (or store real and imaginary parts as separate volumes)
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c" or (dtype.fields and set(dtype.fields) == {"real", "imag"}):
        shown = dtype if dtype.kind == "c" else "real/imag record"
        raise FormatError(
            f"complex data ({shown}) in {where} is not supported: take the magnitude first "
            "(or store real and imaginary parts as separate volumes)"
        )
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields or dtype.subdtype:
        raise FormatError(f"{where} holds dtype {dtype}, not numbers: volsr reads integers and floats")
    if dtype.kind == "f" and dtype.itemsize > 8:
        raise FormatError(f"{where} holds {dtype} (long double): convert it to float64 first")
    return np.dtype(np.uint8) if dtype.kind == "b" else dtype.newbyteorder("=")


def storable_dtype(
    dtype: np.dtype, *, where: str, allowed: frozenset[np.dtype] | None = None,
    widen: dict[np.dtype, np.dtype] | None = None,
) -> np.dtype:  # fmt: skip
    """The dtype a writer stores for ``dtype``: native order, lossless widening, or a refusal.

    Parameters
    ----------
    dtype : numpy.dtype
        Dtype of the volume to write.
    where : str
        The format, for messages (``"ENVI"``).
    allowed : frozenset of numpy.dtype, optional
        Dtypes the format stores (after widening); None: any integer, float16/32/64 or bool.
    widen : dict, optional
        Lossless replacements (``{bool: uint8, float16: float32}``) for dtypes not allowed.

    Returns
    -------
    numpy.dtype
        Native-order dtype to store.

    Raises
    ------
    FormatError
        If the dtype is complex, not numeric, or not storable by the format.

    Examples
    --------
    >>> storable_dtype(np.dtype(np.float16), where="NIfTI",
    ...                widen={np.dtype(np.float16): np.dtype(np.float32)})
    dtype('float32')
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise FormatError(f"{where} output: complex data ({dtype}) is not supported: take the "
                          "magnitude first")  # fmt: skip
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields or (dtype.kind == "f" and dtype.itemsize > 8):
        raise FormatError(f"{where} output: cannot store dtype {dtype}; volsr writes integers and floats")
    dtype = dtype.newbyteorder("=")
    dtype = (widen or {}).get(dtype, dtype)
    if allowed is not None and dtype not in allowed:
        names = ", ".join(sorted(str(d) for d in allowed))
        raise FormatError(f"{where} cannot store dtype {dtype}; convert to one of: {names}")
    return dtype


def split_key(spec: str | os.PathLike[str], key_suffixes: tuple[str, ...]) -> tuple[Path, str | None]:
    """Split ``"file.mat:key"`` into the path and the key.

    Parameters
    ----------
    spec : str or path
        A path, optionally followed by ``:key`` when its suffix is in ``key_suffixes``.
    key_suffixes : tuple of str
        Lower-case suffixes whose files hold named arrays.

    Returns
    -------
    path : Path
    key : str or None

    Raises
    ------
    FormatError
        If the key is empty.

    Examples
    --------
    >>> split_key("cube.mat:data", (".mat",))
    (PosixPath('cube.mat'), 'data')
    """
    text = os.fspath(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(key_suffixes):
        if not tail:
            raise FormatError(f"empty key after ':' in {text!r}")
        return Path(head), tail
    return Path(text), None


def check_readable(path: Path) -> None:
    """Raise a clear error if ``path`` does not exist or is not readable.

    Parameters
    ----------
    path : Path
        File or directory to read.

    Returns
    -------
    None

    Raises
    ------
    FormatError
        If it does not exist or cannot be read.

    Examples
    --------
    >>> check_readable(Path("/"))
    """
    if not path.exists():
        raise FormatError(f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise FormatError(f"cannot read {path}: permission denied")


def check_writable(path: Path, *, overwrite: bool) -> None:
    """Refuse an output that exists (unless ``overwrite``) or whose folder is not writable.

    Parameters
    ----------
    path : Path
        Final output path (file or directory).
    overwrite : bool
        Whether an existing ``path`` may be replaced.

    Returns
    -------
    None

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    FormatError
        If the output folder does not exist or is not writable.

    Examples
    --------
    >>> check_writable(Path("/no/such/folder/x.nii"), overwrite=False)
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: output folder does not exist: /no/such/folder
    """
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output exists: {path} (pass --overwrite to replace it)")
    folder = path.parent
    if not folder.is_dir():
        raise FormatError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FormatError(f"output folder is not writable: {folder}")


@contextlib.contextmanager
def atomic_output(
    path: Path, *, overwrite: bool, companions: Sequence[tuple[Path, Path]] = ()
) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    A failed or interrupted write leaves no partial output under ``path``; an existing
    output is replaced only after the new one is complete
    (:func:`volsr.io.outputs.replace_with`). The output's lock is held throughout (a second
    writer fails at once: :class:`volsr.io.outputs.LockedError`), and what killed writers
    left beside it is tidied first (:func:`volsr.io.outputs.clean_leftovers`).

    Parameters
    ----------
    path : Path
        Final output path (file or directory).
    overwrite : bool
        Replace an existing ``path``; otherwise refuse.
    companions : sequence of (Path, Path)
        ``(temporary, final)`` of other files the block writes (read when the block ends:
        a list the writer fills), renamed together with ``path``, all or none
        (:func:`volsr.io.outputs.replace_together`).

    Yields
    ------
    Path
        Where to write (same folder, hidden temporary name).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    FormatError
        If the output folder does not exist or is not writable.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with atomic_output(Path(d) / "a.txt", overwrite=False) as tmp:
    ...         _ = tmp.write_text("x")
    ...     (Path(d) / "a.txt").read_text()
    'x'
    """
    path = Path(path)
    check_writable(path, overwrite=overwrite)
    with output_lock(path):
        clean_leftovers(path)
        check_writable(path, overwrite=overwrite)  # again, now that no other run can write it
        temporary = temporary_sibling(path, uuid.uuid4().hex[:8])
        try:
            yield temporary
            if companions:
                replace_together([*companions, (temporary, path)], path)
            else:
                replace_with(temporary, path)
        finally:
            _remove(temporary)
            for partial, _ in companions:
                _remove(partial)


def final_path(path: Path) -> Path:
    """The path that :func:`atomic_output`'s temporary ``path`` will be renamed to.

    Writers of multi-file formats (ENVI: ``x.hdr`` plus ``x.img``) need the final name to
    place their companion file; any other path is returned unchanged.

    Parameters
    ----------
    path : Path
        A temporary path yielded by :func:`atomic_output`, or any path.

    Returns
    -------
    Path
        The final path.

    Examples
    --------
    >>> final_path(Path("out/.cube.hdr.tmp-0123abcd"))
    PosixPath('out/cube.hdr')
    """
    path = Path(path)
    name, sep, tag = path.name.rpartition(".tmp-")
    if sep and name.startswith(".") and len(tag) == 8 and all(c in "0123456789abcdef" for c in tag):
        return path.with_name(name[1:])
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
