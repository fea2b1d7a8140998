"""Losses for hyperspectral SR, as pure functions of tensors: pixel + spectral-angle + spectral-gradient.

``loss = pixel(sr, hr) + sam_weight * SAM(sr, hr) + gradient_weight * L1(d sr, d hr)``, where
``SAM`` is the mean spectral angle in **radians** over pixels whose spectra have non-zero
norms (the convention of :func:`volsr.metrics.sam`, which reports degrees), and ``d`` the
first difference along the bands. The spectral angle is invariant to a per-pixel scaling of
the spectrum, so it penalises spectral-shape errors that the pixel term weighs little.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["PIXEL_LOSSES", "HSILoss", "spectral_angle", "spectral_gradient_l1", "hsi_loss", "hsi_pixel_loss"]

#: Pixel terms offered: mean absolute error, mean squared error, Charbonnier (eps 1e-3).
PIXEL_LOSSES = ("l1", "mse", "charbonnier")

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


@dataclasses.dataclass(frozen=True)
class HSILoss:
    """The total loss and its parts.

    Parameters
    ----------
    total : torch.Tensor
        Scalar to back-propagate.
    pixel, sam, gradient : torch.Tensor
        Unweighted parts (``sam`` in radians); ``gradient`` is 0 when its weight is 0.
    """

    total: torch.Tensor
    pixel: torch.Tensor
    sam: torch.Tensor
    gradient: torch.Tensor


def hsi_loss(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    *,
    pixel: str = "l1",
    sam_weight: float = 0.1,
    gradient_weight: float = 0.0,
    band_axis: int = 1,
) -> HSILoss:
    """``pixel + sam_weight * SAM(rad) + gradient_weight * spectral-gradient L1``.

    Parameters
    ----------
    reference, estimate : torch.Tensor, same shape
        HR target and SR output, e.g. ``(B, bands, rows, cols)``.
    pixel : {"l1", "mse", "charbonnier"}
        Pixel term.
    sam_weight, gradient_weight : float
        Weights (>= 0) of the spectral-angle and spectral-gradient terms.
    band_axis : int
        The spectral axis.

    Returns
    -------
    HSILoss
        Total and parts, scalars of the input dtype.

    Raises
    ------
    ValueError
        If ``pixel`` is unknown, a weight is negative, or the tensors do not match.

    Examples
    --------
    >>> x = torch.ones(1, 3, 2, 2)
    >>> round(float(hsi_loss(x, 2 * x, sam_weight=1.0).total), 3)  # angle 0 up to the clamp
    1.0
    """
    if pixel not in PIXEL_LOSSES:
        raise ValueError(f"pixel must be one of {list(PIXEL_LOSSES)}, got {pixel!r}")
    for name, value in (("sam_weight", sam_weight), ("gradient_weight", gradient_weight)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    _check(reference, estimate, band_axis)
    if pixel == "l1":
        pixel_term = F.l1_loss(estimate, reference)
    elif pixel == "mse":
        pixel_term = F.mse_loss(estimate, reference)
    else:
        pixel_term = torch.sqrt((estimate - reference) ** 2 + _CHARBONNIER_EPS**2).mean()
    angle = spectral_angle(reference, estimate, band_axis=band_axis)
    gradient = pixel_term.new_zeros(())
    if gradient_weight > 0:
        gradient = spectral_gradient_l1(reference, estimate, band_axis=band_axis)
    total = pixel_term + sam_weight * angle + gradient_weight * gradient
    return HSILoss(total=total, pixel=pixel_term, sam=angle, gradient=gradient)


def hsi_pixel_loss(*, pixel: str = "l1", sam_weight: float = 0.1, gradient_weight: float = 0.0
                   ) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]:  # fmt: skip
    """:func:`hsi_loss` as the trainer's ``pixel_loss(sr, hr) -> (loss, parts)``.

    Parameters
    ----------
    pixel, sam_weight, gradient_weight
        As :func:`hsi_loss` (checked now).

    Returns
    -------
    callable
        Parts ``"l1"`` (the pixel term, whatever its kind), ``"sam"`` (radians), ``"gradient"``.

    Raises
    ------
    ValueError
        If ``pixel`` is unknown or a weight is negative.

    Examples
    --------
    >>> x = torch.ones(1, 3, 2, 2)
    >>> loss, parts = hsi_pixel_loss(sam_weight=1.0)(2 * x, x)
    >>> round(float(loss), 3), sorted(parts)
    (1.0, ['gradient', 'l1', 'sam'])
    """
    hsi_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), pixel=pixel, sam_weight=sam_weight,
             gradient_weight=gradient_weight)  # checks the options now

    def loss(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms = hsi_loss(hr, sr, pixel=pixel, sam_weight=sam_weight, gradient_weight=gradient_weight)
        parts = {"l1": float(terms.pixel.detach()), "sam": float(terms.sam.detach()),
                 "gradient": float(terms.gradient.detach())}
        return terms.total, parts

    return loss
