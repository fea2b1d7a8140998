"""A model that returns, beside its output, the calibrated half-width of a 90 % interval.

:class:`WithUncertainty` runs the model over flips of its input (the self-ensemble's
members; only the identity for a model whose card ships a one-member calibration), and
returns ``(B, 2C, ...)``: the output the run would give without it (the members' mean when
the self-ensemble is on, else the identity member) in channels ``:C``, and
:meth:`volsr.uncertainty.Calibration.half_width` in channels ``C:``. The engine writes the
second half to the uncertainty array of the same tasks (``extra_outputs``).

Calibrations ship beside the weights (``volsr/models/calibration/NAME.json``, JSON only), one
per modality (MRI volumes; spectral cubes, whose features and widths are per band), and are
named on the model card (``calibration``); :func:`calibration_for` picks the input's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from volsr.models.ensemble import member_output, symmetries
from volsr.models.interpolation import Positions, SeparableInterpolation
from volsr.uncertainty import FEATURE_HALO, MODALITIES, Calibration, input_features

__all__ = ["CALIBRATION_DIR", "WithUncertainty", "calibration_for"]

#: Where the shipped calibrations live.
CALIBRATION_DIR = Path(__file__).with_name("calibration")


def calibration_for(card, modality: str = "mri") -> Calibration:
    """The shipped calibration of a model for one modality, from the files its card names.

    Parameters
    ----------
    card : ModelCard
        The model's card (``calibration``: one file name, or one per modality).
    modality : {"mri", "hsi"}
        The input's: ``"hsi"`` for a spectral cube (an input with a band axis).

    Returns
    -------
    Calibration
        The named file whose ``modality`` matches.

    Raises
    ------
    ValueError
        If no file the card names holds for ``modality`` (a model without one has no
        uncertainty for such inputs; one line), or a file is not a calibration.

    Examples
    --------
    >>> from volsr.models import get_card
    >>> calibration_for(get_card("cubic")).members, calibration_for(get_card("cubic"), "hsi").modality
    (1, 'hsi')
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    names = getattr(card, "calibration", None) or ()
    for name in (names,) if isinstance(names, str) else names:
        if (CALIBRATION_DIR / name).is_file():
            calibration = Calibration.load(CALIBRATION_DIR / name)
            if calibration.modality == modality:
                return calibration
    inputs = "spectral cubes" if modality == "hsi" else "MRI volumes"
    raise ValueError(f"model {card.name!r} ships no uncertainty calibration for {inputs} (its card names none "
                     "for them); --uncertainty needs one (see docs: the shipped models and baselines have theirs)")


class WithUncertainty(nn.Module):
    """``model``'s output and its calibrated 90 % half-width, stacked along channels.

    Parameters
    ----------
    model : torch.nn.Module
        Follows the engine's ``forward(x, positions)`` contract and has a ``card``.
    factors : (D,) sequence of float
        Per-spatial-axis factor of the run.
    calibration : Calibration
        Its coefficients; ``calibration.members`` flips give the spread.
    ensemble : bool
        Return the mean of all the self-ensemble's symmetries as the output (and take the
        spread over them); else the identity member is the output and the spread is over
        the first ``calibration.members`` flips.
    noise : float
        Noise sigma of a scan on the output grid, in the model's scaled units (set by the
        engine once the input's scale is known: :meth:`with_noise`).

    Notes
    -----
    ``card`` is the model's card with the halo widened by the features' stencil;
    ``extra_outputs`` names the arrays the engine writes beside the output.

    Examples
    --------
    >>> from volsr.models import create_model
    >>> from volsr.geometry import output_coordinates
    >>> net = WithUncertainty(create_model("linear"), (1.0, 2.0), calibration_for(create_model("linear").card))
    >>> x = torch.arange(12.0).reshape(1, 1, 2, 6)
    >>> y = net(x, (output_coordinates(2, 2), output_coordinates(6, 12)))
    >>> tuple(y.shape), bool((y[:, 1] >= 0).all())
    ((1, 2, 2, 12), True)
    """

    extra_outputs = ("uncertainty",)

    def __init__(self, model: nn.Module, factors: Sequence[float], calibration: Calibration, *,
                 ensemble: bool = False, noise: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.factors = tuple(float(f) for f in factors)
        self.calibration = calibration
        self.ensemble = bool(ensemble)
        self.noise = float(noise)
        self.scale = 1.0
        every = symmetries(self.factors)
        self.symmetries = every if self.ensemble else every[: min(calibration.members, 2 ** len(self.factors))]
        self._features_at = SeparableInterpolation(method="linear")
        self.card = dataclasses.replace(model.card, halo=max(model.card.halo, 1 + FEATURE_HALO))

    def with_noise(self, noise: float, scale: float = 1.0) -> WithUncertainty:
        """Set the noise sigma (scaled units) and the scan's width factor; return ``self``."""
        self.noise, self.scale = float(noise), float(scale)
        return self

    def forward(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        """Output channels ``:C``, half-width channels ``C:`` (see the class docstring).

        Parameters
        ----------
        x : (B, C, *spatial) floating torch.Tensor
            Input tile (scaled units).
        positions : (D,) sequence of 1-D float64 ndarray or tensor
            Output coordinates per spatial axis, in voxels of ``x``.

        Returns
        -------
        (B, 2C, len(positions[0]), ...) torch.Tensor
            The model's dtype and device.
        """
        output, spread, slope, bend = self.features(x, positions)
        width = self.scale * self.calibration.half_width(spread, slope, bend, self.noise, max(self.factors))
        return torch.cat([output, width], 1).to(x.dtype)

    def features(self, x: torch.Tensor, positions: Positions) -> tuple[torch.Tensor, ...]:
        """The output and the features on ``positions``: ``(output, spread, slope, bend)``.

        Parameters
        ----------
        x : (B, C, *spatial) floating torch.Tensor
            Input tile (scaled units).
        positions : (D,) sequence of 1-D float64 ndarray or tensor
            Output coordinates per spatial axis, in voxels of ``x``.

        Returns
        -------
        tuple of four (B, C, len(positions[0]), ...) float32 torch.Tensor
        """
        mean = square = first = total = None
        for count, symmetry in enumerate(self.symmetries, start=1):
            y = member_output(self.model, x, positions, symmetry).to(torch.float32)
            if first is None:
                first, mean, square = y, y.clone(), torch.zeros_like(y)
                total = y.clone() if self.ensemble else None
                continue
            if total is not None:  # summed as SelfEnsemble sums: the output is bit-identical to a plain run's
                total.add_(y)
            # Welford: the members' mean and spread with two accumulators.
            delta = y - mean
            mean += delta / count
            square += delta * (y - mean)
        spread = (square / len(self.symmetries)).clamp_min_(0).sqrt_()
        slope, bend = input_features(x.to(torch.float32), self.factors)
        output = total.div_(len(self.symmetries)) if self.ensemble else first
        return output, spread, self._features_at(slope, positions), self._features_at(bend, positions)
