"""volsr.acquisition: per-axis slice thickness and gap from sidecar facts or the header."""

from __future__ import annotations

import pytest

from volsr.acquisition import AcquisitionModel, acquisition_from_spacing
from volsr.errors import GeometryError


@pytest.mark.parametrize(("kwargs", "thickness", "gap", "origin"), [
    ({}, (1.0, 1.0, 4.0), (0.0, 0.0, 0.0), ("contiguous", "header")),
    ({"slice_thickness": 3.0}, (1.0, 1.0, 3.0), (0.0, 0.0, 1.0), ("sidecar", "header")),
    ({"slice_thickness": 3.0, "spacing_between_slices": 3.3}, (1.0, 1.0, 3.0), (0.0, 0.0, 0.3), ("sidecar", "sidecar")),
    ({"spacing_between_slices": 5.0}, (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), ("contiguous", "sidecar")),
    ({"slice_thickness": 5.0}, (1.0, 1.0, 5.0), (0.0, 0.0, -1.0), ("sidecar", "header")),  # overlap
])  # fmt: skip
def test_thickness_and_gap_on_the_slice_axis(kwargs, thickness, gap, origin):
    model = acquisition_from_spacing((1.0, 1.0, 4.0), **kwargs)
    assert model.thickness == thickness and model.gap == pytest.approx(gap)
    assert (model.thickness_from, model.spacing_from) == origin
    assert model.spacing[:2] == (1.0, 1.0)


def test_slice_axis_is_the_largest_spacing_and_the_last_on_a_tie():
    assert acquisition_from_spacing((5.0, 0.9, 0.9), slice_thickness=4.0).slice_axis == 0
    assert acquisition_from_spacing((1.0, 1.0, 1.0)).slice_axis == 2
    assert acquisition_from_spacing((3.0, 3.0, 1.0)).slice_axis == 1


def test_json_is_in_mm_with_bids_style_keys():
    assert acquisition_from_spacing((1.0, 4.0), slice_thickness=3.0).to_json() == {
        "SliceAxis": 1, "SliceThickness": [1.0, 3.0], "SliceGap": [0.0, 1.0],
        "ThicknessFrom": "sidecar", "SpacingFrom": "header",
    }  # fmt: skip
    assert isinstance(acquisition_from_spacing((1.0,)), AcquisitionModel)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"spacing": ()}, GeometryError, "spacing must be one finite value"),
    ({"spacing": (1.0, 0.0)}, GeometryError, r"got \(1.0, 0.0\)"),
    ({"spacing": (1.0, 4.0), "slice_thickness": -1.0}, ValueError, "slice_thickness must be finite and > 0"),
    ({"spacing": (1.0, 4.0), "spacing_between_slices": "4"}, ValueError, "spacing_between_slices must be a number"),
    ({"spacing": (1.0, 4.0), "slice_thickness": True}, ValueError, "slice_thickness must be a number"),
])  # fmt: skip
def test_bad_values_are_refused(kwargs, error, match):
    spacing = kwargs.pop("spacing")
    with pytest.raises(error, match=match):
        acquisition_from_spacing(spacing, **kwargs)
