"""The acquisition model of an input: slice thickness and slice gap per spatial axis (mm).

One model per input, built once from what is known about the scan -- a BIDS sidecar's
``SliceThickness`` and ``SpacingBetweenSlices`` (DICOM fields, mm, as dcm2niix writes them),
else the header's voxel spacing -- and used by everything that describes or re-degrades the
acquisition (the BIDS derivatives' sidecars today).

Conventions: thickness and gap are in mm, one per spatial axis, in affine-column (array)
order. The slice axis is the axis with the largest voxel spacing (the last of them on a tie:
NIfTI files from 2-D acquisitions keep slices on the last axis). Only the slice axis takes
the sidecar's values; every other axis has thickness = voxel spacing and gap 0. The slice
spacing is ``thickness + gap``; a negative gap means overlapping slices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from volsr.errors import GeometryError

__all__ = ["AcquisitionModel", "acquisition_from_spacing"]

Origin = Literal["sidecar", "header", "contiguous"]


@dataclasses.dataclass(frozen=True)
class AcquisitionModel:
    """Per-axis slice thickness and gap of one acquisition.

    Parameters
    ----------
    thickness : (D,) tuple of float
        Slice thickness per spatial axis (mm, > 0).
    gap : (D,) tuple of float
        Gap between slices per spatial axis (mm; negative for overlapping slices).
    slice_axis : int
        Spatial axis of the slices (0 = ``i``).
    thickness_from : {"sidecar", "contiguous"}
        The slice axis's thickness: from the sidecar, or assumed equal to the slice spacing.
    spacing_from : {"sidecar", "header"}
        The slice axis's slice spacing: from the sidecar, or the header's voxel spacing.

    Examples
    --------
    >>> model = acquisition_from_spacing((1.0, 1.0, 4.0), slice_thickness=3.0)
    >>> model.thickness, model.gap, model.slice_axis
    ((1.0, 1.0, 3.0), (0.0, 0.0, 1.0), 2)
    """

    thickness: tuple[float, ...]
    gap: tuple[float, ...]
    slice_axis: int
    thickness_from: Origin = "contiguous"
    spacing_from: Origin = "header"

    @property
    def spacing(self) -> tuple[float, ...]:
        """Slice spacing per spatial axis, ``thickness + gap`` (mm)."""
        return tuple(t + g for t, g in zip(self.thickness, self.gap, strict=True))

    def to_json(self) -> dict[str, Any]:
        """The model as BIDS-style JSON (PascalCase keys, lengths in mm).

        Returns
        -------
        dict
            ``SliceAxis``, ``SliceThickness``, ``SliceGap`` (per axis), ``ThicknessFrom``,
            ``SpacingFrom``.

        Raises
        ------
        None

        Examples
        --------
        >>> acquisition_from_spacing((1.0, 2.0)).to_json()["SliceThickness"]
        [1.0, 2.0]
        """
        return {
            "SliceAxis": self.slice_axis,
            "SliceThickness": [round(t, 6) for t in self.thickness],
            "SliceGap": [round(g, 6) for g in self.gap],
            "ThicknessFrom": self.thickness_from,
            "SpacingFrom": self.spacing_from,
        }


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number of mm, got {value!r}")
    if not (math.isfinite(float(value)) and value > 0):
        raise ValueError(f"{name} must be finite and > 0 mm, got {value!r}")
    return float(value)


def acquisition_from_spacing(
    spacing: Sequence[float],
    *,
    slice_thickness: float | None = None,
    spacing_between_slices: float | None = None,
) -> AcquisitionModel:
    """The acquisition model from the voxel spacing and, where known, the slice facts.

    On the slice axis (largest spacing, the last one on a tie), the slice spacing is
    ``spacing_between_slices`` if given, else the voxel spacing; the thickness is
    ``slice_thickness`` if given, else the slice spacing (contiguous slices); the gap is
    their difference. Every other axis: thickness = voxel spacing, gap 0.

    Parameters
    ----------
    spacing : (D,) sequence of float
        Voxel size per spatial axis (mm, from the header).
    slice_thickness : float, optional
        Slice thickness (mm; BIDS/DICOM ``SliceThickness``).
    spacing_between_slices : float, optional
        Centre-to-centre slice distance (mm; BIDS/DICOM ``SpacingBetweenSlices``).

    Returns
    -------
    AcquisitionModel

    Raises
    ------
    GeometryError
        If ``spacing`` is empty or has a value that is not finite and > 0.
    ValueError
        If ``slice_thickness`` or ``spacing_between_slices`` is not a finite number > 0.

    Examples
    --------
    >>> model = acquisition_from_spacing((1.0, 1.0, 4.0), slice_thickness=3.0,
    ...                                  spacing_between_slices=4.4)
    >>> model.thickness[2], round(model.gap[2], 6), model.spacing_from
    (3.0, 1.4, 'sidecar')
    """
    values = tuple(float(s) for s in spacing)
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise GeometryError(f"spacing must be one finite value > 0 mm per spatial axis, got {values}")
    thickness_mm = None if slice_thickness is None else _positive(slice_thickness, "slice_thickness")
    between = None if spacing_between_slices is None else _positive(spacing_between_slices, "spacing_between_slices")
    largest = max(values)
    axis = max(n for n, s in enumerate(values) if math.isclose(s, largest, rel_tol=1e-6))
    slice_spacing = values[axis] if between is None else between
    thick = slice_spacing if thickness_mm is None else thickness_mm
    thickness = tuple(thick if n == axis else s for n, s in enumerate(values))
    gap = tuple(slice_spacing - thick if n == axis else 0.0 for n in range(len(values)))
    return AcquisitionModel(
        thickness=thickness, gap=gap, slice_axis=axis,
        thickness_from="contiguous" if thickness_mm is None else "sidecar",
        spacing_from="header" if between is None else "sidecar",
    )  # fmt: skip
