"""WGAN-GP terms against analytic critics (linear: gradient = its weight vector; quadratic)."""

from __future__ import annotations

import pytest
import torch

from volsr.models.mdcsrn import PatchDiscriminator3D
from volsr.train import gradient_penalty, wgan_losses


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
