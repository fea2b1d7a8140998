"""Tests of the band-count agnostic 1D-2D attention network (volsr/models/attn1d2d.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from volsr.geometry import input_window, output_coordinates
from volsr.models import get_card
from volsr.models.attn1d2d import Attn1D2D, icnr_, implied_scale
from volsr.models.interpolation import SeparableInterpolation


def _net(scale: int = 2, *, residual: float = 1.0, seed: int = 0) -> Attn1D2D:
    torch.manual_seed(seed)
    return Attn1D2D(scale=scale, features=4, stages=2, init_residual_scale=residual).eval()


def _grid(h: int, w: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    return output_coordinates(h, h * s), output_coordinates(w, w * s)


@pytest.mark.parametrize("bands", [31, 103, 162, 224])
def test_any_band_count_runs_with_the_same_weights(bands):
    net = _net(4)
    x = torch.rand(1, bands, 6, 5)
    with torch.no_grad():
        y = net(x, _grid(6, 5, 4))
    assert y.shape == (1, bands, 24, 20)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("bands", [31, 103, 162, 224])
def test_untrained_model_is_exactly_bicubic(bands):
    """Zero residual scale: output = Keys bicubic (registry 'bicubic') for any band count."""
    net = Attn1D2D(scale=2, features=4, stages=1)
    x = torch.rand(2, bands, 5, 4)
    grid = _grid(5, 4, 2)
    with torch.no_grad():
        assert torch.equal(net(x, grid), SeparableInterpolation(method="bicubic")(x, grid))


def test_band_window_gives_the_whole_cube_result_away_from_its_ends():
    """An output band depends on spectral_radius bands per side only, never on the count."""
    net = _net(2)
    x = torch.rand(1, 103, 6, 6)
    grid = _grid(6, 6, 2)
    lo, hi, r = 20, 70, net.spectral_radius
    with torch.no_grad():
        whole = net(x, grid)
        window = net(x[:, lo:hi], grid)
    torch.testing.assert_close(window[:, r : hi - lo - r], whole[:, lo + r : hi - r],
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(window[:, :1], whole[:, lo : lo + 1], atol=1e-5)


def test_constant_spectrum_region_is_preserved_by_the_bicubic_path():
    spectrum = torch.linspace(0.2, 0.9, 162) ** 2
    x = spectrum.view(1, 162, 1, 1).expand(1, 162, 7, 6).contiguous()
    with torch.no_grad():
        y = Attn1D2D(scale=4, features=4, stages=1)(x, _grid(7, 6, 4))
    expected = spectrum.view(1, 162, 1, 1).expand_as(y)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=0)


def test_halo_makes_tiles_equal_to_the_whole_cube():
    """The engine's lr-grid tiling: input_window(..., halo=card halo) reproduces the whole."""
    net, s, n = _net(2), 2, 36
    x = torch.rand(1, 9, n, n, dtype=torch.float64)
    net = net.double()
    full = _grid(n, n, s)
    with torch.no_grad():
        whole = net(x, full)
        for halo, equal in ((net.halo, True), (net.halo - 2, False)):
            a, b = input_window(30, 42, n, n * s, halo=halo)
            c, d = input_window(20, 50, n, n * s, halo=halo)
            tile = net(x[:, :, a:b, c:d], (full[0][30:42] - a, full[1][20:50] - c))
            same = torch.allclose(tile, whole[:, :, 30:42, 20:50], atol=1e-10)
            assert same == equal, (halo, equal)
    assert net.halo == net.receptive_radius == 1 + 3 * 2 + 1


def test_icnr_initial_residual_is_constant_within_each_subpixel_block():
    net = _net(4)
    with torch.no_grad():
        res = net.residual(torch.rand(1, 5, 6, 7))
    blocks = res.view(1, 5, 6, 4, 7, 4)
    spread = blocks.amax(dim=(3, 5)) - blocks.amin(dim=(3, 5))
    assert float(spread.max()) < 1e-6
    assert float(res.abs().max()) > 1e-4  # not trivially zero


def test_icnr_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of scale"):
        icnr_(torch.empty(5, 2, 3, 3), scale=2)


def test_gradients_reach_the_residual_scale_at_zero_init():
    net = Attn1D2D(scale=2, features=4, stages=1)
    x, target = torch.rand(1, 8, 5, 5), torch.rand(1, 8, 10, 10)
    loss = (net(x, _grid(5, 5, 2)) - target).abs().mean()
    loss.backward()
    assert float(net.residual_scale.grad.abs()) > 0


def test_implied_scale_matches_geometry():
    s, idx = implied_scale(output_coordinates(5, 20)[3:9], n_in=5, default=2)
    assert s == 4 and idx.tolist() == list(range(3, 9))
    assert implied_scale([0.25], n_in=3, default=2)[1].tolist() == [1]


@pytest.mark.parametrize(
    ("positions", "match"),
    [([0.0, 0.3], "integer-factor grid"), ([0.1, 0.6], "not outputs"), ([4.75, 5.25], "not outputs")],
)
def test_positions_off_the_grid_raise(positions, match):
    with pytest.raises(ValueError, match=match):
        implied_scale(positions, n_in=5, default=2)


def test_forward_rejects_another_factor_and_bad_input():
    net = _net(2)
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="imply factor 4"):
        net(x, _grid(4, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.ones(1, 3, 4, 4, dtype=torch.int64), _grid(4, 4, 2))
    with pytest.raises(ValueError, match="scale must be one of"):
        Attn1D2D(scale=5)
    with pytest.raises(ValueError, match="attention_kernel must be odd"):
        Attn1D2D(attention_kernel=4)


@pytest.mark.parametrize("name", ["attn1d2d_x2", "attn1d2d_x4"])
def test_shipped_input_peak_is_the_median_lr_peak_of_the_training_cubes(name):
    # The sidecar's input_peak must be what volsr.data.hsi.lr_peak gives on the cubes its
    # training config names (the export computes it so;
    # the two shipped sidecars got it after training, from the same function).
    import json

    from volsr.data.hsi import lr_peak
    from volsr.models.weights import WEIGHTS_DIR
    from volsr.train.cubes import resolve_cubes

    sidecar = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    metadata = sidecar["metadata"]  # a soup (volsr.train.soup) records each source's config
    configs = ([entry["training_config"] for entry in metadata["soup_of"]] if "soup_of" in metadata
               else [metadata["training_config"]])
    scale = sidecar["config"]["scale"]
    for data in (config["data"] for config in configs):
        specs = resolve_cubes(data["cubes"])
        if not all(Path(spec.split(":")[0]).is_file() for spec in specs):
            pytest.skip("training cubes not available")
        expected = lr_peak(specs, scale=scale, degradation=data["degradation"])
        assert sidecar["card"]["input_peak"] == pytest.approx(expected, rel=1e-6)
        assert get_card(f"attn1d2d.x{scale}").input_peak == pytest.approx(expected, rel=1e-6)
