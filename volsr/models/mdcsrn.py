"""mDCSRN: the multi-level densely connected 3-D super-resolution network, and its critic.

Chen et al., "Efficient and accurate MRI super-resolution using a generative adversarial
network and 3D multi-level densely connected network" (MICCAI 2018, arXiv 1803.01417;
MedIA 2020, arXiv 2003.01217). No official code or weights exist; the layer plan follows
the paper's figure caption and two public reimplementations (see
``shared/research/mri_anchors.md`` section 1.2):

- ``conv0``: 3x3x3 convolution to ``base`` (= 2k = 32) maps;
- ``blocks`` dense blocks of ``units`` units (norm -> ELU -> 3x3x3 conv, ``growth`` = k = 16
  new maps each, DenseNet concatenation), each block returning its input plus every unit's
  output;
- "multi-level" skips: the concatenation of ``conv0``'s output and every earlier block's
  output feeds a 1x1x1 compressor back to ``base`` maps before the next block, and the
  concatenation of everything feeds the final 1x1x1 reconstruction.

The network maps the low-resolution volume *interpolated onto the output grid* to a residual
on that grid (the paper's input was also on the HR grid, via zero-filled k-space), so it runs
at any factor; :class:`MDCSRNUpsampler` adds the cubic B-spline interpolation in front and
the residual connection, and follows the engine's ``forward(x, positions)`` contract.

Design choices
--------------
Normalisation. The paper used batch norm, which is unreliable with the 1-4 patch batches a
3-D network fits in memory. Group or instance norm would fix that but compute statistics over
the spatial extent of their input, so a tile's output would depend on the tile and the exact
out-of-core engine would break; they are not offered. The default is ``"none"``, as in the SR
networks that dropped batch norm on purpose (EDSR, RDN, ESRGAN: it removes the range
flexibility an intensity-regression network needs), with conv biases, He initialisation and
a zero-initialised reconstruction layer, so that the untrained model is exactly cubic
interpolation and training starts from it (a "scaled residual" init in the limit of zero
scale). ``"layer"`` normalises each voxel's feature vector over channels only (per voxel,
hence tile-safe). ``"batch"`` is kept for fidelity to the paper; in eval mode it is a
per-voxel affine map, so inference stays tile-safe.

Padding. Convolutions use replicate padding: it continues the edge intensity at the volume's
border instead of inventing a dark rim (zero padding), and training patches are cut from
inside tissue, where replicating is closer to the truth than zeros. Tiling does not depend
on it: the engine widens each tile by the receptive-field radius in output voxels, clipped
at the volume's edge, and crops the widening, so a tile pads exactly where the whole volume
pads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from volsr.models.interpolation import Positions, SeparableInterpolation

__all__ = [
    "MDCSRN",
    "MDCSRNUpsampler",
    "PatchDiscriminator3D",
    "NORMS",
]

#: Normalisations offered; all are per voxel at inference (see the module docstring).
NORMS = ("none", "layer", "batch")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class _ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis of ``(B, C, *spatial)``, one voxel at a time."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + (
            self.bias.view(shape)
        )


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return _BATCH_NORM[dims](channels)
    if kind == "layer":
        return _ChannelLayerNorm(channels)
    return nn.Identity()


class _DenseBlock(nn.Module):
    """``units`` x (norm -> ELU -> 3x3x3 conv); returns the input and every unit's output."""

    def __init__(self, channels: int, *, growth: int, units: int, norm: str, dims: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            nn.Sequential(
                _norm(norm, channels + j * growth, dims),
                nn.ELU(),
                _CONV[dims](
                    channels + j * growth, growth, 3, padding=1, bias=norm != "batch",
                    padding_mode="replicate",
                ),
            )
            for j in range(units)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = torch.cat([x, unit(x)], dim=1)
        return x


class MDCSRN(nn.Module):
    """Multi-level densely connected SR network on the interpolated HR grid (predicts a residual).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input grid and of the predicted residual (1 for MRI).
    scale : None
        The network works on the already interpolated output grid at any factor, so it takes
        no scale; the argument exists for the shared constructor contract and must be None.
    spatial_dims : {2, 3}
        2-D or 3-D convolutions (the published network is 3-D).
    blocks, units : int
        Dense blocks and units per block (published: 4 and 4).
    growth : int
        Maps added by each unit, k (published: 16).
    base : int
        Maps after ``conv0`` and after each compressor, 2k (published: 32).
    norm : {"none", "layer", "batch"}
        Normalisation before each unit's ELU (see the module docstring; "batch" is the
        paper's, without conv biases).

    Raises
    ------
    ValueError
        If ``scale`` is not None, ``spatial_dims`` is not 2 or 3, ``norm`` is not one of
        :data:`NORMS`, or a size is not a positive integer.

    Notes
    -----
    ``forward(x)`` takes ``(B, in_channels, *spatial)`` float and returns the residual
    ``(B, out_channels, *spatial)``; every convolution has stride 1, so any spatial size
    works. Each 3x3x3 convolution widens the receptive field by one voxel and the longest
    path holds ``1 + blocks * units`` of them: :attr:`receptive_radius` (17 for b4u4) is
    the halo, in voxels of the grid it reads, that makes tiled outputs exact.

    Examples
    --------
    >>> net = MDCSRN(blocks=1, units=2)
    >>> net.receptive_radius
    3
    >>> net(torch.zeros(1, 1, 4, 5, 6)).shape
    torch.Size([1, 1, 4, 5, 6])
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: None = None,
        spatial_dims: int = 3,
        blocks: int = 4,
        units: int = 4,
        growth: int = 16,
        base: int = 32,
        norm: str = "none",
    ) -> None:
        super().__init__()
        _check_options(scale, spatial_dims, norm, in_channels=in_channels,
                       out_channels=out_channels, blocks=blocks, units=units,
                       growth=growth, base=base)
        conv = _CONV[spatial_dims]
        self.in_channels, self.spatial_dims = in_channels, spatial_dims
        self.blocks_, self.units_ = blocks, units
        bias = norm != "batch"
        self.conv0 = conv(in_channels, base, 3, padding=1, bias=bias, padding_mode="replicate")
        block_out = base + units * growth
        self.blocks = nn.ModuleList(
            _DenseBlock(base, growth=growth, units=units, norm=norm, dims=spatial_dims)
            for _ in range(blocks)
        )
        self.compressors = nn.ModuleList(
            conv(base + (i + 1) * block_out, base, 1, bias=bias) for i in range(blocks - 1)
        )
        self.reconstruction = conv(base + blocks * block_out, out_channels, 1, bias=bias)
        self._initialise()

    @property
    def receptive_radius(self) -> int:
        """Receptive-field radius in voxels: one per 3x3x3 conv on the longest path (int)."""
        return 1 + self.blocks_ * self.units_

    def _initialise(self) -> None:
        linear = [self.conv0, *self.compressors]
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                # He init for the convs after an ELU, unit gain for the linear 1x1x1 mixes.
                gain = "linear" if any(module is m for m in linear) else "relu"
                nn.init.kaiming_normal_(module.weight, nonlinearity=gain)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Zero residual: the untrained model is exactly the interpolation it refines.
        nn.init.zeros_(self.reconstruction.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual for an interpolated HR grid (see the class Notes).

        Parameters
        ----------
        x : (B, in_channels, *spatial) floating torch.Tensor
            The input interpolated onto the output grid.

        Returns
        -------
        (B, out_channels, *spatial) torch.Tensor
            Same dtype and device as ``x``.

        Raises
        ------
        ValueError
            If ``x`` has the wrong number of axes or channels.

        Examples
        --------
        >>> MDCSRN(blocks=1, units=1, spatial_dims=2)(torch.ones(2, 1, 3, 3)).abs().max().item()
        0.0
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must be (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial "
                f"axes, got shape {tuple(x.shape)}"
            )
        features = self.conv0(x)
        levels = [features]
        for i, block in enumerate(self.blocks):
            levels.append(block(features))
            if i < len(self.compressors):
                features = self.compressors[i](torch.cat(levels, dim=1))
        return self.reconstruction(torch.cat(levels, dim=1))


def _check_options(scale: object, spatial_dims: int, norm: str, **sizes: int) -> None:
    if scale is not None:
        raise ValueError(
            f"scale must be None: the network runs on the interpolated grid at any factor, "
            f"got {scale!r}"
        )
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class MDCSRNUpsampler(nn.Module):
    """The engine-facing mDCSRN: cubic B-spline interpolation, then ``y = hr + net(hr)``.

    Parameters
    ----------
    network : MDCSRN
        The residual network; its ``in_channels`` must equal its ``out_channels``.

    Raises
    ------
    TypeError
        If ``network`` is not an :class:`MDCSRN`.
    ValueError
        If its input and output channels differ.

    Notes
    -----
    ``forward(x, positions)`` follows :class:`~volsr.models.interpolation.SeparableInterpolation`'s
    contract, with each ``positions[d]`` an evenly spaced increasing grid (a tile of the
    output grid). The network runs on exactly the requested grid, so an output voxel within
    :attr:`halo` of the grid's edge sees padding: the engine (``grid == "hr"``) requests each
    tile widened by ``halo`` output voxels, clipped at the volume's edge, and crops the
    widening, which makes tiled outputs equal to whole-volume outputs.

    Examples
    --------
    >>> from volsr.geometry import output_coordinates
    >>> model = MDCSRNUpsampler(MDCSRN(blocks=1, units=1))
    >>> x = torch.rand(1, 1, 4, 4, 4)
    >>> grid = [output_coordinates(4, 8), output_coordinates(4, 4), output_coordinates(4, 4)]
    >>> y = model(x, grid)
    >>> y.shape, model.halo
    (torch.Size([1, 1, 8, 4, 4]), 2)
    >>> torch.equal(y, SeparableInterpolation(method="cubic")(x, grid))  # untrained: cubic
    True
    """

    def __init__(self, network: MDCSRN) -> None:
        super().__init__()
        if not isinstance(network, MDCSRN):
            raise TypeError(f"network must be an MDCSRN, got {type(network).__name__}")
        if network.in_channels != network.reconstruction.out_channels:
            raise ValueError(
                f"a residual network needs in_channels == out_channels, got "
                f"{network.in_channels} and {network.reconstruction.out_channels}"
            )
        self.network = network
        self.interpolate = SeparableInterpolation(method="cubic")

    @property
    def halo(self) -> int:
        """Receptive-field radius in output (HR) voxels, the card's ``halo`` (int)."""
        return self.network.receptive_radius

    def forward(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        """Upsample ``x`` at ``positions`` (see the class Notes).

        Parameters
        ----------
        x : (B, C, *spatial) floating torch.Tensor
            Low-resolution tile, ``C`` = the network's channels.
        positions : sequence of (n_out_d,) float64 ndarray or tensor
            One evenly spaced increasing grid per spatial axis, in voxels of ``x``.

        Returns
        -------
        (B, C, n_out_0, ...) torch.Tensor
            Same dtype and device as ``x``.

        Raises
        ------
        ValueError
            If a grid is not evenly spaced and increasing, or ``x`` does not fit the network.
        TypeError
            If ``x`` is not a floating-point tensor.

        Examples
        --------
        >>> model = MDCSRNUpsampler(MDCSRN(blocks=1, units=1, spatial_dims=2))
        >>> model(torch.rand(1, 1, 3, 3), ([0.0, 0.5, 1.0], [1.0])).shape
        torch.Size([1, 1, 3, 1])
        """
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            received = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"x must be a floating-point torch.Tensor, got {received}")
        if x.ndim not in (4, 5) or len(positions) != x.ndim - 2:
            raise ValueError(
                f"x must be (B, C, *spatial) with 2 or 3 spatial axes and positions one grid "
                f"per spatial axis, got shape {tuple(x.shape)} and {len(positions)} grids"
            )
        for axis, values in enumerate(positions):
            _check_grid(values, axis)
        hr = self.interpolate(x, positions)
        return hr + self.network(hr)


def _check_grid(values: object, axis: int) -> None:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim != 1:
        return  # the interpolation reports it
    steps = np.diff(grid)
    if steps.size and not (
        steps[0] > 0 and np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9)
    ):
        raise ValueError(
            f"positions[{axis}] must be an evenly spaced increasing grid for a convolutional "
            f"model, got steps {steps[:4].tolist()}..."
        )


class PatchDiscriminator3D(nn.Module):
    """SRGAN-style 3-D critic for WGAN-GP (mDCSRN-GAN's D): one score per sample.

    Parameters
    ----------
    in_channels : int
        Channels of the volumes scored.
    base : int
        Maps of the first level (SRGAN: 64); level ``i`` has ``base * 2**i``.
    levels : int
        Levels of (3x3x3 conv, 3x3x3 stride-2 conv); SRGAN has 4 (64 to 512 maps, 16x
        downsampling).
    slope : float
        Negative slope of the LeakyReLU.

    Raises
    ------
    ValueError
        If ``base`` or ``levels`` is not a positive integer or ``slope`` is negative.

    Notes
    -----
    Every conv but the first is followed by layer norm over ``(C, D, H, W)`` of each sample
    (``GroupNorm`` with one group), not batch norm: the WGAN-GP penalty is defined per sample,
    which batch statistics would couple. Global average pooling and two 1x1x1 convs (the last
    level's maps -> twice as many -> 1, as in the E6040 reimplementation) replace SRGAN's
    dense layers, so any input size works.

    Examples
    --------
    >>> critic = PatchDiscriminator3D(base=4, levels=2)
    >>> critic(torch.rand(3, 1, 8, 8, 8)).shape
    torch.Size([3])
    """

    def __init__(
        self, *, in_channels: int = 1, base: int = 64, levels: int = 4, slope: float = 0.2
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base", base), ("levels", levels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not slope >= 0:
            raise ValueError(f"slope must be >= 0, got {slope!r}")
        layers: list[nn.Module] = [nn.Conv3d(in_channels, base, 3, padding=1),
                                   nn.LeakyReLU(slope)]
        channels = base
        for i in range(levels):
            width = base * 2**i
            for stride in ((1, 2) if i else (2,)):
                layers += [nn.Conv3d(channels, width, 3, stride=stride, padding=1),
                           nn.GroupNorm(1, width), nn.LeakyReLU(slope)]
                channels = width
        layers += [nn.AdaptiveAvgPool3d(1), nn.Conv3d(channels, 2 * channels, 1),
                   nn.LeakyReLU(slope), nn.Conv3d(2 * channels, 1, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Critic score of each sample.

        Parameters
        ----------
        x : (B, in_channels, D, H, W) floating torch.Tensor
            Volumes (any size of at least one voxel per axis).

        Returns
        -------
        (B,) torch.Tensor
            Unbounded scores (higher: more real), ``x``'s dtype.

        Raises
        ------
        ValueError
            If ``x`` is not 5-D.

        Examples
        --------
        >>> PatchDiscriminator3D(base=2, levels=1)(torch.zeros(2, 1, 3, 3, 3)).shape
        torch.Size([2])
        """
        if x.ndim != 5:
            raise ValueError(f"x must be (B, C, D, H, W), got shape {tuple(x.shape)}")
        return self.layers(x).flatten()
