"""Tests of volsr.train.validation against analytic cases and real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from volsr.data.hsi import make_pair
from volsr.datasets import icbm152_t1_path
from volsr.geometry import output_coordinates
from volsr.io import load
from volsr.metrics import mpsnr, sam
from volsr.models import create_model
from volsr.models.interpolation import SeparableInterpolation
from volsr.train.validation import VolumeValidator, cube_case, prepare_case
from volsr.volume import Volume


def ramp_volume() -> Volume:
    k = np.arange(24, dtype=np.float32)
    data = np.broadcast_to(1.0 + k, (6, 5, 24)).copy()
    return Volume(data, np.diag([1.0, 1.0, 0.5, 1.0]), ("i", "j", "k"))


def test_prepare_case_normalises_crops_and_thick_slices():
    volume = ramp_volume()
    case = prepare_case(volume, name="ramp", factor=4, axis=2, crop=(4, 5, 100))
    p999 = np.percentile(np.asarray(volume.data), 99.9)
    expected_hr = np.clip(np.asarray(volume.data)[1:5] / p999, 0, 1)
    np.testing.assert_allclose(case.hr, expected_hr, rtol=1e-6)
    assert case.lr.shape == (4, 5, 6) and case.scale == (1.0, 1.0, 4.0)
    # A symmetric slice profile keeps a linear ramp: slice k away from the border (4 sigma) is the ramp at its
    # centre k f + (f - 1) / 2 (HR voxels).
    centres = np.arange(6) * 4 + 1.5
    lr = np.asarray(case.lr.data)[0, 0]
    np.testing.assert_allclose(lr[2:-2], ((1.0 + centres) / p999)[2:-2], rtol=1e-5)
    # The crop moves the origin by one voxel along i; the LR grid is 4x coarser along k.
    np.testing.assert_allclose(case.lr.affine[:3, 3], [1.0, 0.0, 0.75])
    np.testing.assert_allclose(case.lr.spacing, [1.0, 1.0, 2.0])


def test_cubic_scores_zero_gain_on_real_template():
    case = prepare_case(load(icbm152_t1_path()), name="icbm", factor=4, axis=2,
                        crop=(40, 40, 40))
    validator = VolumeValidator([case])
    metrics = validator(create_model("cubic"))
    assert metrics["icbm/psnr_gain"] == 0.0 and metrics["score"] == 0.0
    assert 15 < metrics["icbm/psnr"] < 60 and 0 < metrics["icbm/ssim"] < 1
    assert validator(create_model("nearest"))["score"] < 0  # nearest is worse than cubic


def test_bad_cases_raise():
    with pytest.raises(ValueError, match="distinct names"):
        VolumeValidator([])
    flat = Volume(np.zeros((4, 4), np.float32), np.eye(4), ("i", "j"))
    with pytest.raises(ValueError, match="3 spatial axes"):
        prepare_case(flat, name="flat", factor=2, axis=1)
    with pytest.raises(FileNotFoundError, match="not found"):
        VolumeValidator.from_paths(["missing.nii.gz"], factor=4, axis=2)


def test_cubes_follow_the_same_protocol_with_their_metrics_and_baseline():
    # The reference is the whole-cube call of the baseline (no engine, no tiles) and volsr.metrics.
    rng = np.random.default_rng(0)
    cube = np.cumsum(rng.random((40, 36, 12), np.float32), axis=2)
    pair = make_pair(cube / cube.max(), scale=4, name="/somewhere/cube.mat:data")
    bicubic = SeparableInterpolation(method="bicubic")
    grid = (output_coordinates(10, 40), output_coordinates(9, 36))
    direct = bicubic(torch.from_numpy(pair.lr.transpose(2, 0, 1).copy())[None], grid)
    direct = direct[0].numpy().transpose(1, 2, 0).clip(0, 1)
    nearest = create_model("nearest").train()
    smooth = np.cumsum(np.cumsum(rng.random((12, 12, 24), np.float32), axis=0), axis=2)
    volume = Volume(smooth, np.eye(4), ("i", "j", "k"))
    validator = VolumeValidator([cube_case(pair), prepare_case(volume, name="ramp", factor=4, axis=2)])
    metrics = validator(nearest)
    assert nearest.training  # given back in the mode it came in
    assert validator.baseline["cube"]["mpsnr"] == pytest.approx(mpsnr(pair.hr, direct, data_range=1.0), abs=1e-6)
    assert validator.baseline["cube"]["sam"] == pytest.approx(sam(pair.hr, direct), abs=1e-6)
    assert metrics["cube/mpsnr_gain"] == pytest.approx(metrics["cube/mpsnr"] - validator.baseline["cube"]["mpsnr"])
    assert metrics["cube/mpsnr_gain"] < 0 and metrics["ramp/psnr_gain"] < 0  # nearest loses to both baselines
    assert metrics["score"] == pytest.approx((metrics["cube/mpsnr_gain"] + metrics["ramp/psnr_gain"]) / 2)
    assert validator(create_model("bicubic"))["cube/mpsnr_gain"] == 0.0
