"""mDCSRN: published size, residual form, exact tiling at the declared halo, critic, registration.

Independent expectations: the parameter count of the b4u4 k=16 generator written out layer by
layer (research notes, section 1.2: 409,856 conv + 1,792 batch-norm parameters), the cubic
B-spline baseline for the untrained residual model, and whole-volume outputs for tiles.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from volsr.geometry import input_window, output_coordinates
from volsr.models import get_card, list_models, registry
from volsr.models import weights as weights_module
from volsr.models.interpolation import SeparableInterpolation
from volsr.models.mdcsrn import MDCSRN, MDCSRNUpsampler, PatchDiscriminator3D
from volsr.models.table import register_network
from volsr.models.weights import WEIGHTS_DIR, save_weights
from volsr.resample import INTERPOLATION_METHODS

SMALL = {"blocks": 2, "units": 2, "growth": 4, "base": 8}


def _randomised(net: MDCSRN, seed: int) -> MDCSRN:
    """Random weights everywhere, including the zero-initialised reconstruction and biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    return net.eval()


def test_published_b4u4_parameter_count():
    conv0 = 27 * 1 * 32
    unit_inputs = [32, 48, 64, 80]  # 2k + j k maps before unit j
    units = sum(27 * c * 16 for c in unit_inputs)
    compressors = (128 + 224 + 320) * 32  # conv0 + 1, 2, 3 blocks of 96 maps
    reconstruction = 416 * 1
    conv = conv0 + 4 * units + compressors + reconstruction
    batch_norm = 4 * sum(2 * c for c in unit_inputs)
    assert (conv, batch_norm) == (409_856, 1_792)  # research notes, section 1.2
    count = sum(p.numel() for p in MDCSRN(norm="batch").parameters())
    assert count == conv + batch_norm
    # Default: no norm, conv biases on conv0, 16 units, 3 compressors and the reconstruction.
    biases = 32 + 16 * 16 + 3 * 32 + 1
    assert sum(p.numel() for p in MDCSRN().parameters()) == conv + biases
    assert MDCSRN().receptive_radius == 17
    assert MDCSRN(blocks=3, units=2).receptive_radius == 7


@pytest.mark.parametrize("dims", [2, 3])
def test_output_shapes(dims):
    spatial = (9, 10, 11)[:dims]
    net = MDCSRN(spatial_dims=dims, out_channels=2, **SMALL)
    assert net(torch.rand(2, 1, *spatial)).shape == (2, 2, *spatial)
    model = MDCSRNUpsampler(_randomised(MDCSRN(spatial_dims=dims, **SMALL), 0))
    lr = (5, 6, 7)[:dims]
    factors = (2.0, 1.0, 1.5)[:dims]
    out = tuple(math.floor(n * f + 0.5) for n, f in zip(lr, factors, strict=True))
    grid = [output_coordinates(n, m) for n, m in zip(lr, out, strict=True)]
    y = model(torch.rand(1, 1, *lr), grid)
    assert y.shape == (1, 1, *out) and y.dtype == torch.float32


def test_zero_reconstruction_gives_exactly_the_cubic_interpolation():
    net = _randomised(MDCSRN(**SMALL), 1)
    nn.init.zeros_(net.reconstruction.weight)
    nn.init.zeros_(net.reconstruction.bias)
    x = torch.rand(2, 1, 6, 5, 4, generator=torch.Generator().manual_seed(2))
    grid = [output_coordinates(6, 15), output_coordinates(5, 5), output_coordinates(4, 8)]
    expected = SeparableInterpolation(method="cubic")(x, grid)
    assert torch.equal(MDCSRNUpsampler(net)(x, grid), expected)
    # A fresh network starts there too (zero-initialised reconstruction).
    assert torch.equal(MDCSRNUpsampler(MDCSRN(**SMALL))(x, grid), expected)


def test_declared_halo_makes_a_published_size_tile_exact_and_is_tight():
    net = _randomised(MDCSRN(), 3)
    radius = net.receptive_radius
    volume = torch.rand(1, 1, 44, 10, 10, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = net(volume)[:, :, 20:24]
        tile = net(volume[:, :, 20 - radius : 24 + radius])[:, :, radius:-radius]
        short = net(volume[:, :, 21 - radius : 24 + radius])[:, :, radius - 1 : -radius]
    torch.testing.assert_close(tile, whole, rtol=1e-5, atol=1e-5)
    # One voxel less context changes the first output row: the halo is not overstated.
    assert (short[:, :, 0] - whole[:, :, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_tiles_in_every_axis_are_exact_for_every_norm(norm):
    net = _randomised(MDCSRN(norm=norm, **SMALL), 5)
    if norm == "batch":
        net.blocks[0].units[0][0].running_var.fill_(2.0)
    radius = net.receptive_radius
    volume = torch.rand(1, 1, 16, 15, 14, generator=torch.Generator().manual_seed(6))
    crop = (slice(None), slice(None)) + (slice(7 - radius, 9 + radius),) * 3
    with torch.no_grad():
        whole = net(volume)[..., 7:9, 7:9, 7:9]
        tile = net(volume[crop])[..., radius:-radius, radius:-radius, radius:-radius]
    torch.testing.assert_close(tile, whole, rtol=1e-5, atol=1e-5)


def test_upsampler_tiled_like_the_engine_equals_whole_volume():
    """The engine's "hr" rule: widen each tile by ``halo`` output voxels (clipped at the
    volume's edge), read the input window of the widened box plus the widest interpolation
    support, run, crop the widening."""
    model = MDCSRNUpsampler(_randomised(MDCSRN(**SMALL), 7))
    shape_in, shape_out, tile = (48, 6, 5), (96, 6, 10), (22, 6, 4)  # tiles do not divide
    x = torch.rand(1, 1, *shape_in, generator=torch.Generator().manual_seed(8))
    grids = [output_coordinates(n, m) for n, m in zip(shape_in, shape_out, strict=True)]
    support = max(INTERPOLATION_METHODS.values())
    with torch.no_grad():
        whole = model(x, grids)
        for region in itertools.product(*[
            [(a, min(a + t, n)) for a in range(0, n, t)] for n, t in zip(shape_out, tile, strict=True)
        ]):
            compute = [(max(0, a - model.halo), min(n, b + model.halo))
                       for (a, b), n in zip(region, shape_out, strict=True)]
            source = [input_window(a, b, n_in, n_out, halo=support)
                      for (a, b), n_in, n_out in zip(compute, shape_in, shape_out, strict=True)]
            block = x[(Ellipsis, *[slice(s, e) for s, e in source])]
            positions = [torch.from_numpy(g[a:b] - s)
                         for g, (a, b), (s, _) in zip(grids, compute, source, strict=True)]
            crop = [slice(a - c, b - c) for (a, b), (c, _) in zip(region, compute, strict=True)]
            tile_out = model(block, positions)[(Ellipsis, *crop)]
            expected = whole[(Ellipsis, *[slice(a, b) for a, b in region])]
            torch.testing.assert_close(tile_out, expected, rtol=1e-5, atol=1e-5)


def test_upsampler_rejects_bad_inputs():
    model = MDCSRNUpsampler(MDCSRN(**SMALL))
    x = torch.rand(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"positions\[1\] must be an evenly spaced"):
        model(x, [np.arange(4.0), np.array([0.0, 1.0, 3.0]), np.arange(4.0)])
    with pytest.raises(ValueError, match="one grid per spatial axis"):
        model(x, [np.arange(4.0)])
    with pytest.raises(TypeError, match="floating-point"):
        model(x.long(), [np.arange(4.0)] * 3)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        MDCSRNUpsampler(MDCSRN(out_channels=2, **SMALL))
    with pytest.raises(TypeError, match="network must be an MDCSRN"):
        MDCSRNUpsampler(nn.Identity())


def test_constructor_rejects_bad_options():
    with pytest.raises(ValueError, match=r"norm must be one of \['none', 'layer', 'batch'\]"):
        MDCSRN(norm="group")
    with pytest.raises(ValueError, match="scale must be None"):
        MDCSRN(scale=4)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        MDCSRN(spatial_dims=1)
    with pytest.raises(ValueError, match="blocks must be a positive integer, got 0"):
        MDCSRN(blocks=0)
    with pytest.raises(ValueError, match=r"x must be \(B, 1, \*spatial\)"):
        MDCSRN(**SMALL)(torch.rand(1, 2, 4, 4, 4))


def test_published_size_forward_backward_is_fast_on_cpu():
    net = MDCSRN()
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(9))
    started = time.perf_counter()
    net(x).sub(x).abs().mean().backward()
    assert time.perf_counter() - started < 5.0
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.reconstruction.weight.grad.abs().sum() > 0


def test_critic_scores_each_sample_alone():
    critic = PatchDiscriminator3D(base=8, levels=4).train()
    convs = [m for m in critic.modules() if isinstance(m, nn.Conv3d)]
    # SRGAN plan: 8 3x3x3 convs (4 with stride 2), then 1x1x1 convs 8*base -> 16*base -> 1.
    assert [m.stride[0] for m in convs[:8]] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert [m.out_channels for m in convs] == [8, 8, 16, 16, 32, 32, 64, 64, 128, 1]
    batch = torch.rand(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(10))
    scores = critic(batch)
    assert scores.shape == (3,)
    # Layer norm, not batch norm: a sample's score ignores the rest of the batch.
    torch.testing.assert_close(critic(batch[1:2]), scores[1:2], rtol=1e-5, atol=1e-6)
    scores.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters())
    with pytest.raises(ValueError, match="x must be"):
        critic(batch[0])
    with pytest.raises(ValueError, match="levels must be a positive integer"):
        PatchDiscriminator3D(levels=0)


def test_every_registered_mdcsrn_has_its_weights_file():
    for card in list_models():
        if card.name.startswith("mdcsrn"):
            assert card.weights is not None and (WEIGHTS_DIR / card.weights).is_file()
    with pytest.raises(FileNotFoundError, match="no shipped weights"):
        register_network("mdcsrn.missing", "mdcsrn", weights="mdcsrn_missing.safetensors", config={},
                        description="", scale_range=(1.0, 5.0))


def test_registered_weights_load_with_the_card_the_engine_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    net = _randomised(MDCSRN(**SMALL), 11)
    save_weights(net, tmp_path / "mdcsrn_test.safetensors", config=SMALL)
    card = register_network("mdcsrn.test", "mdcsrn", weights="mdcsrn_test.safetensors", config=SMALL,
                           description="test", scale_range=(1, 5))
    assert card == get_card("mdcsrn.test")
    assert (card.kind, card.grid, card.halo, card.scales, card.scale_range) == (
        "network", "hr", 5, "real", (1.0, 5.0)
    )
    assert (card.modality, card.input_scaling, card.weights) == (
        "mri", "p99.9", "mdcsrn_test.safetensors"
    )
    model = registry.create_model("mdcsrn.test")
    x = torch.rand(1, 1, 5, 4, 4)
    grid = [output_coordinates(5, 12), output_coordinates(4, 4), output_coordinates(4, 4)]
    with torch.no_grad():
        assert torch.equal(model(x, grid), MDCSRNUpsampler(net)(x, grid))
    with pytest.raises(ValueError, match="scale_range"):
        register_network("mdcsrn.bad", "mdcsrn", weights="mdcsrn_test.safetensors", config=SMALL,
                        description="", scale_range=(5, 1))
