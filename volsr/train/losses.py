"""Adversarial losses for WGAN-GP (Gulrajani et al. 2017), as pure functions of modules and tensors.

No optimiser or training state lives here: a trainer calls these and steps its own
optimisers. mDCSRN-GAN trains the generator on ``L1 + lambda * generator`` term (lambda =
0.001 in the reimplementation the research notes cite) and the critic on the ``critic`` term.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["WGANLosses", "PixelLoss", "l1_pixel_loss", "gradient_penalty", "wgan_losses"]

Critic = Callable[[torch.Tensor], torch.Tensor]
#: ``loss(sr, hr) -> (scalar loss, parts)``: what a trainer minimises besides an adversarial term.
PixelLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def l1_pixel_loss(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean absolute error, the MRI networks' loss, with its value as the one part ``"l1"``.

    Parameters
    ----------
    sr, hr : (B, C, ...) torch.Tensor
        Output and target, one shape (float32).

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    parts : dict of str to float
        ``{"l1": loss}``.

    Raises
    ------
    RuntimeError
        If the shapes do not broadcast (torch's).

    Examples
    --------
    >>> l1_pixel_loss(torch.zeros(1, 1, 2), torch.ones(1, 1, 2))[1]
    {'l1': 1.0}
    """
    loss = F.l1_loss(sr, hr)
    return loss, {"l1": float(loss.detach())}


def _check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape or real.ndim < 2:
        raise ValueError(
            f"real and fake must be batches (B, ...) of one shape, got {tuple(real.shape)} "
            f"and {tuple(fake.shape)}"
        )


def gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator
) -> torch.Tensor:
    """WGAN-GP penalty ``mean_b (||grad_x critic(x_b)||_2 - 1)^2`` at random interpolates.

    ``x_b = e_b * real_b + (1 - e_b) * fake_b`` with ``e_b ~ U(0, 1)`` drawn once per sample;
    both inputs are detached, so the penalty's gradient reaches only the critic's parameters.

    Parameters
    ----------
    critic : callable
        Maps ``(B, ...)`` to ``B`` scores (any shape with ``B`` elements, e.g. ``(B,)``).
    real, fake : (B, C, *spatial) floating torch.Tensor
        Batches of one shape.
    generator : torch.Generator
        Source of the mixing weights (on the CPU or on the tensors' device).

    Returns
    -------
    torch.Tensor
        0-d tensor in ``real``'s dtype, differentiable with respect to the critic.

    Raises
    ------
    ValueError
        If ``real`` and ``fake`` differ in shape or are not batches.

    Examples
    --------
    >>> weights = torch.tensor([0.6, 0.8])  # unit norm: a 1-Lipschitz linear critic
    >>> critic = lambda x: x.flatten(1) @ weights
    >>> gradient_penalty(critic, torch.ones(4, 2), torch.zeros(4, 2),
    ...                  generator=torch.Generator().manual_seed(0)).item()
    0.0
    """
    _check_pair(real, fake)
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    mix = torch.rand(shape, generator=generator, device=generator.device, dtype=real.dtype)
    mix = mix.to(real.device)
    points = (mix * real.detach() + (1 - mix) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


@dataclasses.dataclass(frozen=True)
class WGANLosses:
    """The terms of one WGAN-GP evaluation (all 0-d tensors).

    Parameters
    ----------
    critic : torch.Tensor
        ``mean D(fake) - mean D(real) + penalty_weight * penalty``, with ``fake`` detached:
        minimise it over the critic's parameters.
    generator : torch.Tensor
        ``-mean D(fake)``, differentiable through ``fake``: add it (weighted) to the
        generator's loss. Its backward also reaches the critic's parameters, whose gradients
        the critic step must zero first.
    wasserstein : torch.Tensor
        Detached estimate ``mean D(real) - mean D(fake)`` (for logging).
    penalty : torch.Tensor
        Detached gradient penalty (for logging).
    """

    critic: torch.Tensor
    generator: torch.Tensor
    wasserstein: torch.Tensor
    penalty: torch.Tensor


def wgan_losses(
    critic: Critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator,
    penalty_weight: float = 10.0,
) -> WGANLosses:
    """Critic and generator terms of WGAN-GP for one batch.

    Parameters
    ----------
    critic : callable
        Maps ``(B, ...)`` to ``B`` scores.
    real : (B, C, *spatial) floating torch.Tensor
        High-resolution references.
    fake : (B, C, *spatial) floating torch.Tensor
        Generator outputs (keep their graph for the generator term).
    generator : torch.Generator
        Source of the gradient-penalty mixing weights (a random-number generator, not the
        SR network).
    penalty_weight : float
        Lambda of the gradient penalty (10 in the WGAN-GP paper).

    Returns
    -------
    WGANLosses
        0-d tensors in ``real``'s dtype.

    Raises
    ------
    ValueError
        If ``real`` and ``fake`` differ in shape or ``penalty_weight`` is negative.

    Examples
    --------
    >>> critic = lambda x: x.flatten(1).sum(dim=1)
    >>> terms = wgan_losses(critic, torch.ones(2, 1, 2), torch.zeros(2, 1, 2),
    ...                     generator=torch.Generator().manual_seed(0), penalty_weight=0.0)
    >>> terms.wasserstein.item(), terms.critic.item(), terms.generator.item()
    (2.0, -2.0, -0.0)
    """
    _check_pair(real, fake)
    if not penalty_weight >= 0:
        raise ValueError(f"penalty_weight must be >= 0, got {penalty_weight!r}")
    real_score = critic(real.detach()).mean()
    fake_score = critic(fake.detach()).mean()
    penalty = gradient_penalty(critic, real, fake, generator=generator)
    return WGANLosses(
        critic=fake_score - real_score + penalty_weight * penalty,
        generator=-critic(fake).mean(),
        wasserstein=(real_score - fake_score).detach(),
        penalty=penalty.detach(),
    )
