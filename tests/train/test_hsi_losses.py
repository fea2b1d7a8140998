"""Tests of the HSI losses (volsr/train/hsi_losses.py) against volsr.metrics and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from volsr.metrics import sam
from volsr.train.hsi_losses import hsi_loss, spectral_angle, spectral_gradient_l1


def test_spectral_angle_equals_metrics_sam_in_radians():
    rng = np.random.default_rng(0)
    ref = rng.random((6, 7, 31))
    est = ref + 0.2 * rng.standard_normal(ref.shape)
    ref[0, 0] = 0.0  # zero spectrum: skipped by both
    loss = spectral_angle(torch.from_numpy(ref), torch.from_numpy(est), band_axis=-1, eps=0.0)
    assert math.degrees(float(loss)) == pytest.approx(sam(ref, est), rel=1e-10)


def test_spectral_angle_on_the_batch_layout_matches_the_cube_layout():
    rng = np.random.default_rng(1)
    ref, est = rng.random((2, 20, 4, 5)), rng.random((2, 20, 4, 5))
    expected = np.mean([sam(ref[b].transpose(1, 2, 0), est[b].transpose(1, 2, 0)) for b in (0, 1)])
    loss = spectral_angle(torch.from_numpy(ref), torch.from_numpy(est), eps=0.0)
    assert math.degrees(float(loss)) == pytest.approx(expected, rel=1e-10)


def test_spectral_angle_is_scale_invariant_and_has_finite_gradient_at_zero_angle():
    ref = torch.rand(1, 10, 3, 3, dtype=torch.float64)
    est = (3.0 * ref).requires_grad_(True)
    loss = spectral_angle(ref, est)
    assert float(loss.detach()) == pytest.approx(math.sqrt(2e-7), rel=1e-3)  # the clamp's bias only
    loss.backward()
    assert torch.isfinite(est.grad).all()


def test_hsi_loss_is_the_weighted_sum_and_back_propagates():
    torch.manual_seed(0)
    ref = torch.rand(2, 12, 4, 4)
    est = (ref + 0.1 * torch.randn_like(ref)).requires_grad_(True)
    terms = hsi_loss(ref, est, sam_weight=0.3, gradient_weight=0.5)
    expected = (est - ref).abs().mean() + 0.3 * terms.sam + 0.5 * terms.gradient
    torch.testing.assert_close(terms.total, expected)
    diffs = (torch.diff(est, dim=1) - torch.diff(ref, dim=1)).abs().mean()
    torch.testing.assert_close(terms.gradient, diffs)
    terms.total.backward()
    assert est.grad.abs().sum() > 0


@pytest.mark.parametrize(("pixel", "expected"), [("l1", 0.5), ("mse", 0.25),
                                                 ("charbonnier", math.sqrt(0.25 + 1e-6))])
def test_pixel_terms(pixel, expected):
    ref = torch.zeros(1, 3, 2, 2)
    terms = hsi_loss(ref, ref + 0.5, pixel=pixel, sam_weight=0.0)
    assert float(terms.pixel) == pytest.approx(expected, rel=1e-6)
    assert float(terms.gradient) == 0.0


def test_spectral_gradient_ignores_offsets():
    x = torch.rand(1, 9, 3, 3)
    assert float(spectral_gradient_l1(x, x + 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_errors_name_the_parameter():
    x = torch.rand(1, 3, 2, 2)
    with pytest.raises(ValueError, match="pixel must be one of"):
        hsi_loss(x, x, pixel="l2")
    with pytest.raises(ValueError, match="sam_weight must be >= 0"):
        hsi_loss(x, x, sam_weight=-1.0)
    with pytest.raises(ValueError, match="one shape"):
        spectral_angle(x, x[:, :2])
    with pytest.raises(ValueError, match="at least 2 bands"):
        spectral_gradient_l1(x[:, :1], x[:, :1])
