"""Meta-SRGAN: cubic start, identity representable, exact tiling at its halo, memory, geometry.

Independent expectations: the cubic B-spline baseline for the untrained residual model; the
input itself for an identity filter; a whole-volume forward for tiles; the analytic grid of
a field-of-view-preserving upsampling (voxel size / s, first centre half a new voxel inside
the LR field of view); the allocation arithmetic of the module docstring for memory.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from volsr import io
from volsr.engine import EngineOptions, check_halo, upsample, upsample_to_store
from volsr.geometry import output_coordinates
from volsr.models import default_model_name, get_card, registry
from volsr.models import weights as weights_module
from volsr.models.interpolation import SeparableInterpolation
from volsr.models.meta_srgan import MetaSRGAN, MetaUpscale3D
from volsr.models.registry import ModelCard
from volsr.models.table import register_network
from volsr.models.weights import save_weights
from volsr.volume import Volume

SMALL = {"base": 4, "blocks": 1, "layers": 2, "growth": 3, "hidden": 8}


def _randomised(model: MetaSRGAN, seed: int) -> MetaSRGAN:
    """Random weights everywhere, including the zero-initialised mix layer."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def _with_card(model: MetaSRGAN, scale_range=(1.0, 6.0)) -> MetaSRGAN:
    model.card = ModelCard(name="meta_srgan.test", kind="network", grid="lr", halo=model.halo,
                           scales="real", scale_range=scale_range, modality="mri",
                           description="test")  # fmt: skip
    return model


def _grid(shape_in, scale):
    shape_out = tuple(math.floor(n * s + 0.5) for n, s in zip(shape_in, scale, strict=True))
    return [output_coordinates(n, m) for n, m in zip(shape_in, shape_out, strict=True)]


def test_untrained_model_is_exactly_cubic_at_anisotropic_and_isotropic_factors():
    model = MetaSRGAN(**SMALL).eval()
    x = torch.rand(2, 1, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    for scale in [(1.0, 1.0, 3.3), (2.5, 2.5, 2.5), (6.0, 1.0, 1.5)]:
        grid = _grid(x.shape[2:], scale)
        with torch.no_grad():
            assert torch.equal(model(x, grid), SeparableInterpolation(method="cubic")(x, grid))


def test_meta_upscale_at_factor_one_and_offset_zero_can_represent_identity():
    channels, taps = 3, 4
    up = MetaUpscale3D(channels=channels, out_channels=channels, taps=taps, hidden=5)
    with torch.no_grad():
        for net in up.axis_nets:  # every offset: weight 1 on tap floor(p), 0 elsewhere
            net[2].weight.zero_()
            net[2].bias.zero_()
            net[2].bias.view(channels, taps)[:, taps // 2 - 1] = 1.0
        up.mix_net[2].weight.zero_()
        up.mix_net[2].bias.zero_()
        up.mix_net[2].bias[: channels * channels] = torch.eye(channels).flatten()
    features = torch.randn(2, channels, 5, 4, 6, generator=torch.Generator().manual_seed(1))
    grid = [np.arange(n, dtype=np.float64) for n in features.shape[2:]]  # factor 1, offset 0
    with torch.no_grad():
        assert torch.equal(up(features, grid, (1.0, 1.0, 1.0)), features)


def test_declared_halo_is_receptive_radius_plus_filter_reach_and_at_least_cubic():
    assert MetaSRGAN(**SMALL).halo == 14  # 2 + 1 * 2 + 2 = 6 < cubic's 14
    big = MetaSRGAN(base=2, blocks=4, layers=3, growth=1, taps=6, hidden=2)
    assert big.halo == 2 + 4 * 3 + 3


@pytest.mark.parametrize(("scale", "tile"), [((1.0, 1.0, 2.5), (16, 5, 12)),
                                             ((1.5, 1.5, 1.5), (24, 8, 7)),
                                             # 25 outputs along k in tiles of 8: a last tile
                                             # of one voxel, widened by the planner
                                             ((1.0, 1.0, 2.5), (16, 5, 8))])
def test_engine_tiles_equal_a_whole_volume_pass(tmp_path, scale, tile):
    """Axis 0 (48 > 2 x halo 14 + a tile) has tiles cut inside the volume on both sides."""
    model = _with_card(_randomised(MetaSRGAN(**SMALL), 2))
    data = np.random.default_rng(3).random((48, 10, 9), dtype=np.float32) - np.float32(0.5)  # signed: no output floor
    grid = _grid(data.shape, scale)
    with torch.no_grad():
        whole = model(torch.from_numpy(data)[None, None], grid)[0, 0].numpy()
    volume = Volume(data, np.eye(4), ("i", "j", "k"))
    path = upsample_to_store(volume, tmp_path / "sr.zarr", scale=scale, model=model,
                             options=EngineOptions(chunks=tile, tile=tile, quiet=True))  # fmt: skip
    np.testing.assert_allclose(io.load(path).numpy(), whole, rtol=0, atol=2e-5)
    # The engine's halo self-check (a centre tile at exactly the declared halo) agrees.
    assert check_halo(model, scale=scale) < 2e-5


@pytest.mark.parametrize("scale", [(1.0, 1.0, 2.5), (1.5, 1.5, 1.5), (1.2, 1.0, 3.3)])
def test_engine_output_follows_the_geometry_contract(scale):
    model = _with_card(_randomised(MetaSRGAN(**SMALL), 4))
    spacing, origin = np.array([0.9, 1.1, 3.0]), np.array([-10.0, 5.0, 2.0])
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = np.diag(spacing), origin
    data = np.random.default_rng(5).random((7, 6, 5), dtype=np.float32) - np.float32(0.5)  # signed: no output floor
    out = upsample(Volume(data, affine, ("i", "j", "k")), scale=scale, model=model)
    shape = tuple(math.floor(n * s + 0.5) for n, s in zip(data.shape, scale))
    assert out.shape == shape and out.dtype == np.float32
    # Field of view kept: new voxel = field / n_out; first centre half a new voxel inside it.
    step = spacing * np.array(data.shape) / np.array(shape)
    np.testing.assert_allclose(np.diag(out.affine)[:3], step, rtol=1e-12)
    np.testing.assert_allclose(out.affine[:3, 3], origin - spacing / 2 + step / 2, atol=1e-12)
    with torch.no_grad():
        whole = model(torch.from_numpy(data)[None, None], _grid(data.shape, scale))[0, 0]
    np.testing.assert_allclose(out.numpy(), whole.numpy(), rtol=0, atol=2e-5)


def _peak_bytes(function) -> int:
    # tracemalloc does not see torch's CPU allocator; the profiler's memory events do.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        function()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")  # fmt: skip
    return max(itertools.accumulate(n for _, n in events))


def test_meta_upscale_memory_grows_as_a_few_feature_maps_on_the_output_grid():
    channels = 8
    up = MetaUpscale3D(channels=channels, out_channels=1, taps=4, hidden=16).eval()
    features = torch.rand(1, channels, 24, 24, 12)
    grid = _grid(features.shape[2:], (1.0, 1.0, 5.0))
    n_out = math.prod(len(g) for g in grid)
    with torch.no_grad():
        peak = _peak_bytes(lambda: up(features, grid, (1.0, 1.0, 5.0)))
    # Docstring claim: ~2 C n_out floats, plus the last axis's input (C n_out / 5 here), the
    # output and O(sum n_out_d) weights: (2.5 C + 1) n_out floats bounds it.
    bound = (2.5 * channels + 1) * n_out * 4 + 2**16
    naive = n_out * channels * 4**3 * 2 * 4  # per-voxel 4x4x4 filters and unfolded features
    assert peak <= bound < naive / 10, (peak, bound, naive)


def test_grids_must_be_even_and_single_samples_need_the_scale():
    model = MetaSRGAN(**SMALL).eval()
    x = torch.rand(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"positions\[0\] has a single sample"):
        model(x, ([1.0], np.arange(4.0), np.arange(4.0)))
    with torch.no_grad():
        one = model(x, ([1.0], np.arange(4.0), np.arange(4.0)), scale=(2.0, 1.0, 1.0))
    assert one.shape == (1, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="evenly spaced"):
        model(x, ([0.0, 0.5, 2.0], np.arange(4.0), np.arange(4.0)))
    with pytest.raises(ValueError, match=r"factors must lie in \[1.0, 6.0\]"):
        model(x, ([0.0, 0.1], np.arange(4.0), np.arange(4.0)))
    with pytest.raises(ValueError, match="taps must be even"):
        MetaUpscale3D(channels=2, taps=3)


def test_registration_card_and_default_choice_inside_the_card_range(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", tmp_path)
    # Without the shipped meta_srgan.* weights: this test's model is the only one.
    monkeypatch.setattr(registry, "_REGISTRY", {k: v for k, v in registry._REGISTRY.items()
                                                if not k.startswith("meta_srgan.")})
    net = _randomised(MetaSRGAN(**SMALL), 6)
    save_weights(net, tmp_path / "meta_srgan_test.safetensors", config=SMALL)
    card = register_network("meta_srgan.test", "meta_srgan", weights="meta_srgan_test.safetensors",
                               config=SMALL, description="test", scale_range=(1, 6))
    assert card == get_card("meta_srgan.test")
    assert (card.grid, card.halo, card.scales, card.scale_range, card.input_scaling) == (
        "lr", 14, "real", (1.0, 6.0), "p99.9")
    model = registry.create_model("meta_srgan.test")
    x = torch.rand(1, 1, 5, 4, 4)
    grid = _grid((5, 4, 4), (2.5, 1.0, 1.0))
    with torch.no_grad():
        assert torch.equal(model(x, grid), net(x, grid))
    # An arbitrary-scale network is the default for any factors inside its card's range.
    for scale in ((1.0, 1.0, 2.5), (1.0, 1.0, 2.0), (2.0, 2.0, 2.0), (1.0, 6.0, 1.0)):
        assert default_model_name(spectral=False, scale=scale) == "meta_srgan.test"
    assert default_model_name(spectral=False, scale=(1.0, 1.0, 7.5)) != "meta_srgan.test"
    with pytest.raises(ValueError, match="scale_range"):
        register_network("meta_srgan.bad", "meta_srgan", weights="meta_srgan_test.safetensors",
                            config=SMALL, description="", scale_range=(1, 8))


def test_factors_outside_the_trained_range_are_refused_unless_forced():
    model = _with_card(_randomised(MetaSRGAN(**SMALL), 7), scale_range=(1.0, 4.0))
    volume = Volume(np.random.default_rng(8).random((6, 6, 4), dtype=np.float32), np.eye(4),
                    ("i", "j", "k"))
    with pytest.raises(ValueError, match=r"supports per-axis scales in \[1.0, 4.0\].*--force"):
        upsample(volume, scale=(1, 1, 5), model=model)
    with pytest.warns(UserWarning, match="running anyway"):
        out = upsample(volume, scale=(1, 1, 5), model=model, options=EngineOptions(force=True))
    assert out.shape == (6, 6, 20)


def test_cli_force_runs_outside_the_range_with_a_warning(tmp_path, capsys):
    from volsr.cli import main

    data = np.random.default_rng(9).random((4, 4, 2), dtype=np.float32)
    source = tmp_path / "in.nii.gz"
    io.save(Volume(data, np.eye(4), ("i", "j", "k")), source)
    args = ["upsample", str(source), str(tmp_path / "out.nii.gz"), "--scale", "1,1,20",
            "--model", "linear", "--quiet"]
    assert main(args) != 0
    assert "supports per-axis scales in [0.5, 16.0]" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="running anyway"):
        assert main([*args, "--force"]) == 0
    assert io.load(tmp_path / "out.nii.gz").shape == (4, 4, 40)
