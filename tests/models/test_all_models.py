"""Every registered model against the engine's forward contract; baselines against references.

References: ``scipy.ndimage.map_coordinates`` (orders 1 and 3, ``mode="reflect"``) for linear
and cubic B-spline, ``np.repeat`` for nearest at integer scales, Pillow's ``LANCZOS`` resize
(Lanczos-3, normalised weights, pixel-centre convention) for Lanczos.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from PIL import Image

from volsr.geometry import output_coordinates, resampled_shape
from volsr.models import ModelCard, create_model, get_card, list_models, register_model
from volsr.models.interpolation import SCALE_RANGE, SeparableInterpolation
from volsr.resample import INTERPOLATION_METHODS

BASELINES = ("nearest", "linear", "cubic", "lanczos")
MODEL_NAMES = [card.name for card in list_models() if not card.name.startswith("file:")]
SCALES = (2.0, 1.5, (1.0, 1.0, 3.3), 4.0)
SCALE_IDS = ["x2", "x1.5", "1x1x3.3", "x4"]


def _skip_unless_supported(name: str, scale, spatial_dims: int) -> None:
    """Skip the combinations a model's card rules out (its scales, its data)."""
    card = get_card(name)
    factors = scale if isinstance(scale, tuple) else (scale,) * spatial_dims
    low, high = card.scale_range
    if not all(low <= f <= high for f in factors[-spatial_dims:]):
        pytest.skip(f"{name} supports scales in [{low}, {high}]")
    if card.scales == "integer" and any(f != int(f) for f in factors):
        pytest.skip(f"{name} supports integer scales only")
    wanted = {"hsi": 2, "mri": 3}.get(card.modality)
    if wanted is not None and wanted != spatial_dims:
        pytest.skip(f"{name} ({card.modality}) runs on {wanted} spatial axes")


def _grid(shape: tuple[int, ...], scale) -> tuple[tuple[int, ...], tuple[np.ndarray, ...]]:
    factors = scale if isinstance(scale, tuple) else (scale,) * len(shape)
    out = resampled_shape(shape, factors[-len(shape):])
    return out, tuple(output_coordinates(n, m) for n, m in zip(shape, out, strict=True))


def _run(name: str, x: torch.Tensor, positions) -> torch.Tensor:
    with torch.no_grad():
        return create_model(name)(x, positions)


def test_baselines_are_registered_with_their_cards():
    assert set(BASELINES) <= set(MODEL_NAMES)
    for name in BASELINES:
        card = get_card(name)
        assert (card.kind, card.grid, card.scales, card.modality) == (
            "interpolation", "lr", "real", "any"
        )
        assert card.halo == INTERPOLATION_METHODS[name]
        assert card.scale_range == SCALE_RANGE
        assert create_model(name).card is card


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("scale", SCALES, ids=SCALE_IDS)
def test_forward_shape_3d(name, scale):
    _skip_unless_supported(name, scale, 3)
    x = torch.rand(1, 1, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    out_shape, positions = _grid((5, 6, 7), scale)
    factors = scale if isinstance(scale, tuple) else (scale,) * 3
    # Round half up, written out independently of geometry.resampled_shape.
    expected = tuple(math.floor(n * f + 0.5) for n, f in zip((5, 6, 7), factors, strict=True))
    assert out_shape == expected
    y = _run(name, x, positions)
    assert tuple(y.shape) == (1, 1, *expected)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("scale", SCALES, ids=SCALE_IDS)
def test_forward_2d_with_bands_resamples_each_band_alone(name, scale):
    _skip_unless_supported(name, scale, 2)
    x = torch.rand(1, 4, 6, 7, generator=torch.Generator().manual_seed(1))
    out_shape, positions = _grid((6, 7), scale)
    y = _run(name, x, positions)
    assert tuple(y.shape) == (1, 4, *out_shape)
    if get_card(name).kind != "interpolation":
        return  # spectral networks mix bands on purpose
    for band in range(4):
        alone = _run(name, x[:, band : band + 1], positions)
        torch.testing.assert_close(y[:, band : band + 1], alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_reaches_the_input(name):
    card = get_card(name)
    shape = (5, 6, 7) if card.modality != "hsi" else (6, 7)
    scale = 1.5 if card.scales == "real" else card.scale_range[0]
    channels = 1 if card.modality != "hsi" else 4
    x = torch.rand(1, channels, *shape, generator=torch.Generator().manual_seed(2),
                   requires_grad=True)
    _, positions = _grid(shape, scale)
    y = create_model(name)(x, positions)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if name in BASELINES:
        # Rows of each separable map sum to one, so d(sum y)/dx sums to the output size.
        assert x.grad.sum().item() == pytest.approx(y.numel(), rel=1e-4)


@pytest.mark.parametrize("name", BASELINES)
def test_constant_input_gives_constant_output(name):
    x = torch.full((1, 2, 5, 6, 7), 3.7)
    _, positions = _grid((5, 6, 7), (2.0, 1.5, 3.3))
    y = _run(name, x, positions)
    torch.testing.assert_close(y, torch.full_like(y, 3.7), rtol=0, atol=1e-5)


def test_nearest_at_integer_scale_equals_repeat():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6, 7)).astype(np.float32)
    factors = (2, 3, 1)
    _, positions = _grid((5, 6, 7), tuple(float(f) for f in factors))
    y = _run("nearest", torch.from_numpy(x)[None, None], positions)[0, 0].numpy()
    expected = x
    for axis, factor in enumerate(factors):
        expected = np.repeat(expected, factor, axis=axis)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize(("name", "order"), [("linear", 1), ("cubic", 3)])
@pytest.mark.parametrize("scale", SCALES, ids=SCALE_IDS)
def test_linear_and_cubic_match_scipy_map_coordinates(name, order, scale):
    rng = np.random.default_rng(4)
    x = rng.random((5, 6, 7)).astype(np.float32)
    _, positions = _grid((5, 6, 7), scale)
    y = _run(name, torch.from_numpy(x)[None, None], positions)[0, 0].numpy()
    coords = np.stack(np.meshgrid(*positions, indexing="ij"))
    expected = ndi.map_coordinates(x.astype(np.float64), coords, order=order, mode="reflect")
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_lanczos_reproduces_a_linear_ramp_in_the_interior():
    n = 30
    ramp = np.add.outer(2.0 * np.arange(n), -0.5 * np.arange(n)).astype(np.float32)
    _, positions = _grid((n, n), (2.5, 1.5))
    y = _run("lanczos", torch.from_numpy(ramp)[None, None], positions)[0, 0].numpy()
    expected = np.add.outer(2.0 * positions[0], -0.5 * positions[1])
    inner = np.ix_(*[(p > 3) & (p < n - 4) for p in positions])
    # Normalised Lanczos-3 is not exactly linear-preserving: its bias peaks at ~0.0198
    # voxel (fractional offset 0.25), the same as Pillow's; 0.02 x |slope| per axis bounds it.
    np.testing.assert_allclose(y[inner], expected[inner], rtol=0, atol=0.02 * 2.5 + 1e-4)


def test_lanczos_matches_pillow_in_the_interior():
    rng = np.random.default_rng(5)
    x = rng.random((20, 24)).astype(np.float32)
    out_shape, positions = _grid((20, 24), 2.0)
    y = _run("lanczos", torch.from_numpy(x)[None, None], positions)[0, 0].numpy()
    resized = Image.fromarray(x, mode="F").resize(out_shape[::-1], Image.Resampling.LANCZOS)
    expected = np.asarray(resized)
    # Pillow truncates the kernel at the border instead of reflecting: compare the interior.
    inner = np.ix_(*[(p > 3) & (p < n - 4) for p, n in zip(positions, (20, 24), strict=True)])
    np.testing.assert_allclose(y[inner], expected[inner], rtol=0, atol=1e-5)


def test_bicubic_matches_pillow_bicubic_in_the_interior():
    """Pillow's BICUBIC is Keys' kernel with a = -0.5, MATLAB imresize's 'bicubic'."""
    rng = np.random.default_rng(7)
    x = rng.random((18, 22)).astype(np.float32)
    out_shape, positions = _grid((18, 22), 3.0)
    y = _run("bicubic", torch.from_numpy(x)[None, None], positions)[0, 0].numpy()
    resized = Image.fromarray(x, mode="F").resize(out_shape[::-1], Image.Resampling.BICUBIC)
    expected = np.asarray(resized)
    inner = np.ix_(*[(p > 2) & (p < n - 3) for p, n in zip(positions, (18, 22), strict=True)])
    np.testing.assert_allclose(y[inner], expected[inner], rtol=0, atol=1e-5)


def test_positions_may_be_tensors_and_tiles_read_relative_coordinates():
    x = torch.rand(1, 1, 12, 5, generator=torch.Generator().manual_seed(6))
    full = output_coordinates(12, 30)
    whole = _run("linear", x, (full, output_coordinates(5, 5)))
    tile = _run("linear", x[:, :, 4:9], (torch.from_numpy(full[12:18] - 4), np.arange(5.0)))
    torch.testing.assert_close(tile, whole[:, :, 12:18], rtol=0, atol=1e-6)


def test_forward_rejects_bad_inputs():
    model = SeparableInterpolation(method="linear")
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(1, 1, 4, 4, dtype=torch.int64), ([0.0], [0.0]))
    with pytest.raises(ValueError, match="2 or 3 spatial axes"):
        model(torch.ones(1, 4, 4), ([0.0],))
    with pytest.raises(ValueError, match="one array per spatial axis"):
        model(torch.ones(1, 1, 4, 4), ([0.0],))
    with pytest.raises(ValueError, match=r"positions\[1\]"):
        model(torch.ones(1, 1, 4, 4), ([0.0], [np.nan]))
    with pytest.raises(ValueError, match="method must be one of"):
        SeparableInterpolation(method="keys")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="did you mean cubic"):
        create_model("cubc")


def test_duplicate_registration_is_refused():
    card = get_card("linear")
    with pytest.raises(ValueError, match="'linear' is already registered"):
        register_model(ModelCard(**card.__dict__))(lambda: SeparableInterpolation(method="linear"))
    # Weights files other tests of this process ran (``file:<path>``) stay registered.
    assert [c.name for c in list_models() if not c.name.startswith("file:")] == MODEL_NAMES
