"""Listing the variables of a MAT-file without reading their data (v5 and v7.3).

Each variable is reported as ``name -> (MATLAB shape, numpy dtype or a description)``; a
description (``"complex double"``, ``"struct"``, ``"link"``, ``"plain HDF5 float32"``)
marks a variable volsr cannot read as a volume, and :func:`volsr.io.matlab.load_matlab`
turns it into the matching message.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from volsr.errors import FormatError, first_line

__all__ = ["CLASSES", "CLASS_OF_DTYPE", "READ_ERRORS", "v5_variables", "v73_variables"]

#: MATLAB class -> numpy dtype name.
CLASSES = {
    "double": "float64", "single": "float32", "logical": "bool",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16",
    "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
}  # fmt: skip
#: numpy dtype -> MATLAB class.
CLASS_OF_DTYPE = {np.dtype(v): k for k, v in CLASSES.items()}
_MI_COMPRESSED = 15
_COMPLEX_FLAG = 0x0800
#: Errors SciPy and the OS raise for broken MAT-files.
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, NotImplementedError, TypeError)


def v5_variables(path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The variables of a v4/v5 MAT-file, from their headers.

    Parameters
    ----------
    path : Path
        ``.mat`` file (v4 or v5).

    Returns
    -------
    dict
        ``name -> (shape, numpy dtype or description)``; complex variables are described
        as ``"complex <class>"``.

    Raises
    ------
    FormatError
        If the file is not a MAT-file or is truncated.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     scipy.io.savemat(Path(d) / "a.mat", {"x": np.zeros((2, 3)), "z": np.ones(2) * 1j})
    ...     v5_variables(Path(d) / "a.mat")
    {'x': ((2, 3), dtype('float64')), 'z': ((1, 2), 'complex double')}
    """
    try:
        version = scipy.io.matlab.matfile_version(path)
        entries = scipy.io.whosmat(path)
    except (*READ_ERRORS, scipy.io.matlab.MatReadError) as exc:
        raise FormatError(f"not a readable MAT-file: {path} ({first_line(exc)})") from exc
    if version[0] == 1:
        _check_v5_complete(path)
    complex_flags = _v5_complex_flags(path) if version[0] == 1 else []
    if len(complex_flags) != len(entries):
        complex_flags = [False] * len(entries)  # unknown layout: MatV5Array refuses on reading
    return {
        name: (
            tuple(int(n) for n in shape),
            f"complex {cls}" if is_complex
            else np.dtype(CLASSES[cls]) if cls in CLASSES else cls,
        )
        for (name, shape, cls), is_complex in zip(entries, complex_flags, strict=True)
    }  # fmt: skip


def _v5_complex_flags(path: Path) -> list[bool]:
    """Per top-level variable, in file order: whether its array flags mark it complex.

    ``whosmat`` reports a complex double as ``double``; the flag is bit 0x0800 of the
    first word of the array-flags subelement, which follows the miMATRIX tag (inside the
    zlib stream of an miCOMPRESSED element: only its first 24 bytes are inflated).
    """
    flags = []
    with open(path, "rb") as handle:
        order = "<" if handle.read(128)[126:128] == b"IM" else ">"
        size = handle.seek(0, os.SEEK_END)
        position = 128
        while position + 8 <= size:
            handle.seek(position)
            tag = handle.read(8)
            kind, count = struct.unpack(order + "II", tag)
            head = _inflate_head(handle, count) if kind == _MI_COMPRESSED else tag + handle.read(16)
            word = struct.unpack(order + "I", head[16:20])[0] if len(head) >= 20 else 0
            flags.append(bool(word & _COMPLEX_FLAG))
            position += 8 + count
    return flags


def _inflate_head(handle: Any, count: int) -> bytes:
    inflater, head, left = zlib.decompressobj(), b"", count
    try:
        while len(head) < 24 and left > 0:
            piece = handle.read(min(left, 4096))
            if not piece:
                break
            left -= len(piece)
            head += inflater.decompress(inflater.unconsumed_tail + piece, 24 - len(head))
    except zlib.error:
        return b""
    return head


def _check_v5_complete(path: Path) -> None:
    """Walk the top-level element tags (8 bytes each): every element must end in the file."""
    with open(path, "rb") as handle:
        header = handle.read(128)
        size = handle.seek(0, os.SEEK_END)
        order = "<" if header[126:128] == b"IM" else ">"
        position = 128
        while position + 8 <= size:
            handle.seek(position)
            _, count = struct.unpack(order + "II", handle.read(8))
            position += 8 + count
    if position > size:
        raise FormatError(f"truncated MAT-file: {path} ends {position - size} bytes early")


def v73_variables(path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The top-level variables of a v7.3 MAT-file (HDF5), without following links.

    Parameters
    ----------
    path : Path
        ``.mat`` file (v7.3).

    Returns
    -------
    dict
        ``name -> (MATLAB shape, numpy dtype or description)``; links are described as
        ``"link"``, datasets without ``MATLAB_class`` as ``"plain HDF5 <dtype>"``.

    Raises
    ------
    FormatError
        If the file cannot be read as HDF5.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, h5py.File(Path(d) / "a.mat", "w") as f:
    ...     f["x"] = h5py.ExternalLink("/elsewhere.h5", "/x")
    ...     f.flush()
    ...     v73_variables(Path(d) / "a.mat")
    {'x': ((), 'link')}
    """
    try:
        with h5py.File(path, "r") as handle:
            found = {}
            for name in handle:
                link = handle.get(name, getlink=True)
                # Links are not followed here (an external one reads another file): MATLAB
                # never writes them, and open_dataset judges one that is named.
                found[name] = _v73_entry(name, handle[name] if isinstance(link, h5py.HardLink) else None)
    except OSError as exc:
        raise FormatError(f"not a readable MAT-file (v7.3): {path} ({exc})") from exc
    return found


def _v73_entry(name: str, obj: Any) -> tuple[tuple[int, ...], Any]:
    if obj is None:
        return (), "link"
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode(errors="replace") if isinstance(cls, bytes) else str(cls)
    if name.startswith("#") or not isinstance(obj, h5py.Dataset):
        return (), cls or "group"
    if obj.shape is None:
        return (), f"empty {cls or obj.dtype}"
    shape = tuple(reversed(obj.shape))
    if not cls:  # written by h5py or the like, not MATLAB: axis order unknown
        return tuple(obj.shape), f"plain HDF5 {obj.dtype}"
    if "MATLAB_empty" in obj.attrs or cls not in CLASSES:
        return shape, cls or str(obj.dtype)
    if obj.dtype.fields and {"real", "imag"} <= set(obj.dtype.fields):
        return shape, f"complex {cls}"
    return shape, np.dtype(CLASSES[cls])


