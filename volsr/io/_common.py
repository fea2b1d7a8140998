"""What every format module shares: the format record, path parsing and atomic output."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from volsr.errors import FormatError, OutputExistsError
from volsr.volume import Volume

__all__ = [
    "FileArray",
    "Format",
    "SaveOptions",
    "split_key",
    "atomic_output",
    "check_readable",
    "check_writable",
    "final_path",
]


@dataclasses.dataclass(frozen=True)
class SaveOptions:
    """Options every writer understands.

    Parameters
    ----------
    chunks : tuple of int, optional
        Chunk shape for chunked formats (Zarr, HDF5), one per array axis; None picks a default.
    """

    chunks: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Format:
    """One file format: its suffixes and its reader/writer.

    Parameters
    ----------
    name : str
        Short name shown to users (``"nifti"``, ``"zarr"``, ...).
    suffixes : tuple of str
        Lower-case suffixes, longest first where they overlap (``".nii.gz"``).
    load : callable ``(path, key) -> Volume``
        Lazy reader; ``key`` is the part after ``:`` (None if absent).
    save : callable ``(volume, path, key, options) -> None``
        Writer; ``path`` does not exist yet (the caller renames it into place).
    takes_key : bool
        Whether ``file:key`` addressing applies (HDF5 and MATLAB files).
    """

    name: str
    suffixes: tuple[str, ...]
    load: Callable[[Path, str | None], Volume]
    save: Callable[[Volume, Path, str | None, SaveOptions], None]
    takes_key: bool = False


class FileArray:
    """Base of the lazy array-likes that reopen their file by path on every read.

    Dask workers then receive paths, never open handles. Subclasses call
    :meth:`_describe` in their constructor and implement ``__getitem__``.

    Parameters
    ----------
    None

    Raises
    ------
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
def atomic_output(path: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    A failed or interrupted write leaves no partial output under ``path``; an existing
    output is replaced only after the new one is complete.

    Parameters
    ----------
    path : Path
        Final output path (file or directory).
    overwrite : bool
        Replace an existing ``path``; otherwise refuse.

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
    folder = path.parent
    tag = uuid.uuid4().hex[:8]
    temporary = folder / f".{path.name}.tmp-{tag}"
    try:
        yield temporary
        if path.exists():
            old = folder / f".{path.name}.old-{tag}"
            os.replace(path, old)
            os.replace(temporary, path)
            _remove(old)
        else:
            os.replace(temporary, path)
    finally:
        _remove(temporary)


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

    Raises
    ------
    None

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
