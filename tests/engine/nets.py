"""Tiny random 3-D CNNs with model cards, for the engine tests (lr and hr grids)."""

from __future__ import annotations

import torch
from torch import nn

from volsr.models import ModelCard
from volsr.models.interpolation import SeparableInterpolation


def _card(name: str, grid: str, halo: int, scaling: str = "none") -> ModelCard:
    return ModelCard(
        name=name, kind="network", grid=grid, halo=halo, scales="real", scale_range=(0.5, 16.0),
        modality="any", description="test network", input_scaling=scaling,
    )  # fmt: skip


def _convs(channels: int, width: int, layers: int, seed: int) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    parts: list[nn.Module] = []
    sizes = [channels] + [width] * (layers - 1) + [channels]
    for n, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        conv = nn.Conv3d(a, b, 3, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.3)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
        parts += [conv] + ([nn.ReLU()] if n < layers - 1 else [])
    return nn.Sequential(*parts)


class LRNet(nn.Module):
    """Convolutions on the LR grid (halo = layers), then linear interpolation (+1)."""

    def __init__(self, *, channels=1, layers=2, halo=None, seed=0, scaling="none"):
        super().__init__()
        self.body = _convs(channels, 6, layers, seed)
        self.up = SeparableInterpolation(method="linear")
        self.card = _card("test-lr", "lr", layers + 1 if halo is None else halo, scaling)

    def forward(self, x, positions):
        return self.up(x + self.body(x), positions)


class HRNet(nn.Module):
    """Linear interpolation onto the output grid, then convolutions there (halo in HR voxels)."""

    def __init__(self, *, channels=1, layers=2, seed=1):
        super().__init__()
        self.up = SeparableInterpolation(method="linear")
        self.body = _convs(channels, 6, layers, seed)
        self.card = _card("test-hr", "hr", layers)

    def forward(self, x, positions):
        y = self.up(x, positions)
        return y + self.body(y)


class Identity(nn.Module):
    """Returns its input (valid at scale 1, where positions are the voxel indices)."""

    card = ModelCard(
        name="test-identity", kind="network", grid="lr", halo=0, scales="integer",
        scale_range=(1.0, 1.0), modality="any", description="identity",
    )  # fmt: skip

    def forward(self, x, positions):
        return x.clone()
