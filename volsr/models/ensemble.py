"""Self-ensemble: a model averaged over the flips and axis swaps of its input grid.

A network trained with random flips and 90-degree rotations of its spatial axes (the HSI
sampler's ``augment``) should give the same answer on a flipped input, flipped back; it
does not quite, and the mean over those symmetries is a better estimate than any one of
them (Lim et al. 2017, EDSR "+"; measured for the shipped HSI networks in their model
cards). The symmetries used here are every combination of flips of the spatial axes
(``2**D``) times every order of the axes that keeps their factors (a swap of a thick-slice
axis with an in-plane one would ask the model a different question): 8 for a cube
upsampled by the same factor along rows and columns.

Every symmetry maps the output grid onto itself, so the receptive radius, the halo and the
engine's tiling stay as they are; a tile of the ensemble equals the same tile of the
whole-volume ensemble.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from volsr.models.interpolation import Positions

__all__ = ["SelfEnsemble", "member_output", "symmetries"]

#: A symmetry: the spatial axes it flips, then the order of the axes it reads.
Symmetry = tuple[tuple[int, ...], tuple[int, ...]]


def symmetries(factors: Sequence[float]) -> list[Symmetry]:
    """Flips and factor-preserving axis orders of a grid upsampled by ``factors``.

    Parameters
    ----------
    factors : (D,) sequence of float
        Per-spatial-axis factor of the run; axes with equal factors may swap.

    Returns
    -------
    list of (flipped axes, axis order)
        The identity ``((), (0, ..., D-1))`` first; ``2**D`` flips times the orders.

    Raises
    ------
    ValueError
        If ``factors`` is empty.

    Examples
    --------
    >>> len(symmetries((4, 4))), len(symmetries((1, 1, 4))), len(symmetries((2, 3)))
    (8, 16, 4)
    >>> symmetries((2, 3))[:2]
    [((), (0, 1)), ((1,), (0, 1))]
    """
    factors = tuple(float(f) for f in factors)
    if not factors:
        raise ValueError("factors must name at least one spatial axis, got ()")
    d = len(factors)
    orders = [
        order for order in itertools.permutations(range(d))
        if all(abs(factors[axis] - factors[read]) < 1e-9 for axis, read in enumerate(order))
    ]
    flips = [
        tuple(axis for axis in range(d) if mask >> (d - 1 - axis) & 1) for mask in range(2**d)
    ]
    return [(flipped, order) for order in orders for flipped in flips]


def _mirrored(positions: np.ndarray | torch.Tensor, n_in: int) -> np.ndarray:
    """Coordinates of ``positions`` on the flipped axis of ``n_in`` voxels, in output order."""
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    grid = np.asarray(positions, dtype=np.float64)
    return np.ascontiguousarray((n_in - 1) - grid[::-1])


class SelfEnsemble(nn.Module):
    """The mean of ``model`` over the :func:`symmetries` of a run's factors.

    Parameters
    ----------
    model : torch.nn.Module
        Follows the engine's ``forward(x, positions)`` contract
        (:class:`volsr.models.interpolation.SeparableInterpolation`); its ``card``, if it
        has one, becomes the ensemble's.
    factors : (D,) sequence of float
        Per-spatial-axis factor of the run (fixes which axes may swap, once for every tile).

    Raises
    ------
    ValueError
        If ``factors`` is empty.

    Notes
    -----
    ``card`` is the wrapped model's card (grid, halo and scales do not change). A flip maps
    output coordinate ``p`` on an axis of ``n`` input voxels to ``n - 1 - p`` (voxel
    centres), which is again on the grid of an integer-factor network. Runs the symmetries
    one after the other: ``len(symmetries)`` times the time of one forward, the memory of
    one plus an accumulator of the output.

    Examples
    --------
    >>> from volsr.models import create_model
    >>> from volsr.geometry import output_coordinates
    >>> net = SelfEnsemble(create_model("bicubic"), (2, 2))
    >>> x = torch.arange(12.0).reshape(1, 1, 3, 4)
    >>> grid = (output_coordinates(3, 6), output_coordinates(4, 8))
    >>> len(net.symmetries), torch.allclose(net(x, grid), net.model(x, grid), atol=1e-5)
    (8, True)
    """

    def __init__(self, model: nn.Module, factors: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        if getattr(model, "card", None) is not None:
            self.card = model.card
        self.symmetries = symmetries(factors)

    def forward(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        """The mean of the model over the symmetries, on ``positions``.

        Parameters
        ----------
        x : (B, C, *spatial) floating torch.Tensor
            Input tile, ``D`` spatial axes.
        positions : (D,) sequence of 1-D float64 ndarray or tensor
            Output coordinates per spatial axis, in voxels of ``x``.

        Returns
        -------
        (B, C, len(positions[0]), ...) torch.Tensor
            The model's dtype and device.

        Raises
        ------
        ValueError
            If ``positions`` does not give one grid per spatial axis of the symmetries.

        Examples
        --------
        >>> from volsr.models import create_model
        >>> net = SelfEnsemble(create_model("linear"), (1.0, 2.0))
        >>> net(torch.tensor([[[[0.0, 2.0]]]]), ([0.0], [0.0, 0.5, 1.0])).tolist()
        [[[[0.0, 1.0, 2.0]]]]
        """
        d = len(self.symmetries[0][1])
        if len(positions) != d or x.ndim != d + 2:
            raise ValueError(
                f"this ensemble runs on {d} spatial axes: x must be (B, C, *{d} axes) with "
                f"{d} grids, got shape {tuple(x.shape)} and {len(positions)} grids"
            )
        total = None
        for symmetry in self.symmetries:
            y = member_output(self.model, x, positions, symmetry)
            total = y.to(torch.float32, copy=True) if total is None else total.add_(y)
        return total.div_(len(self.symmetries)).to(y.dtype)


def member_output(model: nn.Module, x: torch.Tensor, positions: Positions, symmetry: Symmetry) -> torch.Tensor:
    """``model`` run on ``x`` seen through one symmetry, mapped back onto ``positions``.

    Parameters
    ----------
    model : torch.nn.Module
        Follows the engine's ``forward(x, positions)`` contract.
    x : (B, C, *spatial) floating torch.Tensor
        Input tile, ``D`` spatial axes.
    positions : (D,) sequence of 1-D float64 ndarray or tensor
        Output coordinates per spatial axis, in voxels of ``x``.
    symmetry : (flipped axes, axis order)
        One of :func:`symmetries`.

    Returns
    -------
    (B, C, len(positions[0]), ...) torch.Tensor
        The model's dtype and device.

    Examples
    --------
    >>> from volsr.models import create_model
    >>> x = torch.tensor([[[[0.0, 2.0]]]])
    >>> member_output(create_model("linear"), x, ([0.0], [0.0, 0.5, 1.0]), ((1,), (0, 1))).tolist()
    [[[[0.0, 1.0, 2.0]]]]
    """
    flipped, order = symmetry
    grids = [_mirrored(p, x.shape[2 + axis]) if axis in flipped else p for axis, p in enumerate(positions)]
    seen = x.flip([2 + axis for axis in flipped]) if flipped else x
    seen = seen.permute(0, 1, *(2 + axis for axis in order))
    y = model(seen, [grids[axis] for axis in order])
    y = y.permute(0, 1, *(2 + int(axis) for axis in np.argsort(order)))
    return y.flip([2 + axis for axis in flipped]) if flipped else y
