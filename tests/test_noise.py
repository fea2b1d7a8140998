"""Tests for volsr.noise: Rician statistics, the SNR convention and reproducible draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from volsr import noise
from volsr.errors import InvalidDataError
from volsr.volume import Volume


def test_rician_on_zero_is_rayleigh() -> None:
    sigma = 3.0
    noisy = noise.add_rician_noise(np.zeros(200_000), sigma=sigma, rng=np.random.default_rng(11))
    assert noisy.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.01)
    assert noisy.var() == pytest.approx((2 - math.pi / 2) * sigma**2, rel=0.02)


def test_rician_on_large_constant() -> None:
    amplitude, sigma = 100.0, 5.0
    noisy = noise.add_rician_noise(np.full(100_000, amplitude), sigma=sigma, rng=np.random.default_rng(12))
    assert noisy.mean() == pytest.approx(math.sqrt(amplitude**2 + sigma**2), abs=0.05)
    assert noisy.std() == pytest.approx(sigma, rel=0.02)


def test_rician_identity_and_reproducibility() -> None:
    x = np.random.default_rng(13).uniform(size=(4, 5)).astype(np.float32)
    same = noise.add_rician_noise(x, sigma=0.0, rng=np.random.default_rng(0))
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, x)
    params = noise.sample_noise_params(np.random.default_rng(14), snr_db_range=(10, 30), reference_level=1.0)
    again = noise.sample_noise_params(np.random.default_rng(14), snr_db_range=(10, 30), reference_level=1.0)
    assert params == again and 10 <= params.snr_db <= 30
    assert params.sigma == pytest.approx(10 ** (-params.snr_db / 20))
    np.testing.assert_array_equal(noise.rician_noise(x, params), noise.rician_noise(x, again))
    other = noise.NoiseParams(snr_db=params.snr_db, sigma=params.sigma, seed=params.seed + 1)
    assert not np.array_equal(noise.rician_noise(x, params), noise.rician_noise(x, other))


def test_snr_convention_on_real_volume(real_hr: Volume) -> None:
    hr = real_hr.numpy()
    sigma = noise.sigma_for_snr(hr, 20.0)
    foreground = hr > 0.1 * np.percentile(hr, 99)
    assert sigma == pytest.approx(hr[foreground].mean() / 10.0)
    params = noise.NoiseParams(snr_db=20.0, sigma=sigma, seed=15)
    noisy = noise.rician_noise(real_hr, params)
    assert noisy.shape == real_hr.shape and np.array_equal(noisy.affine, real_hr.affine)
    background = noisy.numpy()[hr == 0]  # skull-stripped volume: zero outside the brain
    assert background.size > 2000
    assert background.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.05)


def test_noise_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="rng must be a np.random.Generator"):
        noise.add_rician_noise(np.ones(3), sigma=1.0, rng=np.random.RandomState(0))  # noqa: NPY002
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        noise.add_rician_noise(np.ones(3), sigma=-1.0, rng=rng)
    with pytest.raises(ValueError, match="snr_db_range must be finite"):
        noise.sample_noise_params(rng, snr_db_range=(30, 10), reference_level=1.0)
    with pytest.raises(ValueError, match="reference_level must be finite and > 0"):
        noise.sample_noise_params(rng, snr_db_range=(10, 30), reference_level=0.0)
    with pytest.raises(InvalidDataError, match="no foreground"):
        noise.sigma_for_snr(np.zeros((3, 3)), 20.0)
    with pytest.raises(ValueError, match="snr_db must be finite"):
        noise.sigma_for_snr(np.ones((3, 3)), math.inf)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        noise.NoiseParams(snr_db=20.0, sigma=1.0, seed=-1)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        noise.NoiseParams(snr_db=20.0, sigma=math.nan, seed=0)
    with pytest.raises(TypeError, match="params must be NoiseParams"):
        noise.rician_noise(np.ones(3), {"sigma": 1.0, "seed": 0})


def test_degrade_reexports_the_noise_functions() -> None:
    from volsr import degrade

    assert degrade.rician_noise is noise.rician_noise and degrade.NoiseParams is noise.NoiseParams
