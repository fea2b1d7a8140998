"""volsr.acquisition: slice thickness, gap, profile and noise from flags, a sidecar, the header or the voxels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi

from volsr.acquisition import (
    AcquisitionModel,
    acquisition_for,
    acquisition_from_spacing,
    estimate_noise,
    estimate_profile,
    sidecar_path,
)
from volsr.degrade import add_rician_noise, thick_slice
from volsr.errors import GeometryError, InvalidDataError
from volsr.volume import Volume


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


# --- issue 17: flags > sidecar > header, profile, noise, describe -----------------------



def _volume(data, spacing=(1.0, 1.0, 4.0)):
    return Volume(np.asarray(data, dtype=np.float32), np.diag([*spacing, 1.0]), ("i", "j", "k"))


def _beside(tmp_path, facts):
    image = tmp_path / "sub-01_T1w.nii.gz"
    (tmp_path / "sub-01_T1w.json").write_text(json.dumps(facts))
    return image


@pytest.mark.parametrize(("flags", "thickness", "gap", "origin"), [
    ({}, 3.0, 0.5, ("sidecar", "sidecar")),
    ({"thickness": 2.0}, 2.0, 1.5, ("flag", "sidecar")),
    ({"gap": 1.0}, 2.5, 1.0, ("flag", "sidecar")),
    ({"thickness": 4.0, "gap": -0.5}, 4.0, -0.5, ("flag", "sidecar")),  # same spacing 3.5
    ({"thickness": 4.0, "gap": 1.0}, 4.0, 1.0, ("flag", "flag")),
])  # fmt: skip
def test_flags_win_over_the_sidecar(tmp_path, flags, thickness, gap, origin):
    spec = _beside(tmp_path, {"SliceThickness": 3.0, "SpacingBetweenSlices": 3.5})
    model = acquisition_for(_volume(np.zeros((4, 4, 4))), spec, **flags, estimate_noise=False)
    assert (model.thickness[2], model.gap[2]) == pytest.approx((thickness, gap))
    assert (model.thickness_from, model.spacing_from) == origin
    assert model.thickness[:2] == (1.0, 1.0) and model.noise_sigma is None


def test_the_sidecar_wins_over_the_header_which_is_the_fallback(tmp_path):
    volume = _volume(np.zeros((4, 4, 4)))
    with_sidecar = acquisition_for(volume, _beside(tmp_path, {"SliceThickness": 3.0}), estimate_noise=False)
    assert (with_sidecar.thickness[2], with_sidecar.gap[2], with_sidecar.thickness_from) == (3.0, 1.0, "sidecar")
    for spec in (None, tmp_path / "other_T1w.nii", tmp_path / "cube.zarr"):
        header = acquisition_for(volume, spec, estimate_noise=False)
        assert (header.thickness[2], header.gap[2], header.thickness_from, header.spacing_from) == (
            4.0, 0.0, "contiguous", "header")


def test_sidecar_beside_nifti_only():
    assert sidecar_path("/d/sub-01_T1w.nii").as_posix() == "/d/sub-01_T1w.json"
    assert sidecar_path("/d/sub-01_T1w.NII.GZ").as_posix() == "/d/sub-01_T1w.json"
    assert sidecar_path("/d/file.h5:/data") is None


@pytest.mark.parametrize(("flags", "sidecar", "error", "match"), [
    ({"profile": "sinc"}, {}, ValueError, r"profile must be one of \('gaussian', 'box'\), got 'sinc'"),
    ({"thickness": 0.0}, {}, ValueError, "thickness must be finite and > 0"),
    ({"gap": 5.0}, {}, ValueError, "gap = 5.0 mm leaves no slice thickness"),
    ({"gap": float("nan")}, {}, ValueError, "gap must be a finite number"),
    ({"thickness": 1.0, "gap": -2.0}, {}, ValueError, r"thickness \+ gap must be > 0"),
    ({"thickness": 3.0, "estimate_profile": True}, {}, ValueError, "excludes thickness, gap and a box"),
    ({"profile": "box", "estimate_profile": True}, {}, ValueError, "excludes thickness, gap and a box"),
    ({}, {"SliceThickness": "3"}, InvalidDataError, r"sub-01_T1w.json: SliceThickness must be a number"),
])  # fmt: skip
def test_bad_flags_and_sidecar_values_are_refused(tmp_path, flags, sidecar, error, match):
    with pytest.raises(error, match=match):
        acquisition_for(_volume(np.zeros((4, 4, 4))), _beside(tmp_path, sidecar), **flags, estimate_noise=False)


def test_profile_and_noise_are_validated_and_written_only_when_known():
    model = acquisition_from_spacing((1.0, 4.0))
    with pytest.raises(ValueError, match="noise_sigma must be finite and >= 0"):
        AcquisitionModel(model.thickness, model.gap, 1, noise_sigma=-1.0)
    with pytest.raises(ValueError, match="profile must be one of"):
        AcquisitionModel(model.thickness, model.gap, 1, profile="tri")
    known = AcquisitionModel((1.0, 3.5), (0.0, 0.5), 1, "sidecar", "sidecar", profile="box", profile_from="flag",
                             noise_sigma=12.345, noise_from="estimated")  # fmt: skip
    assert {k: known.to_json()[k] for k in ("SliceProfile", "ProfileFrom", "NoiseSigma", "NoiseFrom")} == {
        "SliceProfile": "box", "ProfileFrom": "flag", "NoiseSigma": 12.345, "NoiseFrom": "estimated"}
    assert known.describe() == ("acquisition: slices along axis 1, thickness 3.5 mm (sidecar), gap 0.5 mm (sidecar), "
                                "box profile (flag), noise sigma 12.35 (estimated)")  # fmt: skip
    assert "SliceProfile" not in model.to_json() and "NoiseSigma" not in model.to_json()


def _phantom(n, rng):
    """A smooth head-like phantom: white-matter-like level 100, a darker core, texture."""
    z, y, x = np.mgrid[:n, :n, :n] / n - 0.5
    radius = np.sqrt(x**2 + (1.2 * y) ** 2 + z**2)
    texture = ndi.gaussian_filter(rng.standard_normal((n, n, n)), 3)
    return 100 * ndi.gaussian_filter((radius < 0.42) * 1.0, 2) * (1 + texture / texture.std() / 10) * (
        1 - 0.3 * (radius < 0.15))


@pytest.mark.parametrize("sigma", [2.0, 3.5, 5.0])
def test_noise_estimate_is_within_10_percent_of_the_rician_sigma(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    hr = _phantom(96, rng)
    lr = thick_slice(hr, axis=2, factor=3.0)  # noise is added after the acquisition
    volume = _volume(add_rician_noise(lr, sigma=sigma, rng=rng), (1.0, 1.0, 3.0))
    estimate = estimate_noise(volume)
    assert estimate == pytest.approx(sigma, rel=0.10)
    assert acquisition_for(volume).noise_sigma == pytest.approx(estimate)


def test_noise_estimate_reads_a_bounded_sample_of_slices():
    import dask.array as da

    read = []
    data = da.from_array(np.full((40, 40, 64), 100.0), chunks=(40, 40, 1)).map_blocks(
        lambda block, block_info=None: read.append(block_info[0]["chunk-location"]) or block, dtype=float)
    estimate_noise(Volume(data, np.eye(4), ("i", "j", "k")))
    assert 0 < len({location for location in read}) <= 16


def test_noise_estimate_refuses_an_empty_volume():
    with pytest.raises(InvalidDataError, match="cannot estimate the noise: 0 foreground voxels"):
        estimate_noise(_volume(np.zeros((16, 16, 4))))


@pytest.mark.parametrize(("factor", "fwhm"), [(4.0, 4.0), (4.0, 3.0), (3.0, 4.5), (2.5, 2.5), (6.0, 6.0)])
def test_profile_fit_recovers_the_slice_fwhm_within_15_percent(factor, fwhm):
    hr = ndi.gaussian_filter(np.random.default_rng(1).standard_normal((96, 96, 96)), 1.0)
    volume = _volume(thick_slice(hr, axis=2, factor=factor, thickness=fwhm), (1.0, 1.0, factor))
    estimate = estimate_profile(volume)
    assert estimate == pytest.approx(fwhm, rel=0.15)
    model = acquisition_for(volume, estimate_profile=True, estimate_noise=False)
    assert (model.thickness[2], model.gap[2]) == pytest.approx((estimate, factor - estimate))
    assert (model.thickness_from, model.profile_from, model.spacing_from) == ("estimated", "estimated", "header")


def test_profile_fit_refuses_a_fine_slice_axis_and_a_constant_volume():
    with pytest.raises(GeometryError, match="slice axis 0 .* is finer than an in-plane axis"):
        estimate_profile(_volume(np.ones((16, 16, 16))), slice_axis=0)
    with pytest.raises(InvalidDataError, match="no texture"):
        estimate_profile(_volume(np.ones((64, 64, 16))))
    with pytest.raises(ValueError, match="slice_axis must be a spatial axis in"):
        estimate_profile(_volume(np.ones((64, 64, 16))), slice_axis=3)
