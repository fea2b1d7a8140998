"""The generator's loss as a weighted sum of terms, and WGAN-GP (Gulrajani et al. 2017).

Pure functions of modules and tensors: no optimiser or training state lives here. A config's
``loss:`` section (:class:`volsr.train.config.LossConfig`) weighs the terms of :data:`TERMS`
and ``wgan``, the critic's generator term, which the trainer adds (it owns the critic):
mDCSRN-GAN trains on ``{l1: 1, wgan: 1e-3}``, the hyperspectral networks on
``{l1: 1, sam: 0.3}``. ``sam`` is the mean spectral angle in **radians** over pixels whose
spectra have non-zero norms (the convention of :func:`volsr.metrics.sam`, which reports
degrees); it is invariant to a per-pixel scaling of the spectrum, so it penalises the
spectral-shape errors that a pixel term weighs little.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

__all__ = ["TERMS", "ADVERSARIAL_TERM", "PixelLoss", "weighted_loss", "spectral_angle",
           "spectral_gradient_l1", "charbonnier", "WGANLosses", "gradient_penalty", "wgan_losses"]

Critic = Callable[[torch.Tensor], torch.Tensor]
#: ``loss(sr, hr) -> (scalar loss, parts)``: what a trainer minimises besides an adversarial term.
PixelLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]

#: The critic's term in a config's ``loss:`` (the trainer adds it; it needs a ``gan:`` section).
ADVERSARIAL_TERM = "wgan"

_CHARBONNIER_EPS = 1e-3


def _check(reference: torch.Tensor, estimate: torch.Tensor, band_axis: int) -> int:
    if reference.shape != estimate.shape:
        raise ValueError(
            f"reference and estimate must have one shape, got {tuple(reference.shape)} and "
            f"{tuple(estimate.shape)}"
        )
    if not -reference.ndim <= band_axis < reference.ndim:
        raise ValueError(f"band_axis must index one of {reference.ndim} axes, got {band_axis}")
    return band_axis % reference.ndim


def spectral_angle(
    reference: torch.Tensor, estimate: torch.Tensor, *, band_axis: int = 1, eps: float = 1e-7
) -> torch.Tensor:
    """Mean spectral angle (radians) between spectra along ``band_axis``; differentiable.

    Parameters
    ----------
    reference, estimate : torch.Tensor, same shape
        E.g. ``(B, bands, rows, cols)``.
    band_axis : int
        The spectral axis.
    eps : float
        The cosine is clamped to ``[-1 + eps, 1 - eps]`` so the gradient of ``arccos`` stays
        finite; this biases a zero angle up by about ``sqrt(2 eps)`` (4.5e-4 rad, 0.026
        degrees, for the default).

    Returns
    -------
    torch.Tensor
        Scalar: mean angle over pixels where both spectra have non-zero norm (0 when there
        is none), in radians; dtype of the inputs.

    Raises
    ------
    ValueError
        If shapes differ or ``band_axis`` is out of range.

    Examples
    --------
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> y = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    >>> round(float(spectral_angle(x, y, band_axis=1, eps=0.0)), 6)  # (pi/4 + 0) / 2
    0.392699
    """
    axis = _check(reference, estimate, band_axis)
    dot = (reference * estimate).sum(dim=axis)
    norms = reference.norm(dim=axis) * estimate.norm(dim=axis)
    valid = norms > 0
    if not bool(valid.any()):
        return dot.sum() * 0.0
    cosine = (dot[valid] / norms[valid]).clamp(-1.0 + eps, 1.0 - eps)
    return torch.arccos(cosine).mean()


def spectral_gradient_l1(
    reference: torch.Tensor, estimate: torch.Tensor, *, band_axis: int = 1
) -> torch.Tensor:
    """Mean absolute difference of the first band differences (spectral gradients).

    Parameters
    ----------
    reference, estimate : torch.Tensor, same shape
        At least two bands along ``band_axis``.
    band_axis : int
        The spectral axis.

    Returns
    -------
    torch.Tensor
        Scalar, same units as the input (per band step).

    Raises
    ------
    ValueError
        If shapes differ, ``band_axis`` is out of range, or there is one band only.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 1.0, 2.0]])
    >>> float(spectral_gradient_l1(x, x + 5.0))  # an offset leaves gradients alone
    0.0
    """
    axis = _check(reference, estimate, band_axis)
    if reference.shape[axis] < 2:
        raise ValueError("spectral_gradient_l1 needs at least 2 bands")
    return F.l1_loss(torch.diff(estimate, dim=axis), torch.diff(reference, dim=axis))


def charbonnier(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean Charbonnier distance ``sqrt((estimate - reference)^2 + eps^2)``, eps = 1e-3.

    Parameters
    ----------
    estimate, reference : torch.Tensor
        One shape.

    Returns
    -------
    torch.Tensor
        Scalar, in the inputs' units.

    Examples
    --------
    >>> round(float(charbonnier(torch.zeros(2), torch.ones(2))), 6)
    1.0
    """
    return torch.sqrt((estimate - reference) ** 2 + _CHARBONNIER_EPS**2).mean()


#: The non-adversarial terms a ``loss:`` section may weigh, in the order they are summed:
#: ``term(sr, hr) -> scalar`` on ``(B, C, ...)`` tensors, the spectral ones along ``C`` (bands).
TERMS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
    "charbonnier": charbonnier,
    "sam": lambda sr, hr: spectral_angle(hr, sr),
    "spectral_gradient": lambda sr, hr: spectral_gradient_l1(hr, sr),
}


def weighted_loss(weights: Mapping[str, float]) -> PixelLoss:
    """``sum_t weights[t] * TERMS[t](sr, hr)`` as the trainer's ``loss(sr, hr) -> (loss, parts)``.

    Parameters
    ----------
    weights : mapping of str to float
        Term name -> weight (>= 0); terms of weight 0 are neither computed nor reported;
        ``wgan`` (the trainer's) is skipped here.

    Returns
    -------
    callable
        Its parts hold each computed term, unweighted, under its name.

    Raises
    ------
    ValueError
        On an unknown term, a negative weight, or no term of positive weight.

    Examples
    --------
    >>> loss = weighted_loss({"l1": 1.0, "mse": 0.5})
    >>> total, parts = loss(torch.full((1, 1, 2), 2.0), torch.zeros(1, 1, 2))
    >>> float(total), parts
    (4.0, {'l1': 2.0, 'mse': 4.0})
    """
    unknown = sorted(set(weights) - set(TERMS) - {ADVERSARIAL_TERM})
    if unknown:
        raise ValueError(f"unknown loss term {unknown[0]!r} (known: {', '.join([*TERMS, ADVERSARIAL_TERM])})")
    for name, weight in weights.items():
        if not weight >= 0:
            raise ValueError(f"the weight of loss term {name!r} must be >= 0, got {weight!r}")
    used = [(name, float(weights[name])) for name in TERMS if weights.get(name, 0) > 0]
    if not used:
        raise ValueError(f"a loss needs a term of positive weight besides {ADVERSARIAL_TERM!r}, got {dict(weights)}")

    def loss(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = sr.new_zeros(()), {}
        for name, weight in used:
            value = TERMS[name](sr, hr)
            total = total + weight * value
            parts[name] = float(value.detach())
        return total, parts

    return loss


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
