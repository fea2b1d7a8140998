"""ENVI ``map info`` <-> affine: north-up map grids in world mm (pixel centres).

ENVI pixel coordinates are 1-based at the upper-left *corner* of a pixel; the affine maps
voxel *centres* (see :mod:`volsr.geometry`), world x = easting, y = northing, converted to
mm from the map units (Meters, Feet, ...; angular units are kept as they are). A rotated
map grid is not supported (a warning, and unit pixels).

On a new grid (upsampled, cropped) the writer rewrites ``map info`` from the affine: the
reference pixel becomes (1, 1), the upper-left corner of the first pixel, at its world
coordinate (which field-of-view-preserving resampling keeps), and the pixel size is the new
one. :func:`grid_fields` moves ``x start``/``y start`` (the 1-based position of the first
pixel in a parent image, ENVI's default 1) and scales ``pixel size`` to match, with or
without ``map info`` (the old grid is then ENVI's pixel grid).
"""

from __future__ import annotations

import warnings

import numpy as np

from volsr.errors import FormatError

__all__ = ["header_items", "map_affine", "map_info", "grid_fields", "MM_PER_MAP_UNIT"]

#: Millimetres per ENVI map unit.
MM_PER_MAP_UNIT = {
    "meters": 1e3, "km": 1e6, "kilometers": 1e6, "feet": 304.8, "us feet": 1200 / 3937 * 1e3,
    "yards": 914.4, "miles": 1609344.0, "nautical miles": 1852000.0, "millimeters": 1.0,
    "centimeters": 10.0, "micrometers": 1e-3,
}  # fmt: skip


def header_items(value: str) -> list[str]:
    """The comma-separated items of an ENVI ``{...}`` value, stripped, empty ones dropped.

    Parameters
    ----------
    value : str
        A raw header value, braces included or not.

    Returns
    -------
    list of str

    Examples
    --------
    >>> header_items("{UTM, 1, 1 , }")
    ['UTM', '1', '1']
    """
    return [item.strip() for item in value.strip().strip("{}").split(",") if item.strip()]


def map_affine(value: str) -> np.ndarray | None:
    """The affine of pixel centres (mm) from an ENVI ``map info`` value.

    Parameters
    ----------
    value : str
        ``{projection, ref x, ref y, easting, northing, dx, dy, ...}``.

    Returns
    -------
    (4, 4) float64 ndarray or None
        None (with a warning) for a rotated grid.

    Raises
    ------
    FormatError
        If the six numbers after the projection are missing or not numbers.

    Examples
    --------
    >>> map_affine("{UTM, 1, 1, 500000, 4100000, 30, 30, units=Meters}")[:2, 3].tolist()
    [500015000.0, 4099985000.0]
    """
    items = header_items(value)
    try:
        rx, ry, east, north, dx, dy = (float(v) for v in items[1:7])
    except ValueError:
        raise FormatError(f"ENVI map info needs 6 numbers after the projection: {value!r}") from None
    options = {k.strip().lower(): v.strip() for k, _, v in (i.partition("=") for i in items[7:] if "=" in i)}
    if float(options.get("rotation", "0")) != 0:
        warnings.warn(
            f"ENVI map info with rotation={options['rotation']} is not supported; using unit pixels",
            stacklevel=4,
        )
        return None
    default = "pixels" if items[0].lower() in ("arbitrary", "pixel") else "meters"
    factor = MM_PER_MAP_UNIT.get(options.get("units", default).lower(), 1.0)
    affine = np.zeros((4, 4))
    # ENVI pixel coordinates are 1-based at the upper-left *corner*: pixel centre = index + 1.5.
    affine[0, 1], affine[0, 3] = dx * factor, (east + (1.5 - rx) * dx) * factor
    affine[1, 0], affine[1, 3] = -dy * factor, (north - (1.5 - ry) * dy) * factor
    affine[2, 2] = affine[3, 3] = 1.0
    return affine


def map_info(template: str, affine: np.ndarray) -> str | None:
    """North-up ``map info`` for ``affine`` keeping the template's projection, or None.

    Parameters
    ----------
    template : str
        The source's ``map info`` (projection, units and extra items are kept).
    affine : (4, 4) float64 ndarray
        Voxel-to-world affine (mm).

    Returns
    -------
    str or None
        None if the affine is not north-up axis-aligned (or the template is rotated).

    Examples
    --------
    >>> affine = map_affine("{UTM, 1, 1, 500000, 4100000, 30, 30, units=Meters}")
    >>> map_info("{UTM, 1, 1, 0, 0, 1, 1, units=Meters}", affine)
    '{UTM, 1, 1, 500000.0, 4100000.0, 30.0, 30.0, units=Meters}'
    """
    items = header_items(template)
    extras = items[7:]
    options = {k.strip().lower(): v.strip() for k, _, v in (i.partition("=") for i in extras if "=" in i)}
    default = "pixels" if items[0].lower() in ("arbitrary", "pixel") else "meters"
    factor = MM_PER_MAP_UNIT.get(options.get("units", default).lower(), 1.0)
    tolerance = 1e-9 * np.abs(affine[:3, :3]).max()
    off_axis = np.abs(affine[[0, 1, 2, 2], [0, 1, 0, 1]]).max()
    if off_axis > tolerance or affine[0, 1] <= 0 or affine[1, 0] >= 0 or "rotation" in options:
        return None
    dx, dy = affine[0, 1] / factor, -affine[1, 0] / factor
    east, north = affine[0, 3] / factor - dx / 2, affine[1, 3] / factor + dy / 2
    numbers = [repr(float(v)) for v in (east, north, dx, dy)]
    return "{" + ", ".join([items[0], "1", "1", *numbers, *extras]) + "}"


def _number(value: float) -> str:
    rounded = round(value)
    return str(int(rounded)) if abs(value - rounded) < 1e-6 else repr(float(value))


def _source_grid(template: dict[str, str]) -> np.ndarray | None:
    """The affine the reader gave the template's cube, or None if its fields are unusable.

    As :func:`volsr.io.envi.load_envi` reads it: ``volsr affine``, else a north-up
    ``map info``, else ENVI's own pixel grid (the identity: unit pixels, pixel (0, 0) at 0).
    """
    if "volsr affine" in template:
        try:
            values = np.array([float(v) for v in header_items(template["volsr affine"])])
        except ValueError:
            return None
        return values.reshape(4, 4) if values.size == 16 else None
    if "map info" not in template:
        return np.eye(4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a rotated source: warned about when it was read
            old = map_affine(template["map info"])
    except FormatError:
        return None
    return np.eye(4) if old is None else old


def grid_fields(template: dict[str, str], affine: np.ndarray) -> dict[str, str]:
    """``x start``, ``y start`` and ``pixel size`` of the template, moved to a new grid.

    The old grid is the one the source was read on (:func:`_source_grid`: its ``volsr
    affine``, else its ``map info``, else ENVI's pixel grid, so a header without ``map
    info`` is moved too); the new one is ``affine``, which must be the old grid scaled and
    shifted per axis (no flip, swap or rotation relative to it). Along x (samples, array
    axis ``j``) with ``s`` = old / new pixel size and ``c`` the new grid's left edge in old
    pixels: ``x start' = (x start - 1 + c) * s + 1`` (1-based, as ENVI's default ``x start =
    1``); ``pixel size' = pixel size / s``; y likewise (lines, ``i``).

    Parameters
    ----------
    template : dict of str to str
        The source header's fields (lower-case keys, raw values).
    affine : (4, 4) float64 ndarray
        The new voxel-to-world affine (mm, pixel centres).

    Returns
    -------
    dict of str to str
        New values of the fields the template has; empty when the source grid is unknown
        or the new grid is not a per-axis scaling and shift of it (the fields are then
        kept as they are).

    Examples
    --------
    >>> old = {"map info": "{UTM, 1, 1, 0, 0, 30, 30}", "x start": "101", "y start": "1",
    ...        "pixel size": "{30, 30, units=Meters}"}
    >>> new = np.diag([1.0, 1, 1, 1]); new[:2, :2] = [[0, 15e3], [-15e3, 0]]
    >>> new[:2, 3] = [7.5e3, -7.5e3]
    >>> grid_fields(old, new)
    {'x start': '201', 'y start': '1', 'pixel size': '{15.0, 15.0, units=Meters}'}
    >>> half = np.diag([0.5, 0.5, 1.0, 1.0]); half[:2, 3] = -0.25  # no map info: 2x the pixel grid
    >>> grid_fields({"x start": "101", "y start": "51"}, half)
    {'x start': '201', 'y start': '101'}
    """
    wanted = [k for k in ("x start", "y start", "pixel size") if k in template]
    old = _source_grid(template) if wanted else None
    if old is None:
        return {}
    try:
        change = np.linalg.solve(old, np.asarray(affine, dtype=np.float64))  # new pixel -> old pixel
    except np.linalg.LinAlgError:
        return {}
    step = np.diag(change)[:2]  # (i, j): new pixel size in old pixels
    skew = max(abs(change[0, 1]), abs(change[1, 0]))
    if not np.all(np.isfinite(change)) or np.any(step <= 0) or skew > 1e-9 * step.max():
        return {}
    factor = (1 / step[1], 1 / step[0])  # x (samples, j), y (lines, i)
    corner = (change @ [-0.5, -0.5, 0.0, 1.0])[:2] + 0.5  # (i, j), old pixels
    fields: dict[str, str] = {}
    for key, s, c in (("x start", factor[0], corner[1]), ("y start", factor[1], corner[0])):
        if key in template:
            try:
                fields[key] = _number((float(template[key]) - 1 + c) * s + 1)
            except ValueError:
                pass  # not a number: kept as written
    if "pixel size" in template:
        items = header_items(template["pixel size"])
        try:
            sizes = [float(v) / float(f) for v, f in zip(items[:2], factor, strict=True)]
            fields["pixel size"] = "{" + ", ".join([*(repr(v) for v in sizes), *items[2:]]) + "}"
        except ValueError:
            pass
    return fields
