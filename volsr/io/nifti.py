"""NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel: lazy reads, header-preserving writes.

Reading wraps nibabel's ``ArrayProxy`` in a small picklable array (:class:`NiftiArray`)
that dask slices in whole slabs along the last axis; the proxy applies ``scl_slope`` and
``scl_inter``. The affine is nibabel's ``img.affine`` (sform if its code is set, else qform,
else the pixdim diagonal). Writing keeps the source header (description, units, intent,
codes) and sets the shape, data type, pixdim and a consistent qform/sform for the new data.
A qform can only hold a rotation, zooms and a flip: for a sheared affine the sform holds the
true affine and ``qform_code`` is 0 (unused), rather than a qform that maps elsewhere.

Dtypes (:func:`volsr.io._common.voxel_dtype`): big-endian files are read in native order;
complex, RGB and float128 volumes are refused. A header whose shape is absurd, or whose
voxels end beyond the file, is refused before anything is built on it.
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import dask.array as da
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from volsr.errors import FormatError, InvalidDataError, first_line
from volsr.io._common import (
    FileArray,
    Format,
    SaveOptions,
    check_shape,
    final_path,
    storable_dtype,
    voxel_dtype,
)
from volsr.volume import NONSPATIAL_AXES, SPATIAL_AXES, Volume

__all__ = ["FORMAT", "NiftiArray", "load_nifti", "save_nifti", "stored_dtype_nifti"]

#: Target bytes per dask chunk (a whole number of slabs along the last axis).
_CHUNK_BYTES = 64 * 2**20
#: Errors nibabel, gzip and the OS raise for broken files; re-raised as FormatError.
_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, ValueError)
_GZIP_MAGIC = b"\x1f\x8b"
#: What NIfTI-1/2 store; bool and float16 are widened on writing.
_STORED = frozenset(np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"))
_WIDEN = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}
#: Relative tolerance of a qform that reproduces the affine (float32 header fields).
_QFORM_RTOL = 1e-5


class NiftiArray(FileArray):
    """A lazily read NIfTI voxel array that opens the file by path on every read.

    Dask workers receive the path, never an open handle; the parsed image is cached per
    process and dropped when pickled.

    Parameters
    ----------
    path : Path
        ``.nii`` or ``.nii.gz`` file.
    shape : tuple of int
        On-disk array shape (Fortran order, as nibabel reports it).
    dtype : numpy.dtype
        Returned dtype (native byte order; floating when scaling applies).

    Raises
    ------
    FormatError
        From ``__getitem__`` when the voxels cannot be read (truncated or corrupt file).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "a.nii"
    ...     nib.save(nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4)), p)
    ...     NiftiArray(p, (2, 2, 2), np.dtype(np.int16))[1, 1, :].tolist()
    [6, 7]
    """

    kind = "volsr-nifti"

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._describe(path, shape, dtype)
        self._proxy: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proxy": None}

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            if self._proxy is None:
                self._proxy = nib.load(self.path).dataobj
            block = self._proxy[index]
        except _READ_ERRORS as exc:
            raise FormatError(f"cannot read voxels of {self.path}: {first_line(exc)}") from exc
        return np.asarray(block).astype(self.dtype, copy=False)


def load_nifti(path: Path, key: str | None = None, *, allow_external: bool = False) -> Volume:
    """Open a NIfTI file lazily.

    Parameters
    ----------
    path : Path
        ``.nii`` or ``.nii.gz`` file (NIfTI-1 or NIfTI-2).
    key : None
        NIfTI files hold one array; a key is an error.
    allow_external : bool
        Ignored (a NIfTI file refers to no other file).

    Returns
    -------
    Volume
        Axes ``("i", "j", "k")`` for 3D, ``("i", "j")`` for 2D, ``("i", "j", "k",
        "channel")`` for 4D (a trailing size-1 axis is dropped). Dtype is the on-disk dtype
        (native byte order), or ``result_type(dtype, float32)`` when ``scl_slope``/``scl_inter``
        scale the values. ``meta["nifti_header"]`` holds the raw header bytes.

    Raises
    ------
    FormatError
        If the file is not NIfTI, is truncated, declares a negative or absurd shape, holds
        complex, RGB or float128 voxels, or a key is given.
    GeometryError
        If an axis has zero size or the affine is singular.
    InvalidDataError
        If the array is 1D or has more than four non-singleton axes.

    Examples
    --------
    >>> from nibabel.testing import data_path
    >>> v = load_nifti(Path(data_path) / "example4d.nii.gz")
    >>> v.shape, v.axes
    ((128, 96, 24, 2), ('i', 'j', 'k', 'channel'))
    """
    if key is not None:
        raise FormatError(f"NIfTI files hold one array; got key {key!r} for {path}")
    try:
        img = nib.load(path)
    except _READ_ERRORS as exc:
        raise FormatError(f"not a readable NIfTI file: {path} ({first_line(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise FormatError(f"{path} is a {type(img).__name__}, not a NIfTI volume")
    shape = check_shape(img.shape, f"the NIfTI header of {path}")
    proxy = img.dataobj
    dtype = voxel_dtype(proxy.dtype, f"NIfTI file {path}")
    _check_complete(path, proxy)
    kept = _kept_ndim(shape, path)
    if float(proxy.slope) != 1.0 or float(proxy.inter) != 0.0:
        dtype = np.result_type(dtype, np.float32)
    source = NiftiArray(path, shape, dtype)
    data = da.from_array(
        source, chunks=_slab_chunks(shape, dtype), meta=np.empty((0,) * len(shape), dtype)
    )
    data = data[(Ellipsis,) + (0,) * (len(shape) - kept)] if kept < len(shape) else data
    axes = {2: ("i", "j"), 3: SPATIAL_AXES, 4: (*SPATIAL_AXES, "channel")}[kept]
    meta = {"nifti_header": img.header.binaryblock}
    return Volume(data=data, affine=img.affine, axes=axes, meta=meta)


def save_nifti(volume: Volume, path: Path, key: str | None, options: SaveOptions) -> None:
    """Write a volume as NIfTI, keeping the header of the volume it derives from.

    nibabel writes from an in-memory array (it does not stream), so the dask array is
    computed once, here. ``meta["nifti_header"]`` (if present) supplies the description,
    units, intent and qform/sform codes; the shape, data type, pixdim and both qform and
    sform (the same matrix: the volume affine) are set for the new data. Codes of 0 become
    1 (scanner). A non-spatial axis goes last; a 2D image with bands gets a size-1 ``k``.

    Parameters
    ----------
    volume : Volume
        What to write. ``bool`` data is written as uint8, ``float16`` as float32
        (:func:`stored_dtype_nifti`).
    path : Path
        Output file; gzip-compressed when its name ends ``.gz`` (before any temporary
        ``.tmp-*`` tag added by :func:`volsr.io.atomic_output`).
    key : None
        Must be None.
    options : SaveOptions
        Unused (NIfTI is not chunked).

    Returns
    -------
    None

    Raises
    ------
    FormatError
        If a key is given or NIfTI cannot hold the data type.

    Notes
    -----
    The sform always holds the volume's affine. The qform gets it too when a rotation,
    zooms and a flip reproduce it (to float32 precision); otherwise (shear) ``qform_code``
    is set to 0, so that no reader takes a different qform for the geometry.

    Examples
    --------
    >>> import tempfile
    >>> v = Volume(np.ones((2, 3, 4), np.float32), np.diag([2, 2, 3, 1]), ("i", "j", "k"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_nifti(v, Path(d) / "a.nii.gz", None, SaveOptions())
    ...     nib.load(Path(d) / "a.nii.gz").header.get_zooms()
    (np.float32(2.0), np.float32(2.0), np.float32(3.0))
    """
    if key is not None:
        raise FormatError(f"NIfTI files hold one array; got key {key!r} for {path}")
    if volume.wavelengths is not None:
        warnings.warn(f"NIfTI has no place for band wavelengths: {final_path(path).name} keeps the "
                      f"{volume.wavelengths.size} bands without them (write .zarr, .hdr, .mat "
                      "or .h5 to keep them)", UserWarning, stacklevel=2)
    stored = stored_dtype_nifti(volume.dtype)
    data = _nifti_order(volume)
    # nibabel needs the whole array in memory to write: compute the dask graph once.
    array = np.asarray(data.compute()).astype(stored, copy=False)
    header = _derived_header(volume.meta.get("nifti_header"), array.shape)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        header.set_data_dtype(array.dtype)
    except HeaderDataError as exc:
        raise FormatError(f"NIfTI cannot store dtype {array.dtype}: {first_line(exc)}") from exc
    qcode, scode = (int(header[name]) or 1 for name in ("qform_code", "sform_code"))
    image = image_class(array, volume.affine, header=header)
    _set_forms(image, volume.affine, qcode, scode)
    compressed = final_path(path).name.lower().endswith(".gz")
    with open(path, "wb") as raw:
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as stream:
                image.to_stream(stream)
        else:
            image.to_stream(raw)


def stored_dtype_nifti(dtype: np.dtype) -> np.dtype:
    """The dtype :func:`save_nifti` stores for ``dtype`` (bool as uint8, float16 as float32).

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
        If NIfTI cannot store it (complex, strings, records, long double).

    Examples
    --------
    >>> stored_dtype_nifti(np.dtype(bool))
    dtype('uint8')
    """
    return storable_dtype(dtype, where="NIfTI", allowed=_STORED, widen=_WIDEN)


def _set_forms(image: Any, affine: np.ndarray, qcode: int, scode: int) -> None:
    """sform = the affine; qform = the affine too, or unused when it cannot hold it (shear)."""
    image.set_sform(affine, code=scode)
    image.set_qform(affine, code=qcode)
    qform = image.header.get_qform()
    scale = max(float(np.abs(affine[:3, :3]).max()), 1e-12)
    if not np.allclose(qform[:3, :3], affine[:3, :3], rtol=0, atol=_QFORM_RTOL * scale):
        image.set_qform(None)  # qform_code 0: readers use the sform (pixdim keeps the zooms)


def _kept_ndim(shape: tuple[int, ...], path: Path) -> int:
    kept = len(shape)
    while kept > 3 and shape[kept - 1] == 1:
        kept -= 1
    if kept < 2 or kept > 4:
        raise InvalidDataError(
            f"NIfTI array of shape {shape} is not 2D, 3D or 4D (after dropping trailing "
            f"size-1 axes): {path}"
        )
    return kept


def _slab_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    # NIfTI voxels are stored Fortran-ordered: a slab along the last axis is contiguous
    # on disk, so each chunk is one seek plus one read (one decompression pass for .gz).
    slab_bytes = int(np.prod(shape[:-1])) * dtype.itemsize
    depth = max(1, min(shape[-1], _CHUNK_BYTES // max(slab_bytes, 1)))
    return (*shape[:-1], depth)


def _check_complete(path: Path, proxy: Any) -> None:
    """Raise FormatError if the file ends before its last voxel.

    Plain files: compare the size. Gzip files: the trailer's ISIZE (uncompressed length
    mod 2**32) is read in O(1); only when it disagrees (truncated file, multi-member gzip,
    trailing bytes) is the stream decompressed once, without keeping the output.
    """
    # The proxy's offset, not the header's vox_offset: nibabel zeroes the latter on load.
    expected = int(proxy.offset) + math.prod(int(n) for n in proxy.shape) * np.dtype(proxy.dtype).itemsize
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
        size = handle.seek(0, os.SEEK_END)
        if not compressed:
            if size < expected:
                raise FormatError(f"truncated NIfTI file: {path} has {size} of {expected} bytes")
            return
        handle.seek(max(size - 4, 0))
        if int.from_bytes(handle.read(4), "little") == expected % 2**32:
            return
        handle.seek(0)
        length = _gunzipped_length(handle, path)
    if length < expected:
        raise FormatError(f"truncated NIfTI file: {path} holds {length} of {expected} bytes")


def _gunzipped_length(handle: Any, path: Path) -> int:
    length, fed, pending = 0, False, b""
    inflater = zlib.decompressobj(wbits=31)
    while True:
        pending = pending or handle.read(2**20)
        if not pending:
            break
        try:
            # Bounded output per call: a highly compressible block must not fill memory.
            length += len(inflater.decompress(pending, 2**24))
        except zlib.error as exc:
            raise FormatError(f"corrupt gzip stream in {path}: {exc}") from exc
        fed, pending = True, inflater.unconsumed_tail
        if inflater.eof:  # a gzip member ended; another may follow
            pending = inflater.unused_data
            inflater, fed = zlib.decompressobj(wbits=31), False
    if fed:
        raise FormatError(f"truncated NIfTI file: gzip stream of {path} ends early")
    return length


def _nifti_order(volume: Volume) -> da.Array:
    """Spatial axes first, then the non-spatial one; 2D images with bands get a unit k axis."""
    spatial = list(volume.spatial_axes)
    other = [n for n, name in enumerate(volume.axes) if name in NONSPATIAL_AXES]
    data = volume.data.transpose(spatial + other)
    if other and len(spatial) == 2:
        data = data[:, :, None, :]
    return data


def _derived_header(raw: bytes | None, shape: tuple[int, ...]) -> Any:
    if raw is None:
        header: Any = nib.Nifti1Header()
        header.set_xyzt_units("mm", "sec")
    elif len(raw) == nib.Nifti2Header.template_dtype.itemsize:
        header = nib.Nifti2Header(binaryblock=bytes(raw), check=False)
    else:
        header = nib.Nifti1Header(binaryblock=bytes(raw)[:348], check=False)
    if isinstance(header, nib.Nifti1Header) and not isinstance(header, nib.Nifti2Header):
        if max(shape) > np.iinfo(np.int16).max:  # NIfTI-1 dims are int16
            header = nib.Nifti2Header.from_header(header)
    header["vox_offset"] = 0  # recomputed on write: source extensions are not carried
    header.set_slope_inter(None, None)
    header.set_data_shape(shape)
    return header


FORMAT = Format(
    name="nifti", suffixes=(".nii.gz", ".nii"), load=load_nifti, save=save_nifti,
    stored_dtype=stored_dtype_nifti,
)  # fmt: skip
