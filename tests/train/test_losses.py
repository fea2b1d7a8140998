"""The loss terms against volsr.metrics and closed forms; WGAN-GP against analytic critics
(linear: gradient = its weight vector; quadratic)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from volsr.metrics import sam
from volsr.models.mdcsrn import PatchDiscriminator3D
from volsr.train import gradient_penalty, wgan_losses
from volsr.train.config import LossConfig
from volsr.train.losses import (
    ADVERSARIAL_TERM,
    TERMS,
    spectral_angle,
    spectral_gradient_l1,
    weighted_loss,
)


def _batch(seed: int, shape=(4, 1, 3, 3, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)


@pytest.mark.parametrize("norm", [1.0, 2.0, 0.5])
def test_penalty_of_a_linear_critic_is_its_gradient_norm_defect(norm):
    real, fake = _batch(0)
    direction = torch.randn(27, generator=torch.Generator().manual_seed(1))
    weights = norm * direction / direction.norm()
    penalty = gradient_penalty(lambda x: x.flatten(1) @ weights, real, fake,
                               generator=torch.Generator().manual_seed(2))
    # The gradient of <w, x> is w everywhere: the penalty is (|w| - 1)^2 exactly.
    assert penalty.item() == pytest.approx((norm - 1.0) ** 2, abs=1e-6)


def test_penalty_of_a_quadratic_critic_matches_the_analytic_value():
    real, fake = _batch(3)
    penalty = gradient_penalty(lambda x: 0.5 * x.flatten(1).square().sum(1), real, fake,
                               generator=torch.Generator().manual_seed(4))
    # The gradient of |x|^2 / 2 is x: replay the same mixing weights.
    mix = torch.rand((4, 1, 1, 1, 1), generator=torch.Generator().manual_seed(4))
    points = mix * real + (1 - mix) * fake
    expected = ((points.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    assert penalty.item() > 0


def test_wgan_terms_and_their_gradients_reach_the_right_modules():
    critic = PatchDiscriminator3D(base=4, levels=2)
    real, fake_input = _batch(5, (2, 1, 8, 8, 8))
    fake = fake_input.clone().requires_grad_(True)
    terms = wgan_losses(critic, real, fake, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        wasserstein = critic(real).mean() - critic(fake).mean()
    torch.testing.assert_close(terms.wasserstein, wasserstein)
    torch.testing.assert_close(terms.critic, -wasserstein + 10.0 * terms.penalty)
    assert not terms.wasserstein.requires_grad and not terms.penalty.requires_grad
    terms.critic.backward()
    assert fake.grad is None  # the critic term never reaches the generator
    assert all(p.grad is not None for p in critic.parameters())
    terms.generator.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_bad_inputs_are_refused():
    real, fake = _batch(7)
    with pytest.raises(ValueError, match="one shape"):
        gradient_penalty(lambda x: x.sum((1, 2, 3, 4)), real, fake[:2],
                         generator=torch.Generator())
    with pytest.raises(ValueError, match="penalty_weight must be >= 0"):
        wgan_losses(lambda x: x.sum((1, 2, 3, 4)), real, fake, generator=torch.Generator(),
                    penalty_weight=-1.0)


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


def test_weighted_loss_is_the_weighted_sum_and_back_propagates():
    torch.manual_seed(0)
    ref = torch.rand(2, 12, 4, 4)
    est = (ref + 0.1 * torch.randn_like(ref)).requires_grad_(True)
    total, parts = weighted_loss({"l1": 1.0, "sam": 0.3, "spectral_gradient": 0.5, "wgan": 7.0})(est, ref)
    assert sorted(parts) == ["l1", "sam", "spectral_gradient"]  # wgan is the trainer's
    diffs = (torch.diff(est, dim=1) - torch.diff(ref, dim=1)).abs().mean().detach()
    assert parts["spectral_gradient"] == pytest.approx(float(diffs), rel=1e-6)
    assert parts["sam"] == pytest.approx(float(spectral_angle(ref, est.detach())), rel=1e-6)
    expected = float((est - ref).abs().mean().detach()) + 0.3 * parts["sam"] + 0.5 * float(diffs)
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert est.grad.abs().sum() > 0


def test_l1_alone_is_torchs_mean_absolute_error_bit_for_bit():
    sr, hr = torch.rand(2, 1, 5, 5, 5), torch.rand(2, 1, 5, 5, 5)
    total, parts = weighted_loss({"l1": 1.0})(sr, hr)
    assert torch.equal(total, torch.nn.functional.l1_loss(sr, hr)) and list(parts) == ["l1"]


@pytest.mark.parametrize(("term", "expected"), [("l1", 0.5), ("mse", 0.25),
                                                ("charbonnier", math.sqrt(0.25 + 1e-6))])
def test_pixel_terms(term, expected):
    ref = torch.zeros(1, 3, 2, 2)
    total, parts = weighted_loss({term: 2.0})(ref + 0.5, ref)
    assert parts == {term: pytest.approx(expected, rel=1e-6)}
    assert float(total) == pytest.approx(2 * expected, rel=1e-6)


def test_the_config_schema_weighs_exactly_the_known_terms():
    assert [f.name for f in dataclasses.fields(LossConfig)] == [*TERMS, ADVERSARIAL_TERM]


def test_spectral_gradient_ignores_offsets():
    x = torch.rand(1, 9, 3, 3)
    assert float(spectral_gradient_l1(x, x + 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_errors_name_the_parameter():
    x = torch.rand(1, 3, 2, 2)
    with pytest.raises(ValueError, match="unknown loss term 'l2'"):
        weighted_loss({"l2": 1.0})
    with pytest.raises(ValueError, match="'sam' must be >= 0"):
        weighted_loss({"l1": 1.0, "sam": -1.0})
    with pytest.raises(ValueError, match="positive weight besides 'wgan'"):
        weighted_loss({"l1": 0.0, "wgan": 1e-3})
    with pytest.raises(ValueError, match="one shape"):
        spectral_angle(x, x[:, :2])
    with pytest.raises(ValueError, match="at least 2 bands"):
        spectral_gradient_l1(x[:, :1], x[:, :1])
