"""ENVI data types at the edges: the rounding, clipping cast on writing, and the binary
``.hdr`` formats (Analyze 7.5, NIfTI) that are not ENVI headers."""

from __future__ import annotations

import threading
from pathlib import Path

import dask.array as da
import numpy as np

__all__ = ["ClippedCast", "binary_header"]

#: ``sizeof_hdr`` of the binary headers sharing the ``.hdr`` suffix: Analyze 7.5 and
#: NIfTI-1 (348 bytes), NIfTI-2 (540 bytes).
_BINARY_SIZES = (348, 540)


def binary_header(header: Path, text: bytes) -> str | None:
    """A one-line message when ``text`` is a binary Analyze/NIfTI header, else None.

    Parameters
    ----------
    header : Path
        The ``.hdr`` file (for the message).
    text : bytes
        Its content (the first 348 bytes suffice).

    Returns
    -------
    str or None
        Names the format found from ``sizeof_hdr`` (the first 4 bytes, either byte order)
        and the NIfTI magic, and how to convert it.

    Examples
    --------
    >>> binary_header(Path("t1.hdr"), (348).to_bytes(4, "big") + bytes(344))
    "t1.hdr is an Analyze 7.5 header (binary, 348 bytes), not an ENVI header: convert it with nibabel to .nii (nibabel.save(nibabel.load('t1.hdr'), 't1.nii'))"
    >>> binary_header(Path("x.hdr"), b"ENVI\\n") is None
    True
    """
    if len(text) < 4:
        return None
    sizes = [int.from_bytes(text[:4], order) for order in ("little", "big")]
    size = next((n for n in sizes if n in _BINARY_SIZES), None)
    if size is None:
        return None
    name = "a NIfTI-2" if size == 540 else "an Analyze 7.5"
    if size == 348 and text[344:347] in (b"ni1", b"n+1"):
        name = "a NIfTI-1"
    target = header.with_suffix(".nii").name
    return (f"{header} is {name} header (binary, {size} bytes), not an ENVI header: convert it "
            f"with nibabel to .nii (nibabel.save(nibabel.load('{header}'), '{target}'))")  # fmt: skip


class ClippedCast:
    """The cast of a dask array to a stored dtype; into an integer type: round, clip, count.

    Parameters
    ----------
    source : numpy.dtype
        The volume's dtype.
    target : numpy.dtype
        The stored dtype. A cast that cannot lose range (any float target, or an integer
        source that fits) is a plain ``astype``; otherwise floats are rounded to the nearest
        integer (NaN to 0) and every value is clipped to the target's range.

    Attributes
    ----------
    count : int
        Values clipped so far (updated as the blocks are written; thread-safe).
    low, high : int or None
        The target's range (None for a float target).

    Examples
    --------
    >>> cast = ClippedCast(np.dtype(np.float32), np.dtype(np.uint8))
    >>> cast.cast(da.from_array(np.array([-3.0, 7.6, 300.0]))).compute().tolist(), cast.count
    ([0, 8, 255], 2)
    """

    def __init__(self, source: np.dtype, target: np.dtype) -> None:
        self.target, self.count, self._lock = np.dtype(target), 0, threading.Lock()
        info = np.iinfo(self.target) if self.target.kind in "iu" else None
        self.low, self.high = (int(info.min), int(info.max)) if info is not None else (None, None)
        self.needed = info is not None and not (np.dtype(source).kind in "iub" and np.can_cast(source, target))

    def cast(self, data: da.Array) -> da.Array:
        """``data`` as the target dtype, lazily (counting clipped values as blocks compute)."""
        if not self.needed:
            return data.astype(self.target)
        return data.map_blocks(self._block, dtype=self.target)

    def _block(self, block: np.ndarray) -> np.ndarray:
        low, high = self.low, self.high
        if block.dtype.kind in "iu":  # integer to a narrower integer: exact comparisons
            info = np.iinfo(block.dtype)
            low, high = max(low, int(info.min)), min(high, int(info.max))
            values = block
        else:
            values = np.rint(np.nan_to_num(np.asarray(block, np.float64), nan=0.0))
        outside = int(np.count_nonzero((values < low) | (values > high)))
        if outside:
            with self._lock:
                self.count += outside
        return np.clip(values, low, high).astype(self.target)
