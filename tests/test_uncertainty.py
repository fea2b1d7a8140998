"""volsr.uncertainty: the calibration's fit and checks against analytic cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from volsr.degrade import thick_slice_matrix
from volsr.uncertainty import (
    Calibration,
    ause,
    coverage,
    fit_calibration,
    fit_scan_transfer,
    input_features,
    noise_attenuation,
)


def _heteroscedastic(rng, n, sigma_noise):
    """Errors whose scale is known: N(0, (0.5 slope)^2 + sigma^2), slope log-uniform."""
    slope = np.exp(rng.uniform(np.log(0.01), np.log(1.0), n))
    scale = np.sqrt((0.5 * slope) ** 2 + sigma_noise**2)
    errors = np.abs(rng.normal(0.0, scale))
    features = np.stack([np.zeros(n), slope, np.zeros(n), np.full(n, sigma_noise)])
    return features, errors, scale


def test_coverage_on_fresh_data_with_known_noise_is_nominal():
    rng = np.random.default_rng(0)
    train = [_heteroscedastic(rng, 40_000, s) for s in (0.02, 0.05, 0.1)]
    cal = fit_calibration("x", [f for f, _, _ in train], [e for _, e, _ in train], members=1)
    for sigma in (0.01, 0.03, 0.08):  # noise levels the fit never saw
        features, errors, scale = _heteroscedastic(rng, 100_000, sigma)
        width = cal.half_width(*features)
        assert coverage(width, errors) == pytest.approx(0.9, abs=0.012)
        # The exact 90 % half-width of a folded normal is 1.645 sigma: the fit found the shape.
        assert np.median(width / (1.645 * scale)) == pytest.approx(1.0, abs=0.05)
        # Conditional too: the smallest and largest widths both cover about 90 %.
        order = np.argsort(width)
        for part in (order[:20_000], order[-20_000:]):
            assert coverage(width[part], errors[part]) == pytest.approx(0.9, abs=0.03)


def test_ause_of_the_oracle_is_zero_and_of_an_uninformative_map_about_one():
    rng = np.random.default_rng(1)
    errors = np.abs(rng.normal(size=50_000))
    assert ause(errors, errors) == pytest.approx(0.0, abs=1e-12)
    assert ause(rng.random(50_000), errors) == pytest.approx(1.0, abs=0.05)
    features, errors, scale = _heteroscedastic(rng, 50_000, 0.0)
    assert ause(scale, errors) < 0.6  # the true scale ranks well, short of the oracle


def test_noise_attenuation_matches_the_weights_of_the_profile():
    assert noise_attenuation(4.0, 4.0, "box") == pytest.approx(0.5, abs=1e-9)  # a mean of 4
    assert noise_attenuation(1.0, 1.0, "box") == pytest.approx(1.0)
    sigma = 6.0 / (2 * math.sqrt(2 * math.log(2)))
    assert noise_attenuation(6.0, 6.0) == pytest.approx(1 / math.sqrt(2 * math.sqrt(math.pi) * sigma), rel=0.01)
    # Measured: white noise averaged by the same weights.
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(64 * 5, 4000))
    averaged = thick_slice_matrix(64 * 5, 5.0) @ noise
    assert averaged[4:-4].std() == pytest.approx(noise_attenuation(5.0, 5.0), rel=0.02)


def test_input_features_of_a_quadratic():
    x = torch.tensor([[[k * k for k in range(6)]]], dtype=torch.float32).repeat(1, 1, 1)
    x = x[..., None].repeat(1, 1, 1, 3)  # (1, 1, 6, 3): constant along the second axis
    slope, bend = input_features(x, (2.0, 1.0))
    inner = slope[0, 0, 1:-1, 1]
    assert inner.tolist() == [2.0 * k for k in range(1, 5)]  # central difference of k^2 is 2k
    assert bend[0, 0, 1:-1, 1].tolist() == [2.0] * 4  # second difference 2; none along the factor-1 axis
    _, none = input_features(x, (1.0, 1.0))
    assert float(none.abs().max()) == 0.0


def test_calibration_round_trips_through_json(tmp_path):
    cal = Calibration("m", {"spread": 1.0, "slope": 2.0, "bend": 0.5, "noise": 1.6, "constant": 0.0},
                      members=8, factor_power=0.7, fitted_on=("a", "b"))
    path = tmp_path / "c.json"
    path.write_text(cal.to_json())
    assert Calibration.load(path) == cal
    path.write_text('{"model": "m"}')
    with pytest.raises(ValueError, match="not a volsr calibration"):
        Calibration.load(path)
    with pytest.raises(ValueError, match="finite number >= 0"):
        Calibration("m", {"spread": -1.0, "slope": 0, "bend": 0, "noise": 0, "constant": 0})


def test_a_calibration_names_its_modality_and_older_files_are_mri(tmp_path):
    cal = Calibration("m", {"spread": 0.0, "slope": 1.0, "bend": 0.5, "noise": 0.0, "constant": 0.0},
                      modality="hsi", factor_power=0.5)
    path = tmp_path / "c.json"
    path.write_text(cal.to_json())
    assert Calibration.load(path) == cal
    fields = json.loads(cal.to_json())
    del fields["modality"]  # as every file written before cubes had calibrations
    path.write_text(json.dumps(fields))
    assert Calibration.load(path).modality == "mri"
    with pytest.raises(ValueError, match="modality must be one of"):
        Calibration("m", cal.coefficients, modality="ct")
    with pytest.raises(ValueError, match="modality must be one of"):
        fit_calibration("m", [np.ones((4, 3))], [np.ones(3)], members=1, modality="ct")


def test_the_per_scan_step_round_trips_and_its_fit_recovers_a_known_law(tmp_path):
    cal = Calibration("m", {"spread": 1.0, "slope": 1.0, "bend": 0.5, "noise": 1.0, "constant": 0.0},
                      scan_transfer=(1.2, 0.3))
    path = tmp_path / "c.json"
    path.write_text(cal.to_json())
    assert Calibration.load(path) == cal
    assert math.isclose(cal.scan_scale(0.5, 4.0), 0.5 * 1.2 * 4.0**0.3)
    rng = np.random.default_rng(0)
    factors = rng.uniform(1.5, 5, 12)
    own = rng.uniform(0.3, 0.7, 12)
    t, q = fit_scan_transfer(factors, 0.8 * factors**0.4 * own, own)
    assert math.isclose(t, 0.8, rel_tol=1e-9) and math.isclose(q, 0.4, rel_tol=1e-9)
    with pytest.raises(ValueError, match="scan_transfer must be"):
        Calibration("m", cal.coefficients, scan_transfer=(0.0, 1.0))
    with pytest.raises(ValueError, match="at least 2 cases"):
        fit_scan_transfer([4.0], [1.0], [0.5])
