"""HDF5 references to other files: external links, external raw storage, virtual datasets.

Three HDF5 features make a read of ``file.h5:/d`` read bytes of *other* files: a link on
the way to ``/d`` that is an external link (``h5py.ExternalLink``), a dataset whose raw
data lives in external files (``external=[(name, offset, size)]``, any file, ``/etc/passwd``
included), and a virtual dataset (VDS) that maps regions of datasets in source files. A
missing VDS source is not an error for HDF5: its region silently reads as the fill value.

volsr reads only what it is given: :func:`open_dataset` checks every link *before*
following it and the dataset's storage before any voxel is read, and refuses external
links, external raw storage, and VDS sources outside the input's folder or missing, unless
``allow_external`` is set. A VDS whose sources all exist inside the input's folder (the
usual way to split a large acquisition into files) is read without the flag. Sources are
checked recursively (a source may itself be virtual or external), up to
:data:`MAX_DEPTH` levels.

File names are resolved the way HDF5 resolves them (``H5F_prefix_open_file``): an
absolute name if it exists, else its base name (or the relative name) under the
``HDF5_VDS_PREFIX`` / ``HDF5_EXT_PREFIX`` folders, then beside the referring file, then
in the working directory; external raw files (``HDF5_EXTFILE_PREFIX``) relative to the
working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from volsr.errors import FormatError
from volsr.io._common import real_path

__all__ = ["open_dataset", "MAX_DEPTH"]

#: Nesting of references followed (a VDS source that is itself a VDS, ...).
MAX_DEPTH = 8
#: Soft links followed while resolving one name (a cycle ends here).
_MAX_HOPS = 64
_HINT = "volsr reads only the file it is given (allow_external=True, --allow-external, to read it)"


def open_dataset(
    handle: h5py.File, path: Path, key: str, *, allow_external: bool
) -> tuple[h5py.Dataset | None, tuple[Path, ...]]:
    """Resolve ``key`` in ``handle`` without following a refused link; check its storage.

    Parameters
    ----------
    handle : h5py.File
        The open input file.
    path : Path
        Its path (messages, and the folder VDS sources must lie in).
    key : str
        Absolute or relative object name (``"/group/dataset"``).
    allow_external : bool
        Follow external links, read external raw storage and VDS sources anywhere.

    Returns
    -------
    dataset : h5py.Dataset or None
        None if ``key`` names nothing or a group.
    files : tuple of Path
        Real paths of the other files a read of the dataset reads (link targets, external
        raw files, VDS sources), without ``path`` itself.

    Raises
    ------
    FormatError
        If a reference is refused (the message names the other file), soft links loop, or
        references nest deeper than :data:`MAX_DEPTH`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with h5py.File(Path(d) / "a.h5", "w") as f:
    ...         f["x"] = h5py.ExternalLink("/elsewhere.h5", "/x")
    ...         open_dataset(f, Path(d) / "a.h5", "/x", allow_external=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: '/x' in .../a.h5 is an external link to /elsewhere.h5:/x; volsr reads only the file it is given (allow_external=True, --allow-external, to read it)
    """
    folder = real_path(path).parent
    return _open(handle, path, key, folder, allow_external, 0, set())


def _open(
    handle: h5py.File, path: Path, key: str, folder: Path, allow: bool, depth: int, seen: set
) -> tuple[h5py.Dataset | None, tuple[Path, ...]]:
    if depth > MAX_DEPTH:
        raise FormatError(f"HDF5 references nest deeper than {MAX_DEPTH} levels at {path}:{key}")
    found, files = _resolve(handle, path, key, allow)
    if not isinstance(found, h5py.Dataset):
        return None, files
    mark = (str(real_path(found.file.filename)), found.name)
    if mark in seen:
        return found, files
    seen.add(mark)
    return found, files + _storage(found, path, folder, allow, depth, seen)


def _resolve(
    handle: h5py.File, path: Path, key: str, allow: bool
) -> tuple[object | None, tuple[Path, ...]]:
    """Walk ``key`` link by link: soft links substituted, external links checked first."""
    parts = [p for p in key.split("/") if p not in ("", ".")]
    node: object = handle["/"]
    files: list[Path] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if not isinstance(node, h5py.Group):
            return None, tuple(files)
        link = node.get(part, getlink=True)
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > _MAX_HOPS:
                raise FormatError(f"soft links loop while resolving {key!r} in {path}")
            if link.path.startswith("/"):
                node = node.file["/"]
            parts[:0] = [p for p in link.path.split("/") if p not in ("", ".")]
            continue
        if isinstance(link, h5py.ExternalLink):
            if not allow:
                raise FormatError(f"{key!r} in {path} is an external link to "
                                  f"{link.filename}:{link.path}; {_HINT}")  # fmt: skip
        elif not isinstance(link, h5py.HardLink):
            return None, tuple(files)
        try:
            node = node[part]
        except (KeyError, OSError) as error:
            raise FormatError(f"cannot follow {part!r} of {key!r} in {path}: {error}") from error
        if isinstance(link, h5py.ExternalLink):
            files.append(real_path(node.file.filename))
    return node, tuple(files)


def _storage(
    dataset: h5py.Dataset, path: Path, folder: Path, allow: bool, depth: int, seen: set
) -> tuple[Path, ...]:
    where = f"dataset {dataset.name} in {path}"
    files: list[Path] = []
    external = dataset.external or []
    if external:
        names = [_external_raw(str(name), dataset.file.filename) for name, _, _ in external]
        if not allow:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            raise FormatError(f"{where} stores its voxels in another file ({names[0]}{more}); {_HINT}")
        files += names
    if dataset.is_virtual:
        for source in dataset.virtual_sources():
            files += _vds_source(dataset, source, path, folder, allow, depth, seen)
    return tuple(files)


def _vds_source(
    dataset: h5py.Dataset, source: object, path: Path, folder: Path, allow: bool, depth: int, seen: set
) -> list[Path]:
    name, inner = str(source.file_name), str(source.dset_name)
    holder = Path(dataset.file.filename)
    where = f"virtual dataset {dataset.name} in {path}"
    found = holder if name == "." else _locate(name, holder, "HDF5_VDS_PREFIX")
    if found is None:
        if not allow:
            raise FormatError(f"{where} maps source file {name!r}, which does not exist (its "
                              "voxels would read as the fill value)")  # fmt: skip
        return []
    found = real_path(found)
    if not allow and not found.is_relative_to(folder):
        raise FormatError(f"{where} reads source file {found}, outside the input's folder {folder}; {_HINT}")
    try:
        with h5py.File(found, "r") as source_file:
            target, nested = _open(source_file, found, inner, folder, allow, depth + 1, seen)
    except OSError as error:
        raise FormatError(f"{where}: cannot open its source file {found}: {error}") from error
    if target is None and not allow:
        raise FormatError(f"{where} maps dataset {inner!r} of {found}, which does not exist (its "
                          "voxels would read as the fill value)")  # fmt: skip
    return [found, *nested]


def _prefixes(variable: str, holder: Path) -> list[Path]:
    origin = str(holder.parent)
    entries = os.environ.get(variable, "").split(os.pathsep)
    return [Path(e.replace("${ORIGIN}", origin)) for e in entries if e]


def _locate(name: str, holder: Path, variable: str) -> Path | None:
    """Where HDF5 finds a referenced file: as named, under the env prefixes, beside, in cwd."""
    given = Path(name)
    if given.is_absolute():
        if given.exists():
            return given
        given = Path(given.name)
    candidates = [p / given for p in _prefixes(variable, holder)]
    candidates += [holder.parent / given, Path.cwd() / given]
    return next((c for c in candidates if c.exists()), None)


def _external_raw(name: str, holder: str) -> Path:
    given = Path(name)
    if not given.is_absolute():
        prefixes = _prefixes("HDF5_EXTFILE_PREFIX", Path(holder))
        given = (prefixes[0] if prefixes else Path.cwd()) / given
    return real_path(given)
