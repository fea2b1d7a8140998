"""The 1D-2D attention network for hyperspectral SR, band-count agnostic (volsr re-implementation).

After Li, Cui, Li, Song, Li and Du, "Hyperspectral image super-resolution by band attention
through 1D-2D convolutional neural network" / "1D-2D attentional CNN" (Remote Sensing
11(23):2859, 2019). Only the abstract could be read (``shared/research/hsi_anchors.md``
section 1): a spectral stream of 1-D convolutions along the bands, a spatial stream of 2-D
convolutions with attention, fused step by step through hierarchical side connections. The
layer plan below is volsr's; no published number is claimed for it.

How it runs on any number of bands
----------------------------------
A cube ``(B, L, H, W)`` becomes ``(B, 1, L, H, W)``: every band is a sample of one
shared-weight process, and features live in a channel axis of width ``features``. Spectral
convolutions are ``Conv3d`` with kernel ``(k, 1, 1)`` (1-D along the bands), spatial ones
``(1, 3, 3)`` (2-D within a band). Nothing pools over all bands or over the image, so:

- any band count runs with the same weights (31, 103, 162, 224 ... are tested);
- an output band depends only on input bands within :attr:`Attn1D2D.spectral_radius` of it,
  so a contiguous sub-range of bands gives the same interior bands as the whole cube;
- an output pixel depends only on LR pixels within :attr:`Attn1D2D.receptive_radius`, so
  tiles with that halo give the whole-cube result (the out-of-core engine relies on it).

Layers (``F = features``, ``N = stages``)
-----------------------------------------
- heads: spectral ``Conv3d(1, F, (3, 1, 1))``, spatial ``Conv3d(1, F, (1, 3, 3))``;
- stage ``i``: spectral block (two ``(3,1,1)`` convs with ReLU, then *spectral attention*,
  a per-pixel, per-band gate ``sigmoid(Conv3d(F, F, (k, 1, 1)))``, plus a skip); the side
  connection ``Conv3d(F, F, 1)`` of the spectral features is added to the spatial stream,
  then the spatial block (two ``(1,3,3)`` convs with ReLU, then *spatial attention*, a
  CBAM-style gate ``sigmoid(Conv3d(2, 1, (1, 3, 3)))`` of the channel mean and max, plus a
  skip);
- fusion ``Conv3d(2F, F, 1)`` of both streams, then ``Conv3d(F, s*s, (1, 3, 3))`` and a
  pixel shuffle over rows and columns of every band (ICNR-initialised: the ``s*s`` sub-pixel
  filters start equal, so the initial output has no checkerboard);
- global residual: ``y = bicubic(x) + residual_scale * residual``, bicubic being Keys' cubic
  convolution (a = -0.5, the registry's ``"bicubic"``). ``residual_scale`` is a learned
  scalar initialised to ``init_residual_scale`` (default 0, so the untrained network is
  exactly bicubic, ReZero style; gradients still reach every layer after the first step).

Convolutions use replicate padding (no dark rim at the image or spectrum ends).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from volsr.geometry import sample_coordinates
from volsr.models.interpolation import Positions, SeparableInterpolation
from volsr.resample import INTERPOLATION_METHODS

__all__ = ["Attn1D2D", "SCALES", "icnr_", "implied_scale"]

#: Integer factors the network is built for.
SCALES = (2, 3, 4)

_TOL = 1e-6


def _conv(c_in: int, c_out: int, kernel: tuple[int, int, int]) -> nn.Conv3d:
    padding = tuple(k // 2 for k in kernel)
    mode = "replicate" if any(padding) else "zeros"
    return nn.Conv3d(c_in, c_out, kernel, padding=padding, padding_mode=mode)


def icnr_(weight: torch.Tensor, *, scale: int) -> torch.Tensor:
    """ICNR initialisation (Aitken et al. 2017) of a sub-pixel convolution, in place.

    Parameters
    ----------
    weight : (scale * scale * C, C_in, *kernel) torch.Tensor
        Weight of the convolution feeding a pixel shuffle whose output channel ``c`` reads
        input channels ``c * scale**2 ... (c + 1) * scale**2 - 1``.
    scale : int
        Pixel-shuffle factor (>= 1).

    Returns
    -------
    torch.Tensor
        ``weight``, with the ``scale**2`` filters of each output channel equal to one
        He-initialised filter.

    Raises
    ------
    ValueError
        If the first dimension is not a multiple of ``scale**2``.

    Examples
    --------
    >>> w = icnr_(torch.empty(4, 3, 1, 3, 3), scale=2)
    >>> bool((w == w[:1]).all())
    True
    """
    groups = scale * scale
    if scale < 1 or weight.shape[0] % groups:
        raise ValueError(
            f"weight's first dimension ({weight.shape[0]}) must be a multiple of scale**2 "
            f"({groups})"
        )
    base = torch.empty((weight.shape[0] // groups, *weight.shape[1:]), dtype=weight.dtype)
    nn.init.kaiming_normal_(base, nonlinearity="relu")
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(groups, dim=0))
    return weight


class _SpectralBlock(nn.Module):
    def __init__(self, features: int, attention_kernel: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(features, features, (3, 1, 1)), nn.ReLU(), _conv(features, features, (3, 1, 1))
        )
        self.gate = _conv(features, features, (attention_kernel, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y * torch.sigmoid(self.gate(y))


class _SpatialBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(features, features, (1, 3, 3)), nn.ReLU(), _conv(features, features, (1, 3, 3))
        )
        self.gate = _conv(2, 1, (1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        pooled = torch.cat([y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True)], dim=1)
        return x + y * torch.sigmoid(self.gate(pooled))


class Attn1D2D(nn.Module):
    """1D-2D attention network on the LR grid of a cube, any band count (see the module doc).

    Parameters
    ----------
    scale : {2, 3, 4}
        Integer upsampling factor of rows and columns (one network per factor).
    features : int
        Feature channels of both streams (shared by every band).
    stages : int
        Spectral/spatial stage pairs joined by side connections.
    attention_kernel : int
        Odd band extent of the spectral-attention convolution.
    init_residual_scale : float
        Initial value of the learned residual scale (0: the untrained model is bicubic).

    Raises
    ------
    ValueError
        If ``scale`` is not in :data:`SCALES`, a size is not a positive integer, or
        ``attention_kernel`` is even.

    Notes
    -----
    ``forward(x, positions)`` follows the engine contract of
    :class:`~volsr.models.interpolation.SeparableInterpolation`: ``x`` is an LR tile
    ``(B, bands, rows, cols)``; ``positions`` holds, per spatial axis, LR coordinates of
    outputs that must lie on this network's ``scale`` grid
    (``(o + 0.5) / scale - 0.5`` for integers ``0 <= o < scale * n``); see
    :func:`implied_scale`. The card's halo is :attr:`halo` LR pixels.

    Examples
    --------
    >>> from volsr.geometry import output_coordinates
    >>> net = Attn1D2D(scale=2, features=4, stages=1)
    >>> x = torch.rand(1, 7, 5, 6)
    >>> grid = (output_coordinates(5, 10), output_coordinates(6, 12))
    >>> y = net(x, grid)
    >>> y.shape
    torch.Size([1, 7, 10, 12])
    >>> torch.equal(y, SeparableInterpolation(method="bicubic")(x, grid))  # untrained
    True
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        features: int = 16,
        stages: int = 3,
        attention_kernel: int = 5,
        init_residual_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if scale not in SCALES or isinstance(scale, bool):
            raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
        for name, value in (("features", features), ("stages", stages),
                            ("attention_kernel", attention_kernel)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if attention_kernel % 2 == 0:
            raise ValueError(f"attention_kernel must be odd, got {attention_kernel}")
        self.scale, self.stages_, self.attention_kernel = scale, stages, attention_kernel
        self.spectral_head = _conv(1, features, (3, 1, 1))
        self.spatial_head = _conv(1, features, (1, 3, 3))
        self.spectral = nn.ModuleList(
            _SpectralBlock(features, attention_kernel) for _ in range(stages)
        )
        self.sides = nn.ModuleList(_conv(features, features, (1, 1, 1)) for _ in range(stages))
        self.spatial = nn.ModuleList(_SpatialBlock(features) for _ in range(stages))
        self.fuse = _conv(2 * features, features, (1, 1, 1))
        self.upsample = _conv(features, scale * scale, (1, 3, 3))
        self.residual_scale = nn.Parameter(torch.tensor(float(init_residual_scale)))
        self.interpolate = SeparableInterpolation(method="bicubic")
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for conv in (*self.sides, self.fuse):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
        # Small ICNR filters: a smooth, checkerboard-free residual once the scale leaves 0.
        icnr_(self.upsample.weight, scale=self.scale)
        with torch.no_grad():
            self.upsample.weight.mul_(0.1)

    @property
    def receptive_radius(self) -> int:
        """LR pixels each output depends on per side: heads, 3 per stage, upsampler (int)."""
        return 1 + 3 * self.stages_ + 1

    @property
    def spectral_radius(self) -> int:
        """Bands each output band depends on per side (int)."""
        return 1 + self.stages_ * (2 + self.attention_kernel // 2)

    @property
    def halo(self) -> int:
        """The card's halo in LR pixels: the network's or the bicubic path's radius (int)."""
        return max(self.receptive_radius, INTERPOLATION_METHODS["bicubic"])

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled residual on the full ``scale``-times grid of ``x``.

        Parameters
        ----------
        x : (B, L, H, W) floating torch.Tensor
            LR cube, any band count ``L``.

        Returns
        -------
        (B, L, scale * H, scale * W) torch.Tensor
            ``x``'s dtype.

        Raises
        ------
        ValueError
            If ``x`` is not 4-D.

        Examples
        --------
        >>> Attn1D2D(scale=2, features=2, stages=1).residual(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 3, 4, 4])
        """
        if x.ndim != 4:
            raise ValueError(f"x must be (B, bands, rows, cols), got shape {tuple(x.shape)}")
        cube = x.unsqueeze(1)
        spectral, spatial = self.spectral_head(cube), self.spatial_head(cube)
        for spectral_block, side, spatial_block in zip(
            self.spectral, self.sides, self.spatial, strict=True
        ):
            spectral = spectral_block(spectral)
            spatial = spatial_block(spatial + side(spectral))
        sub = self.upsample(self.fuse(torch.cat([spectral, spatial], dim=1)))
        b, _, bands, h, w = sub.shape
        s = self.scale
        # (B, s*s, L, H, W) -> (B, L, H, s, W, s): PixelShuffle of every band separately.
        sub = sub.view(b, s, s, bands, h, w).permute(0, 3, 4, 1, 5, 2)
        return sub.reshape(b, bands, h * s, w * s)

    def forward(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        """Super-resolve an LR tile at ``positions`` (see the class Notes).

        Parameters
        ----------
        x : (B, L, H, W) floating torch.Tensor
            LR tile, bands in the channel axis.
        positions : (2,) sequence of 1-D float64 ndarray or tensor
            Output coordinates along rows and columns, in LR pixels of ``x``, on the
            ``scale`` grid.

        Returns
        -------
        (B, L, len(positions[0]), len(positions[1])) torch.Tensor
            ``x``'s dtype and device.

        Raises
        ------
        TypeError
            If ``x`` is not a floating-point tensor.
        ValueError
            If ``x`` is not 4-D or a grid is not on the ``scale`` grid of ``x``.

        Examples
        --------
        >>> net = Attn1D2D(scale=2, features=2, stages=1)
        >>> net(torch.rand(1, 3, 4, 4), ([0.25, 0.75], [-0.25])).shape
        torch.Size([1, 3, 2, 1])
        """
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            received = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"x must be a floating-point torch.Tensor, got {received}")
        if x.ndim != 4 or len(positions) != 2:
            raise ValueError(
                f"x must be (B, bands, rows, cols) with one grid per spatial axis, got shape "
                f"{tuple(x.shape)} and {len(positions)} grids"
            )
        index = []
        for axis, values in enumerate(positions):
            found = implied_scale(values, n_in=x.shape[2 + axis], default=self.scale)
            if found[0] != self.scale:
                raise ValueError(
                    f"positions[{axis}] imply factor {found[0]}, this network upsamples by "
                    f"{self.scale}"
                )
            index.append(torch.as_tensor(found[1], device=x.device))
        with torch.autocast(x.device.type, enabled=False):  # bf16 would blur the base ~1e-3
            hr = self.interpolate(x, positions)
        residual = self.residual(x)[:, :, index[0]][:, :, :, index[1]]
        return hr + self.residual_scale.to(x.dtype) * residual


def implied_scale(
    positions: Sequence[float] | np.ndarray | torch.Tensor, *, n_in: int, default: int
) -> tuple[int, np.ndarray]:
    """Integer factor and output indices of LR coordinates on an integer-factor grid.

    Parameters
    ----------
    positions : (n,) float array-like
        LR coordinates ``(o + 0.5) / s - 0.5`` of outputs ``o`` of the ``s``-times grid.
    n_in : int
        LR pixels along the axis.
    default : int
        Factor assumed when one position gives no step.

    Returns
    -------
    scale : int
        The factor ``s`` (from the smallest step between positions).
    index : (n,) int64 ndarray
        Output indices ``o`` in ``[0, s * n_in)``.

    Raises
    ------
    ValueError
        If the positions are not finite, not on an integer-factor grid, or outside it.

    Examples
    --------
    >>> s, o = implied_scale([0.125, 0.375, 1.125], n_in=2, default=4)
    >>> s, o.tolist()
    (4, [2, 3, 6])
    """
    if isinstance(positions, torch.Tensor):
        positions = positions.detach().cpu().numpy()
    grid = np.asarray(positions, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
        raise ValueError(f"positions must be a non-empty finite 1-D array, got {grid!r}")
    scale = default
    if grid.size > 1:
        step = float(np.min(np.abs(np.diff(grid))))
        scale = round(1.0 / step) if step > 0 else 0
        if scale < 1 or abs(scale * step - 1.0) > _TOL:
            raise ValueError(
                f"positions must lie on an integer-factor grid (step 1/s), got step {step!r}"
            )
    exact = sample_coordinates(grid, 1.0 / scale)  # output indices: the inverse map
    index = np.round(exact).astype(np.int64)
    if np.any(np.abs(exact - index) > _TOL * scale) or index.min() < 0 or (
        index.max() >= scale * n_in
    ):
        raise ValueError(
            f"positions are not outputs of the x{scale} grid of {n_in} LR pixels: "
            f"{grid[:4].tolist()}..."
        )
    return int(scale), index
