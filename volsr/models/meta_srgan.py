"""Meta-SRGAN in 3-D: one network for any per-axis factor, non-integer and anisotropic included.

Meta-SR (Hu et al., CVPR 2019, arXiv 1903.00875) predicts each output pixel's upsampling
filter from its sub-pixel offset and the scale; Meta-SRGAN (Tan, Zhu, Lio, AIAI 2020, arXiv
2004.02086) trained it adversarially on brain MRI, in 2-D and isotropically. Here it is 3-D,
per axis, and follows the engine's ``forward(x, positions)`` contract
(see ``shared/research/mri_anchors.md`` section 2):

- :class:`RDNFeatures`: features on the LR grid: a 3x3x3 conv, ``blocks`` residual dense
  blocks (RDN, Zhang et al. 2018) of ``layers`` 3x3x3 conv + ReLU each, global feature
  fusion (1x1x1 then 3x3x3) and a global residual;
- :class:`MetaUpscale3D`: for each output voxel, at LR position ``p`` (per axis), the
  fractional offset ``delta = p - floor(p)`` and ``1/s`` give the weights of a local filter
  over the ``taps`` LR feature voxels ``floor(p) - taps/2 + 1 ... floor(p) + taps/2`` per
  axis, producing ``out_channels``;
- :class:`MetaSRGAN`: ``y = cubic(x) + meta_upscale(features(x))``; the last layer of the
  channel-mixing network starts at zero, so the untrained model is exactly the cubic
  B-spline interpolation (as in :mod:`volsr.models.mdcsrn`).

The adversarial critic is :class:`volsr.models.mdcsrn.PatchDiscriminator3D` (WGAN-GP), and
the trainer's loss is L1 + lambda * adversarial.

Memory: a separable (factorised) meta-filter
----------------------------------------------
Meta-SR materialises one ``(C k^2 out)`` filter per output pixel and the ``k^2``-unfolded,
``ceil(s)^2``-repeated feature map: in 3-D that is ``n_out C k^3 (out + 1)`` floats, 27 x 16
x 2 = 864 floats per output voxel for C = 16, k = 3 (3.5 KB: 58 GB for a 256^3 output).
Here the filter of output voxel ``(i, j, l)`` is factorised as

    W[o, c, a, b, e] = M(1/s)[o, c] * w0[c, a](delta0, 1/s0) * w1[c, b](delta1, 1/s1)
                       * w2[c, e](delta2, 1/s2)

(a rank-one filter per feature channel, then a scale-dependent channel mix): one small MLP
per axis maps ``(delta_d, 1/s_d)`` to ``C x taps`` 1-D weights, and one MLP maps
``(1/s0, 1/s1, 1/s2)`` to the ``out x C`` mix and ``out`` biases. Along an axis the weights
depend on the offset of the *axis* only, so they are predicted once per output row of that
axis: ``sum_d n_out_d C taps`` floats, not ``prod_d n_out_d C taps^3``. The filter is applied
one axis at a time (the least expanding axis first, as :class:`SeparableInterpolation`
does), accumulating over the taps in place, so the largest tensors are the
``(B, C, *n_out)`` feature map on the output grid and one gathered tap of the same size:
peak memory grows as ``~2 C n_out`` floats (plus the previous axis's smaller map, the
``out`` output channels and the LR-grid features), linear in the output size with a
constant independent of ``taps`` and ``s`` (the test pins ``<= (2.5 C + 1) n_out``).
With autograd (training) each tap's gathered map is kept for the backward pass:
``taps`` maps per axis, ``~(taps + 1) C n_out`` floats on the last axis.

Tiling
------
Every conv has stride 1 and replicate padding, and the taps read indices clipped to the
tile, so a tile whose input window is clipped at the volume's edge pads exactly as the
whole volume does. An output's filter reads LR feature voxels up to ``taps / 2`` away from
``floor(p)``, each of which depends on ``receptive_radius`` more voxels: the card's halo
(LR voxels) is ``receptive_radius + taps / 2``, and at least the cubic B-spline's 14 (its
prefilter is global; 14 voxels bound it to float32 precision).

The factor of an axis is read from the grid's step (``1 / (p[1] - p[0])``); an axis with a
single output sample has no step, so ``forward`` then needs the ``scale`` keyword.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from volsr.geometry import grid_factor
from volsr.models.interpolation import Positions, SeparableInterpolation
from volsr.resample import INTERPOLATION_METHODS

__all__ = ["FACTOR_LIMITS", "RDNFeatures", "MetaUpscale3D", "MetaSRGAN"]

#: Per-axis factors the architecture is built for (the card declares the trained range).
FACTOR_LIMITS: tuple[float, float] = (1.0, 6.0)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _conv(a: int, b: int, size: int) -> nn.Conv3d:
    return nn.Conv3d(a, b, size, padding=size // 2, padding_mode="replicate")


class _DenseBlock(nn.Module):
    """``layers`` x (3x3x3 conv + ReLU, dense concatenation), 1x1x1 fusion, local residual."""

    def __init__(self, channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            _conv(channels + j * growth, growth, 3) for j in range(layers)
        )
        self.fuse = _conv(channels + layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for conv in self.convs:
            features = torch.cat([features, F.relu(conv(features))], dim=1)
        return x + self.fuse(features)


class RDNFeatures(nn.Module):
    """Residual dense network features on the LR grid (RDN without its upsampler).

    Parameters
    ----------
    in_channels : int
        Channels of the input volume (1 for MRI).
    base : int
        Feature maps, G0 (RDN: 64; modest for CPU training).
    blocks : int
        Residual dense blocks, D (RDN: 16).
    layers : int
        Conv layers per block, C (RDN: 8).
    growth : int
        Maps added by each layer, G (RDN: 64).

    Raises
    ------
    ValueError
        If a size is not a positive integer.

    Notes
    -----
    ``forward(x)``: ``(B, in_channels, D, H, W)`` to ``(B, base, D, H, W)``. The longest
    path holds ``1 + blocks * layers + 1`` 3x3x3 convs: :attr:`receptive_radius`.

    Examples
    --------
    >>> net = RDNFeatures(base=4, blocks=1, layers=2, growth=2)
    >>> net(torch.zeros(1, 1, 3, 4, 5)).shape, net.receptive_radius
    (torch.Size([1, 4, 3, 4, 5]), 4)
    """

    def __init__(
        self, *, in_channels: int = 1, base: int = 16, blocks: int = 3, layers: int = 3,
        growth: int = 16,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base", base), ("blocks", blocks),
                            ("layers", layers), ("growth", growth)):
            _positive(name, value)
        self.in_channels, self.base = in_channels, base
        self._radius = 2 + blocks * layers
        self.conv0 = _conv(in_channels, base, 3)
        self.blocks = nn.ModuleList(_DenseBlock(base, growth, layers) for _ in range(blocks))
        self.fusion = nn.Sequential(_conv(blocks * base, base, 1), _conv(base, base, 3))

    @property
    def receptive_radius(self) -> int:
        """Receptive-field radius in LR voxels (int)."""
        return self._radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` (see the class Notes).

        Parameters
        ----------
        x : (B, in_channels, D, H, W) floating torch.Tensor

        Returns
        -------
        (B, base, D, H, W) torch.Tensor

        Raises
        ------
        ValueError
            If ``x`` is not 5-D with ``in_channels`` channels.

        Examples
        --------
        >>> RDNFeatures(base=2, blocks=1, layers=1, growth=1)(torch.ones(1, 1, 2, 2, 2)).shape
        torch.Size([1, 2, 2, 2, 2])
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must be (B, {self.in_channels}, D, H, W), got shape {tuple(x.shape)}"
            )
        shallow = self.conv0(x)
        levels, features = [], shallow
        for block in self.blocks:
            features = block(features)
            levels.append(features)
        return shallow + self.fusion(torch.cat(levels, dim=1))


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class MetaUpscale3D(nn.Module):
    """Meta-upscale with a separable, offset- and scale-predicted filter (module docstring).

    Parameters
    ----------
    channels : int
        Feature channels C read on the LR grid.
    out_channels : int
        Output channels.
    taps : int
        LR voxels per axis the filter reads, even (4: ``floor(p) - 1 ... floor(p) + 2``, the
        support of a cubic kernel).
    hidden : int
        Width of the weight-prediction MLPs (Meta-SR: 256).

    Raises
    ------
    ValueError
        If a size is not a positive integer or ``taps`` is odd.

    Notes
    -----
    ``forward(features, positions, scale)``: ``features`` ``(B, C, n0, n1, n2)`` on the LR
    grid, ``positions`` one 1-D array per axis (LR voxel coordinates), ``scale`` the
    per-axis factors; returns ``(B, out_channels, len(p0), len(p1), len(p2))``. The axis
    MLPs take ``(delta_d, 1/s_d)``, the mixing MLP ``(1/s0, 1/s1, 1/s2)``. :attr:`radius`
    (``taps / 2``) is the filter's reach in LR voxels beyond ``floor(p)``.

    Examples
    --------
    >>> up = MetaUpscale3D(channels=2, out_channels=1, taps=2, hidden=4)
    >>> f = torch.rand(1, 2, 3, 3, 3)
    >>> up(f, [np.array([0.0, 0.5, 1.0])] * 3, (2.0, 2.0, 2.0)).shape
    torch.Size([1, 1, 3, 3, 3])
    """

    def __init__(self, *, channels: int, out_channels: int = 1, taps: int = 4,
                 hidden: int = 64) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("out_channels", out_channels),
                            ("taps", taps), ("hidden", hidden)):
            _positive(name, value)
        if taps % 2:
            raise ValueError(f"taps must be even (a window around the position), got {taps}")
        self.channels, self.out_channels, self.taps = channels, out_channels, taps
        self.axis_nets = nn.ModuleList(_mlp(2, hidden, channels * taps) for _ in range(3))
        self.mix_net = _mlp(3, hidden, out_channels * (channels + 1))
        with torch.no_grad():
            # Start every axis filter at linear interpolation between the two middle taps,
            # and the mix at zero (the residual model then starts at its cubic baseline).
            for net in self.axis_nets:
                net[2].weight.mul_(0.1)
                net[2].bias.zero_()
                net[2].bias.view(channels, taps)[:, taps // 2 - 1 : taps // 2 + 1] = 0.5
            nn.init.zeros_(self.mix_net[2].weight)
            nn.init.zeros_(self.mix_net[2].bias)

    @property
    def radius(self) -> int:
        """LR voxels the filter reaches beyond ``floor(p)`` (``taps / 2``, int)."""
        return self.taps // 2

    def axis_weights(self, axis: int, offsets: torch.Tensor, inverse_scale: float) -> torch.Tensor:
        """The 1-D filter weights of one axis for each output row.

        Parameters
        ----------
        axis : {0, 1, 2}
            Spatial axis.
        offsets : (n,) floating torch.Tensor
            Fractional offsets ``p - floor(p)`` in [0, 1).
        inverse_scale : float
            ``1 / s`` of the axis.

        Returns
        -------
        (C, n, taps) torch.Tensor
            Weights of taps ``floor(p) - taps/2 + 1 ... floor(p) + taps/2``.

        Raises
        ------
        IndexError
            If ``axis`` is not 0, 1 or 2.

        Examples
        --------
        >>> up = MetaUpscale3D(channels=3, taps=4, hidden=4)
        >>> up.axis_weights(0, torch.zeros(5), 0.5).shape
        torch.Size([3, 5, 4])
        """
        net = self.axis_nets[axis]
        inputs = torch.stack([offsets, torch.full_like(offsets, inverse_scale)], dim=1)
        weights = net(inputs.to(net[0].weight.dtype))
        return weights.view(-1, self.channels, self.taps).permute(1, 0, 2)

    def mix(self, scale: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel mix ``(out, C)`` and bias ``(out,)`` for the per-axis factors ``scale``.

        Parameters
        ----------
        scale : (3,) sequence of float
            Per-axis factors.

        Returns
        -------
        matrix : (out_channels, C) torch.Tensor
        bias : (out_channels,) torch.Tensor

        Examples
        --------
        >>> MetaUpscale3D(channels=3, hidden=4).mix((1.0, 1.0, 2.5))[0].abs().max().item()
        0.0
        """
        weight = self.mix_net[0].weight
        inverse = torch.tensor([1.0 / s for s in scale], dtype=weight.dtype, device=weight.device)
        values = self.mix_net(inverse)
        cut = self.out_channels * self.channels
        return values[:cut].view(self.out_channels, self.channels), values[cut:]

    def forward(
        self, features: torch.Tensor, positions: Sequence[np.ndarray], scale: Sequence[float]
    ) -> torch.Tensor:
        """Upscale LR ``features`` to the samples at ``positions`` (see the class Notes).

        Parameters
        ----------
        features : (B, C, n0, n1, n2) floating torch.Tensor
        positions : (3,) sequence of (n_out_d,) float64 ndarray
            LR voxel coordinates of the output samples per axis.
        scale : (3,) sequence of float
            Per-axis factors.

        Returns
        -------
        (B, out_channels, n_out_0, n_out_1, n_out_2) torch.Tensor

        Raises
        ------
        ValueError
            If ``features`` is not ``(B, C, n0, n1, n2)``.

        Examples
        --------
        >>> up = MetaUpscale3D(channels=1, hidden=2)
        >>> up(torch.ones(1, 1, 2, 2, 2), [np.zeros(1)] * 3, (1.0,) * 3).shape
        torch.Size([1, 1, 1, 1, 1])
        """
        if features.ndim != 5 or features.shape[1] != self.channels:
            raise ValueError(
                f"features must be (B, {self.channels}, n0, n1, n2), got {tuple(features.shape)}"
            )
        order = sorted(range(3), key=lambda d: positions[d].size / features.shape[2 + d])
        x = features
        for axis in order:
            x = self._filter_axis(x, axis, positions[axis], 1.0 / scale[axis])
        matrix, bias = self.mix(scale)
        return F.conv3d(x, matrix[:, :, None, None, None].to(x.dtype), bias.to(x.dtype))

    def _filter_axis(
        self, x: torch.Tensor, axis: int, grid: np.ndarray, inverse_scale: float
    ) -> torch.Tensor:
        base = np.floor(grid)
        offsets = torch.as_tensor(grid - base, dtype=torch.float32, device=x.device)
        weights = self.axis_weights(axis, offsets, inverse_scale).to(x.dtype)
        dim, length = 2 + axis, x.shape[2 + axis]
        shape = [1, self.channels, 1, 1, 1]
        shape[dim] = grid.size
        result = None
        for t in range(self.taps):
            # Clipped indices repeat the edge voxel, as the replicate-padded convs do.
            index = np.clip(base + (t - self.radius + 1), 0, length - 1).astype(np.int64)
            taken = x.index_select(dim, torch.as_tensor(index, device=x.device))
            tap = weights[:, :, t].reshape(shape)
            if result is None:
                result = taken * tap
            else:
                # In place: two output-sized maps live (the sum and one gathered tap), not four;
                # autograd keeps ``taken`` and ``tap``, which are never modified.
                result.addcmul_(taken, tap)
            del taken  # before the next gather allocates its map
        return result


class MetaSRGAN(nn.Module):
    """Arbitrary-scale 3-D SR generator: ``cubic(x) + MetaUpscale3D(RDNFeatures(x))``.

    Parameters
    ----------
    in_channels : int
        Channels of the volume (the output has as many: the residual needs it).
    base, blocks, layers, growth : int
        :class:`RDNFeatures` sizes.
    taps, hidden : int
        :class:`MetaUpscale3D` filter taps per axis (even) and MLP width.

    Raises
    ------
    ValueError
        If a size is invalid (see the parts).

    Notes
    -----
    ``forward(x, positions, *, scale=None)`` follows
    :class:`~volsr.models.interpolation.SeparableInterpolation`'s contract for 3 spatial
    axes, with each ``positions[d]`` evenly spaced and increasing (a tile of the output
    grid); the factor of axis ``d`` is ``1 / (p[1] - p[0])`` unless ``scale`` gives it.
    :attr:`halo` (LR voxels) makes tiles exact. See the module docstring for memory.

    Examples
    --------
    >>> from volsr.geometry import output_coordinates
    >>> model = MetaSRGAN(base=4, blocks=1, layers=1, growth=2, hidden=4)
    >>> x = torch.rand(1, 1, 4, 4, 4)
    >>> grid = [output_coordinates(4, 4), output_coordinates(4, 4), output_coordinates(4, 10)]
    >>> y = model(x, grid)
    >>> y.shape, model.halo
    (torch.Size([1, 1, 4, 4, 10]), 14)
    >>> torch.equal(y, SeparableInterpolation(method="cubic")(x, grid))  # untrained: cubic
    True
    """

    def __init__(
        self, *, in_channels: int = 1, base: int = 16, blocks: int = 3, layers: int = 3,
        growth: int = 16, taps: int = 4, hidden: int = 64,
    ) -> None:
        super().__init__()
        self.features = RDNFeatures(in_channels=in_channels, base=base, blocks=blocks,
                                    layers=layers, growth=growth)
        self.upscale = MetaUpscale3D(channels=base, out_channels=in_channels, taps=taps,
                                     hidden=hidden)
        self.interpolate = SeparableInterpolation(method="cubic")

    @property
    def halo(self) -> int:
        """LR voxels of context a tile needs: ``max(receptive + taps/2, cubic's 14)`` (int)."""
        reach = self.features.receptive_radius + self.upscale.radius
        return max(reach, INTERPOLATION_METHODS["cubic"])

    def forward(
        self, x: torch.Tensor, positions: Positions, *, scale: Sequence[float] | None = None
    ) -> torch.Tensor:
        """Upsample ``x`` at ``positions`` (see the class Notes).

        Parameters
        ----------
        x : (B, C, n0, n1, n2) floating torch.Tensor
            Low-resolution tile.
        positions : (3,) sequence of (n_out_d,) float64 ndarray or tensor
            Evenly spaced increasing grids, in voxels of ``x``.
        scale : (3,) sequence of float, optional
            Per-axis factors (default: from the grids' steps; needed for single-sample axes).

        Returns
        -------
        (B, C, n_out_0, n_out_1, n_out_2) torch.Tensor
            Same dtype and device as ``x``.

        Raises
        ------
        TypeError
            If ``x`` is not a floating-point tensor.
        ValueError
            If ``x`` is not 5-D, a grid is not evenly spaced and increasing, an axis has one
            sample and no ``scale``, or a factor is outside [1, 6].

        Examples
        --------
        >>> model = MetaSRGAN(base=2, blocks=1, layers=1, growth=1, hidden=2)
        >>> model(torch.rand(1, 1, 3, 3, 3), ([1.0], [0.0, 1.0], [0.25, 0.75]),
        ...       scale=(1, 1, 2)).shape
        torch.Size([1, 1, 1, 2, 2])
        """
        hr = self.interpolate(x, positions)  # checks x and the grids' form
        if x.ndim != 5:
            raise ValueError(f"x must be (B, C, n0, n1, n2), got shape {tuple(x.shape)}")
        grids = [_as_grid(p) for p in positions]
        factors = _factors(grids, scale)
        return hr + self.upscale(self.features(x), grids, factors)


def _as_grid(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _factors(grids: list[np.ndarray], scale: Sequence[float] | None) -> tuple[float, ...]:
    for axis, grid in enumerate(grids):
        steps = np.diff(grid)
        if steps.size and not (steps[0] > 0 and np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9)):
            raise ValueError(
                f"positions[{axis}] must be an evenly spaced increasing grid, got steps "
                f"{steps[:4].tolist()}..."
            )
    if scale is not None:
        factors = tuple(float(s) for s in scale)
        if len(factors) != 3:
            raise ValueError(f"scale needs 3 values, got {scale!r}")
    else:
        for axis, grid in enumerate(grids):
            if grid.size < 2:
                raise ValueError(
                    f"positions[{axis}] has a single sample: its factor is undefined, pass scale="
                )
        factors = tuple(grid_factor(grid) for grid in grids)
    low, high = FACTOR_LIMITS
    if not all(low - 1e-6 <= f <= high + 1e-6 for f in factors):
        raise ValueError(f"per-axis factors must lie in [{low}, {high}], got {factors}")
    return factors
