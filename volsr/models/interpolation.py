"""Interpolation baselines (nearest, linear, cubic B-spline, Lanczos-3) as registered models.

They go through the same registry and engine as the networks, so that every comparison
runs one code path. Each is a separable linear map built by :mod:`volsr.resample`; the
module holds no parameters, but ``forward`` is differentiable with respect to its input
(a baseline can sit inside a network, e.g. as the ``"hr"`` grid of a residual model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from volsr.models.registry import ModelCard, register_model
from volsr.resample import INTERPOLATION_METHODS, apply_matrix, interpolation_matrix_at

__all__ = ["SCALE_RANGE", "SeparableInterpolation"]

#: Per-axis factors the baselines accept. Down to 1/2, linear, cubic and Lanczos still read
#: every input voxel (a factor-2 linear decimation is a two-voxel mean), so mild reslicing
#: such as 0.94 mm -> 1 mm in-plane works; below that they skip input voxels and alias, and
#: stronger downsampling belongs to the antialiased kernels of ``volsr.resample``. Above 16
#: (4096 output voxels per input voxel in 3-D) a request is more likely a unit mistake
#: (um for mm) than a wish.
SCALE_RANGE: tuple[float, float] = (0.5, 16.0)

Positions = Sequence["np.ndarray | torch.Tensor"]


class SeparableInterpolation(nn.Module):
    """Separable interpolation of the spatial axes of a batch (the engine's model contract).

    Parameters
    ----------
    method : {"nearest", "linear", "bicubic", "cubic", "lanczos"}
        ``cubic`` is the interpolating cubic B-spline (SciPy ``order=3``, ``mode="reflect"``);
        ``lanczos`` is Lanczos-3 with rows normalised to one. Borders are half-sample
        symmetric.

    Raises
    ------
    ValueError
        If ``method`` is not one of the four names.

    Notes
    -----
    ``forward(x, positions)`` is the contract the out-of-core engine relies on:

    - ``x``: float tensor ``(B, C, *spatial)`` with 2 or 3 spatial axes; ``C`` holds
      channels or spectral bands, which are never mixed (only spatial axes are resampled).
    - ``positions``: one 1-D float64 ndarray or tensor per spatial axis, the coordinates of
      the output samples along that axis in voxels of ``x`` (0 is the centre of ``x``'s
      first voxel). A whole-volume call passes
      ``geometry.output_coordinates(n_in, n_out)``; a tile passes that slice minus the
      tile's first input index. Samples outside ``x`` read its half-sample symmetric
      extension, so a tile needs ``card.halo`` extra voxels per side (the cubic prefilter
      is global: 14 voxels bound its effect to float32 precision).
    - returns ``(B, C, len(positions[0]), ...)`` in ``x``'s dtype and device.

    Examples
    --------
    >>> from volsr.geometry import output_coordinates
    >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
    >>> grid = (output_coordinates(2, 4), output_coordinates(2, 2))
    >>> SeparableInterpolation(method="linear")(x, grid)[0, 0, :, 0].tolist()
    [0.0, 0.5, 1.5, 2.0]
    """

    def __init__(self, *, method: str) -> None:
        super().__init__()
        if method not in INTERPOLATION_METHODS:
            raise ValueError(
                f"method must be one of {sorted(INTERPOLATION_METHODS)}, got {method!r}"
            )
        self.method = method

    def extra_repr(self) -> str:
        return f"method={self.method!r}"

    def forward(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        """Resample the spatial axes of ``x`` at ``positions`` (see the class Notes).

        Parameters
        ----------
        x : (B, C, *spatial) floating torch.Tensor
            Two or three spatial axes.
        positions : sequence of (n_out_d,) float64 ndarray or tensor
            One per spatial axis, in input-voxel coordinates of ``x``.

        Returns
        -------
        (B, C, n_out_0, n_out_1[, n_out_2]) torch.Tensor
            Same dtype and device as ``x``.

        Raises
        ------
        TypeError
            If ``x`` is not a floating-point tensor.
        ValueError
            If ``x`` has not 2 or 3 spatial axes, or ``positions`` does not hold one finite
            1-D array per spatial axis.

        Examples
        --------
        >>> x = torch.ones(1, 3, 4, 4)
        >>> SeparableInterpolation(method="cubic")(x, ([0.5], [0.0, 3.0])).shape
        torch.Size([1, 3, 1, 2])
        """
        grids = _check_inputs(x, positions)
        # Separable maps commute; the least-expanding axis first keeps intermediates small.
        order = sorted(range(len(grids)), key=lambda d: grids[d].size / x.shape[2 + d])
        for axis in order:
            matrix = interpolation_matrix_at(grids[axis], x.shape[2 + axis], self.method)
            # An axis sampled at its own voxel centres (factor 1: in-plane axes of a
            # thick-slice volume, or a tile of them with its halo) has the weights of a
            # shifted identity (``cubic``: to 4e-9 from 7 voxels on; on shorter axes its
            # mirrored prefilter is further off and is applied); a matrix product would
            # only copy the voxels (slowly: a dense product along a non-last axis).
            start = _copied_start(matrix)
            if start is None:
                x = apply_matrix(x, matrix, 2 + axis)
            else:
                x = x.narrow(2 + axis, start, matrix.shape[0])
        return x


def _copied_start(matrix: sp.spmatrix, tolerance: float = 1e-8) -> int | None:
    """First input voxel of a matrix that copies consecutive voxels (a crop), else None."""
    rows, cols = matrix.shape
    first_row = matrix.getrow(0).toarray()[0]
    start = int(np.argmax(np.abs(first_row)))
    if rows > cols - start:
        return None
    crop = sp.eye(rows, cols, k=start, format="csr")
    return start if abs(matrix - crop).max() <= tolerance else None


def _check_inputs(x: torch.Tensor, positions: Positions) -> list[np.ndarray]:
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        received = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point torch.Tensor, got {received}")
    if x.ndim not in (4, 5):
        raise ValueError(
            f"x must be (B, C, *spatial) with 2 or 3 spatial axes, got shape {tuple(x.shape)}"
        )
    if len(positions) != x.ndim - 2:
        raise ValueError(
            f"positions needs one array per spatial axis ({x.ndim - 2}), got {len(positions)}"
        )
    grids = []
    for axis, values in enumerate(positions):
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        grid = np.asarray(values, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
            raise ValueError(
                f"positions[{axis}] must be a non-empty finite 1-D array, got shape {grid.shape}"
            )
        grids.append(grid)
    return grids


def _card(method: str, description: str) -> ModelCard:
    return ModelCard(
        name=method,
        kind="interpolation",
        grid="lr",
        halo=INTERPOLATION_METHODS[method],
        scales="real",
        scale_range=SCALE_RANGE,
        modality="any",
        description=description,
        calibration=(f"{method}.json", f"{method}_hsi.json"),  # MRI volumes, spectral cubes
    )


@register_model(_card("nearest", "nearest-neighbour interpolation (baseline)"))
def _nearest() -> SeparableInterpolation:
    """Nearest-neighbour baseline."""
    return SeparableInterpolation(method="nearest")


@register_model(_card("linear", "linear interpolation (baseline)"))
def _linear() -> SeparableInterpolation:
    """(Tri)linear baseline."""
    return SeparableInterpolation(method="linear")


@register_model(_card("cubic", "cubic B-spline interpolation, SciPy order 3 (baseline)"))
def _cubic() -> SeparableInterpolation:
    """Interpolating cubic B-spline baseline (SciPy ``order=3``, ``mode="reflect"``)."""
    return SeparableInterpolation(method="cubic")


@register_model(_card("bicubic", "Keys cubic convolution, a=-0.5: MATLAB imresize 'bicubic' (baseline)"))
def _bicubic() -> SeparableInterpolation:
    """Keys cubic convolution baseline, the 'bicubic' of MATLAB ``imresize`` and of HSI papers."""
    return SeparableInterpolation(method="bicubic")


@register_model(_card("lanczos", "Lanczos-3 interpolation (baseline)"))
def _lanczos() -> SeparableInterpolation:
    """Lanczos-3 baseline (rows normalised to one)."""
    return SeparableInterpolation(method="lanczos")
