"""ENVI raster files: a text header (``x.hdr``) beside a raw binary file, read lazily.

Pairing. The format is chosen by the ``.hdr`` suffix; :func:`load_envi` also accepts the
data file itself and then looks for ``<data>.hdr`` or ``<stem>.hdr``. From a header
``x.hdr`` the data file is the first of ``x``, ``x.img``, ``x.dat``, ``x.raw``, ``x.bsq``,
``x.bil``, ``x.bip`` that exists. The writer writes ``x.img`` (or ``x`` when the header is
named like ``x.img.hdr``).

Array order. Every interleave (BSQ, BIL, BIP) is returned as rows x cols x bands, axes
``("i", "j", "band")`` (lines, samples, bands), by a lazy transpose of a memory map; no
voxel is read until computed.

Values. Wavelengths and fwhm are returned in nm: converted from the ``wavelength units``
field (micrometres, millimetres, nanometres), or, when that field is absent or
``Unknown``, from micrometres if every wavelength is below 100 (no imaging spectrometer
has a band below 100 nm, and no band beyond 100 um). Any other unit (``Index``,
wavenumbers) leaves ``wavelengths`` None and the raw fields in ``meta["envi"]``. The
``reflectance scale factor`` (``meta["reflectance_scale_factor"]``) is *not* applied
(integer reflectance stays integer). The ``data ignore value`` becomes the format-neutral
``meta["nodata"]`` (a float): the reader returns the voxels as stored, and the engine keeps
those pixels no-data through upsampling (:mod:`volsr.engine.nodata`). Both are written back.

The writer stores the volume's dtype, or the ENVI code set in ``meta["envi"]["data type"]``
(floats into integers: rounded, clipped to the range, one warning counting the clipped
values). A binary Analyze/NIfTI ``.hdr`` is refused with a message naming it
(:mod:`volsr.io._envi_types`).

Geometry. ``map info`` (north-up, no rotation) gives the affine of the pixel centres in mm
(world x = easting, y = northing, from map units Meters/Feet/...; angular units are
kept as they are). The writer also stores the full 4x4 affine and the axis names in the
non-standard fields ``volsr affine`` / ``volsr axes`` (other ENVI readers ignore them),
which the reader prefers; this is how 3-D volumes (``k`` written as bands) and oblique
affines round-trip.
"""

from __future__ import annotations

import math
import uuid
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from volsr.errors import FormatError, GeometryError, OutputExistsError
from volsr.geometry import check_affine
from volsr.io._common import Format, SaveOptions, check_shape, final_path, real_path, storable_dtype
from volsr.io._envi_map import grid_fields as _grid_fields
from volsr.io._envi_map import header_items as _items
from volsr.io._envi_map import map_affine as _map_affine
from volsr.io._envi_map import map_info as _map_info
from volsr.io._envi_types import ClippedCast, binary_header
from volsr.io.outputs import clean_leftovers, temporary_sibling
from volsr.volume import SPATIAL_AXES, Volume

__all__ = [
    "FORMAT", "load_envi", "save_envi", "files_envi", "output_files", "stored_dtype_envi",
    "parse_header", "DATA_SUFFIXES",
]  # fmt: skip

#: Data-file suffixes tried after the bare stem, in this order.
DATA_SUFFIXES = (".img", ".dat", ".raw", ".bsq", ".bil", ".bip")
_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
_COMPLEX = {6: "complex64", 9: "complex128"}
#: Lossless replacements on writing for dtypes ENVI has no code for.
_WIDEN = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32),
          np.dtype(np.int8): np.dtype(np.int16)}  # fmt: skip
#: File-order axes -> (lines, samples, bands) order, per interleave.
_TO_ROWS_COLS_BANDS = {"bsq": (1, 2, 0), "bil": (0, 2, 1), "bip": (0, 1, 2)}
_NM_PER_UNIT = {
    "nanometers": 1.0, "nanometer": 1.0, "nm": 1.0, "micrometers": 1e3, "micrometer": 1e3,
    "microns": 1e3, "micron": 1e3, "um": 1e3, "\u00b5m": 1e3, "millimeters": 1e6, "mm": 1e6,
}  # fmt: skip
#: Fields rebuilt from the volume on save (not kept in ``meta["envi"]``).
_STRUCTURAL = {"samples", "lines", "bands", "header offset", "data type", "volsr affine",
               "volsr axes", "wavelength", "fwhm", "wavelength units"}  # fmt: skip
_PER_BAND = {"wavelength", "fwhm", "band names", "bbl", "data gain values", "data offset values",
             "data reflectance gain values", "data reflectance offset values"}  # fmt: skip
_SPECTRAL = ("wavelength", "fwhm", "wavelength units")
_FLOAT_META = {"reflectance scale factor": "reflectance_scale_factor",
               "data ignore value": "nodata"}  # fmt: skip


def parse_header(text: str) -> dict[str, str]:
    """Parse an ENVI header into ``{lower-case key: raw value}``.

    Parameters
    ----------
    text : str
        Header text; the first line must be ``ENVI``. ``{...}`` values may span lines
        (joined with spaces); keys are case-insensitive (returned lower-case, inner
        whitespace collapsed); blank lines and ``;`` comments are skipped.

    Returns
    -------
    dict of str to str
        Values as written, braces included.

    Raises
    ------
    FormatError
        If the first line is not ``ENVI``, a line has no ``=``, or a ``{`` is not closed.

    Examples
    --------
    >>> parse_header("ENVI\\nSamples = 3\\nwavelength = {1,\\n 2}")
    {'samples': '3', 'wavelength': '{1, 2}'}
    """
    lines = text.splitlines()
    if not lines or lines[0].strip().upper() != "ENVI":
        raise FormatError("not an ENVI header: the first line must be 'ENVI'")
    fields: dict[str, str] = {}
    key, parts = None, []
    for number, line in enumerate(lines[1:], start=2):
        if key is not None:
            parts.append(line.strip())
        elif not line.strip() or line.lstrip().startswith(";"):
            continue
        elif "=" not in line:
            raise FormatError(f"ENVI header line {number} has no '=': {line.strip()!r}")
        else:
            name, value = line.split("=", 1)
            key, parts = " ".join(name.lower().split()), [value.strip()]
        if not parts[0].startswith("{") or "}" in parts[-1]:
            fields[key] = " ".join(parts)
            key = None
    if key is not None:
        raise FormatError(f"ENVI header field {key!r} opens '{{' but never closes it")
    return fields


def _integer(fields: dict[str, str], key: str, default: int | None = None) -> int:
    if key not in fields:
        if default is None:
            raise FormatError(f"ENVI header has no {key!r} field")
        return default
    try:
        return int(fields[key])
    except ValueError:
        raise FormatError(f"ENVI header field {key!r} is not an integer: {fields[key]!r}") from None


def _floats(value: str, key: str) -> np.ndarray:
    try:
        return np.array([float(item) for item in _items(value)], dtype=np.float64)
    except ValueError:
        raise FormatError(f"ENVI header field {key!r} is not a list of numbers: {value!r}") from None


def _data_candidates(header: Path) -> list[Path]:
    stem = header.with_suffix("")
    candidates = [stem] + [stem.with_name(stem.name + s) for s in DATA_SUFFIXES]
    return candidates + [stem.with_name(stem.name + s.upper()) for s in DATA_SUFFIXES]


def _find_pair(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix.lower() == ".hdr":
        candidates = _data_candidates(path)
        if not path.is_file():
            raise FormatError(f"no such file: {path}")
        data = next((c for c in candidates if c.is_file()), None)
        if data is None:
            raise FormatError(f"no ENVI data file beside {path}: tried {[c.name for c in candidates]}")
        return path, data
    headers = [path.with_name(path.name + ".hdr"), path.with_suffix(".hdr")]
    header = next((h for h in headers if h.is_file()), None)
    if header is None:
        raise FormatError(f"no ENVI header for {path}: tried {[h.name for h in headers]}")
    return header, path


class _RawCube:
    """A picklable window onto the binary file: opens a memory map per access (no handle kept)."""

    def __init__(self, path: Path, dtype: np.dtype, offset: int, shape: tuple[int, ...]) -> None:
        self.path, self.file_dtype, self.offset, self.shape = str(path), dtype, offset, shape
        self.dtype = dtype.newbyteorder("=")
        self.ndim = len(shape)

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.path, dtype=self.file_dtype, mode=mode, offset=self.offset, shape=self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(self._map("r")[index], dtype=self.dtype)

    def __setitem__(self, index: Any, values: np.ndarray) -> None:
        target = self._map("r+")
        target[index] = values
        target.flush()


def _file_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """About 8 MB per block, whole along the fastest file axes (contiguous reads)."""
    target = max(1, 2**23 // itemsize)
    last = shape[2]
    middle = max(1, min(shape[1], target // last))
    return (max(1, min(shape[0], target // (middle * last))), middle, last)


def _layout(fields: dict[str, str], data: Path) -> tuple[_RawCube, str]:
    lines, samples, bands = (_integer(fields, k) for k in ("lines", "samples", "bands"))
    check_shape((lines, samples, bands), f"ENVI header beside {data} (lines x samples x bands)")
    code = _integer(fields, "data type")
    if code in _COMPLEX:
        raise FormatError(f"complex data (ENVI data type {code}, {_COMPLEX[code]}) in {data} is not "
                          "supported: take the magnitude first")  # fmt: skip
    if code not in _DTYPES:
        raise FormatError(f"unknown ENVI data type {code}; known: {sorted(_DTYPES)}")
    order = _integer(fields, "byte order", 0)
    if order not in (0, 1):
        raise FormatError(f"ENVI byte order must be 0 or 1, got {order}")
    dtype = np.dtype(_DTYPES[code]).newbyteorder("<" if order == 0 else ">")
    interleave = fields.get("interleave", "bsq").strip().lower()
    shapes = {"bsq": (bands, lines, samples), "bil": (lines, bands, samples), "bip": (lines, samples, bands)}
    if interleave not in shapes:
        raise FormatError(f"ENVI interleave must be one of {sorted(shapes)}, got {interleave!r}")
    offset = _integer(fields, "header offset", 0)
    if offset < 0:
        raise FormatError(f"ENVI header offset must be >= 0, got {offset} (header of {data})")
    needed = offset + lines * samples * bands * dtype.itemsize
    size = data.stat().st_size
    if size < needed:
        raise FormatError(
            f"ENVI data file {data} is truncated: {size} bytes, the header needs {needed} "
            f"({lines} lines x {samples} samples x {bands} bands x {dtype.itemsize} bytes + {offset})"
        )
    return _RawCube(data, dtype, offset, shapes[interleave]), interleave


def _wavelengths(fields: dict[str, str], bands: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    unit = fields.get("wavelength units", "unknown").strip().lower()
    spectral = {k: _floats(fields[k], k) for k in ("wavelength", "fwhm") if k in fields}
    for key, values in spectral.items():
        if values.size != bands:
            raise FormatError(f"ENVI header has {values.size} {key} values for {bands} bands")
    if unit in _NM_PER_UNIT:
        factor = _NM_PER_UNIT[unit]
    elif unit == "unknown" and "wavelength" in spectral:
        factor = 1e3 if np.all(spectral["wavelength"] < 100) else 1.0
    else:
        return None, None
    return tuple(spectral[k] * factor if k in spectral else None for k in ("wavelength", "fwhm"))


def _geometry(fields: dict[str, str]) -> np.ndarray:
    if "volsr affine" in fields:
        values = _floats(fields["volsr affine"], "volsr affine")
        if values.size != 16:
            raise FormatError(f"'volsr affine' needs 16 numbers, got {values.size}")
        return values.reshape(4, 4)
    affine = _map_affine(fields["map info"]) if "map info" in fields else None
    return np.eye(4) if affine is None else affine


def load_envi(path: Path, key: str | None, *, allow_external: bool = False) -> Volume:
    """Open an ENVI raster lazily.

    Parameters
    ----------
    path : Path
        The header (``.hdr``) or the data file.
    key : None
        ENVI files take no ``:key``.
    allow_external : bool
        Ignored (the header and its data file are both read in any case).

    Returns
    -------
    Volume
        Dask array, rows x cols x bands (axes ``("i", "j", "band")``, or the axes stored
        by this writer), dtype from ``data type`` in native byte order; affine from
        ``volsr affine``, else ``map info``, else identity; wavelengths/fwhm in nm;
        ``meta["envi"]`` holds the other header fields, ``meta["reflectance_scale_factor"]``
        and ``meta["nodata"]`` (the ``data ignore value``; floats) when present, not applied.

    Raises
    ------
    FormatError
        If the header or data file is missing, malformed (negative sizes or offset, a
        ``data ignore value`` that is not one number, ...), truncated, or complex-valued;
        or if the ``.hdr`` is a binary Analyze 7.5 / NIfTI header (the message says so).
    GeometryError
        If ``lines``, ``samples`` or ``bands`` is 0.

    Examples
    --------
    >>> load_envi(Path("missing.hdr"), None)
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: no such file: missing.hdr
    """
    if key is not None:
        raise FormatError(f"ENVI files take no ':key', got {key!r} for {path}")
    header, data = _find_pair(path)
    try:
        text = header.read_bytes()
    except OSError as error:
        raise FormatError(f"cannot read {header}: {error}") from error
    not_envi = binary_header(header, text)
    if not_envi is not None:
        raise FormatError(not_envi)
    fields = parse_header(text.decode("latin-1"))
    raw, interleave = _layout(fields, data)
    # A deterministic name (path, mtime, header): re-opening the same file reuses dask keys.
    token = tokenize(str(data.resolve()), data.stat().st_mtime_ns, sorted(fields.items()))
    cube = da.from_array(raw, chunks=_file_chunks(raw.shape, raw.dtype.itemsize), name=f"envi-{token}",
                         asarray=False, fancy=False, meta=np.empty((0, 0, 0), raw.dtype))  # fmt: skip
    cube = cube.transpose(_TO_ROWS_COLS_BANDS[interleave])
    wavelengths, fwhm = _wavelengths(fields, cube.shape[2])
    axes = tuple(_items(fields["volsr axes"])) if "volsr axes" in fields else ("i", "j", "band")
    cube, axes = _arrange(cube, axes, header)
    if "band" not in axes:
        wavelengths = fwhm = None
    raw_spectral = wavelengths is None and fwhm is None
    kept = {k: v for k, v in fields.items() if k not in _STRUCTURAL or (raw_spectral and k in _SPECTRAL)}
    meta: dict[str, Any] = {"envi": kept}
    for field, meta_key in _FLOAT_META.items():
        if field in fields:
            values = _floats(fields[field], field)
            if values.size != 1:
                raise FormatError(f"ENVI header field {field!r} of {header} must be one number, "
                                  f"got {fields[field]!r}")  # fmt: skip
            meta[meta_key] = float(values[0])
    try:
        affine = check_affine(_geometry(fields))
    except GeometryError as error:
        raise FormatError(f"{header}: the header's geometry is invalid: {error}") from error
    return Volume(cube, affine, axes, wavelengths=wavelengths, fwhm=fwhm, meta=meta)


def files_envi(path: Path, key: str | None, allow_external: bool) -> tuple[Path, ...]:
    """The real paths of the header and the data file a load of ``path`` reads.

    Parameters
    ----------
    path : Path
        The header or the data file.
    key : None
        ENVI files take no ``:key``.
    allow_external : bool
        Ignored.

    Returns
    -------
    tuple of Path
        ``(header, data file)``.

    Raises
    ------
    FormatError
        If either file is missing.

    Examples
    --------
    >>> files_envi(Path("missing.hdr"), None, False)
    Traceback (most recent call last):
    ...
    volsr.errors.FormatError: no such file: missing.hdr
    """
    return tuple(real_path(p) for p in _find_pair(path))


def output_files(header: Path) -> tuple[Path, ...]:
    """Every file :func:`save_envi` may write or replace for the header ``header``.

    Parameters
    ----------
    header : Path
        Output header path (``x.hdr``).

    Returns
    -------
    tuple of Path
        The header, the data file it writes, and every data file an existing header's pair
        may use (an overwrite replaces that one).

    Examples
    --------
    >>> [p.name for p in output_files(Path("cube.hdr"))][:3]
    ['cube.hdr', 'cube.img', 'cube']
    """
    header = Path(header)
    return tuple(dict.fromkeys([header, _data_path(header), *_data_candidates(header)]))


def stored_dtype_envi(dtype: np.dtype) -> np.dtype:
    """The dtype :func:`save_envi` stores for ``dtype``: bool as uint8, float16 as float32,
    int8 as int16 (ENVI has no code for them).

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
        If ENVI cannot store it (complex is refused: take the magnitude first).

    Examples
    --------
    >>> stored_dtype_envi(np.dtype(np.int8))
    dtype('int16')
    """
    return storable_dtype(dtype, where="ENVI", allowed=frozenset(_CODES), widen=_WIDEN)


def _arrange(cube: da.Array, axes: tuple[str, ...], header: Path) -> tuple[da.Array, tuple[str, ...]]:
    """Rows x cols x bands -> the stored volsr axis order (a 2-D image drops its single band)."""
    third = [name for name in axes if name not in SPATIAL_AXES[:2]]
    if len(axes) == 2 and cube.shape[2] == 1:
        return cube[:, :, 0], axes
    if len(third) != 1 or set(axes) != {"i", "j", third[0]}:
        raise FormatError(f"{header}: 'volsr axes' {axes} do not fit a lines x samples x bands file")
    canonical = ("i", "j", third[0])
    return cube.transpose([canonical.index(name) for name in axes]), axes


def _rows_cols_bands(volume: Volume) -> da.Array:
    axes = volume.axes
    if len(axes) == 2:
        return volume.data[:, :, None]
    third = next(name for name in axes if name not in SPATIAL_AXES[:2])
    return volume.data.transpose([axes.index("i"), axes.index("j"), axes.index(third)])


def _data_path(header: Path) -> Path:
    stem = header.with_suffix("") if header.suffix.lower() == ".hdr" else header
    return stem if stem.suffix.lower() in DATA_SUFFIXES else stem.with_name(stem.name + ".img")


def _numbers(values: np.ndarray) -> str:
    return "{" + ", ".join(repr(float(v)) for v in np.ravel(values)) + "}"


def _header_fields(volume: Volume, shape: tuple[int, ...], code: int, template: dict[str, str],
                   layout: tuple[str, int]) -> dict[str, str]:  # fmt: skip
    lines, samples, bands = shape
    fields = {"description": template.get("description", "{written by volsr}"),
              "samples": str(samples), "lines": str(lines), "bands": str(bands),
              "header offset": "0", "file type": template.get("file type", "ENVI Standard"),
              "data type": str(code), "interleave": layout[0], "byte order": str(layout[1])}  # fmt: skip
    if volume.wavelengths is not None or volume.fwhm is not None:
        fields["wavelength units"] = "Nanometers"
    for key, values in (("wavelength", volume.wavelengths), ("fwhm", volume.fwhm)):
        if values is not None:
            fields[key] = _numbers(values)
    if "map info" in template:
        map_info = _map_info(template["map info"], volume.affine)
        if map_info is None:
            warnings.warn("ENVI 'map info' dropped: the affine is not north-up axis-aligned "
                          "(the full affine is kept in 'volsr affine')", stacklevel=4)  # fmt: skip
        else:
            fields["map info"] = map_info
    fields.update(_grid_fields(template, volume.affine))
    fields["volsr axes"] = "{" + ", ".join(volume.axes) + "}"
    fields["volsr affine"] = _numbers(volume.affine)
    for key, value in template.items():
        per_band_mismatch = key in _PER_BAND and len(_items(value)) != bands
        bad_default = key == "default bands" and any(int(float(v)) > bands for v in _items(value))
        if key not in fields and not per_band_mismatch and not bad_default:
            fields[key] = value
    for field, name in _FLOAT_META.items():
        if name in volume.meta:
            fields[field] = repr(float(volume.meta[name]))
    return fields


def _target_dtype(volume: Volume, template: dict[str, str]) -> np.dtype:
    """The volume's storable dtype, or the ENVI code asked for in ``meta["envi"]["data type"]``."""
    if "data type" not in template:
        return stored_dtype_envi(volume.dtype)
    code = template["data type"].strip()
    if not code.isdigit() or int(code) not in _DTYPES:
        raise FormatError(f"meta['envi']['data type'] must be one of the ENVI codes {sorted(_DTYPES)}, "
                          f"got {code!r}")  # fmt: skip
    dtype = np.dtype(_DTYPES[int(code)])
    value = volume.meta.get("nodata")
    if value is not None and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (float(value).is_integer() and info.min <= float(value) <= info.max):
            raise FormatError(f"the no-data value {value} does not fit ENVI data type {code} ({dtype}); "
                              "write a float type, or change meta['nodata']")  # fmt: skip
    return dtype


def _layout_of(template: dict[str, str]) -> tuple[str, int]:
    interleave = template.get("interleave", "bsq").strip().lower()
    if interleave not in _TO_ROWS_COLS_BANDS:
        raise FormatError(f"meta['envi']['interleave'] must be one of {sorted(_TO_ROWS_COLS_BANDS)}, "
                          f"got {interleave!r}")  # fmt: skip
    order = template.get("byte order", "0").strip()
    if order not in ("0", "1"):
        raise FormatError(f"meta['envi']['byte order'] must be 0 or 1, got {order!r}")
    return interleave, int(order)


def _write_binary(cube: da.Array, target: Path, dtype: np.dtype, interleave: str) -> Path:
    """Write the binary under a temporary name beside ``target``; return that name."""
    to_file = tuple(int(n) for n in np.argsort(_TO_ROWS_COLS_BANDS[interleave]))
    data = cube.transpose(to_file)
    clean_leftovers(target)  # a killed writer's temporary binary (the header's lock is held)
    temporary = temporary_sibling(target, uuid.uuid4().hex[:8])
    try:
        with open(temporary, "wb") as handle:
            handle.truncate(math.prod(data.shape) * dtype.itemsize)
        da.store(data, _RawCube(temporary, dtype, 0, data.shape), lock=False)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def save_envi(volume: Volume, path: Path, key: str | None, options: SaveOptions) -> None:
    """Write an ENVI header and its binary file, one dask block at a time.

    Parameters
    ----------
    volume : Volume
        Axes ``(i, j)``, ``(i, j, band|channel)`` (any order) or ``(i, j, k)``; the third
        axis becomes the ENVI bands. Interleave and byte order come from
        ``meta["envi"]`` (default BSQ, little-endian); other ``meta["envi"]`` fields are
        written back (per-band lists only if their length still matches).
    path : Path
        Header path ``x.hdr``; the binary goes beside the *final* header name under a
        temporary name in ``options.companions``, renamed to ``x.img`` with the header.
    key : None
        ENVI files take no ``:key``.
    options : SaveOptions
        ``companions`` receives the binary (ENVI files are not chunked).

    Returns
    -------
    None

    Raises
    ------
    FormatError
        If a key is given, the dtype has no ENVI code, or the meta interleave/byte order is bad.
    OutputExistsError
        If the binary file exists without its header (it is not ours to replace). When
        the header exists (overwrite), its current data file is replaced in place.

    Examples
    --------
    >>> import os, tempfile
    >>> v = Volume(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), np.eye(4), ("i", "j", "band"),
    ...            wavelengths=[400, 500, 600, 700])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     options = SaveOptions()
    ...     save_envi(v, Path(d) / "cube.hdr", None, options)
    ...     _ = [os.replace(*pair) for pair in options.companions]  # io.save does it with the header
    ...     w = load_envi(Path(d) / "cube.hdr", None)
    ...     w.shape, w.wavelengths.tolist(), int(w.data[1, 2, 3].compute())
    ((2, 3, 4), [400.0, 500.0, 600.0, 700.0], 23)
    """
    if key is not None:
        raise FormatError(f"ENVI files take no ':key', got {key!r} for {path}")
    template = {str(k).lower(): str(v) for k, v in dict(volume.meta.get("envi", {})).items()}
    dtype = _target_dtype(volume, template)
    interleave, order = _layout_of(template)
    header = final_path(Path(path))
    data_file = _data_path(header)
    if header.exists():  # overwriting: reuse the old pair's data file so no stale one shadows ours
        data_file = next((c for c in _data_candidates(header) if c.is_file()), data_file)
    elif data_file.exists():
        raise OutputExistsError(f"ENVI data file {data_file} exists without header {header}")
    clipped = ClippedCast(volume.dtype, dtype)
    cube = clipped.cast(_rows_cols_bands(volume))
    fields = _header_fields(volume, cube.shape, _CODES[dtype], template, (interleave, order))
    # The binary goes under a temporary name too and is renamed together with the header
    # (options.companions: all or none, across a kill), so the old pair stays a pair.
    Path(path).write_text("ENVI\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()))
    binary = _write_binary(cube, data_file, dtype.newbyteorder("<" if order == 0 else ">"), interleave)
    options.companions.append((binary, data_file))
    if clipped.count:
        warnings.warn(f"{clipped.count} values outside the range of {dtype} [{clipped.low}, {clipped.high}] "
                      f"were clipped to it in {header.name} (ENVI data type {_CODES[dtype]})",
                      stacklevel=3)  # fmt: skip


#: The ENVI format record (suffix ``.hdr``; the data file is found beside it).
FORMAT = Format(
    name="envi", suffixes=(".hdr",), load=load_envi, save=save_envi, files=files_envi,
    stored_dtype=stored_dtype_envi,
)  # fmt: skip
