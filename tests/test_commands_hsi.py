"""``volsr upsample`` on spectral cubes: default model per scale, wavelengths kept, out of core.

The shipped 1D-2D attention network is stood in for by an untrained :class:`Attn1D2D` with a
non-zero residual, registered (for one test at a time) under ``attn1d2d.x4`` with the card
:func:`volsr.models.table.register_network` gives shipped weights. Its expected output is
an independent whole-cube forward pass on the cube divided by its maximum (the training
normalisation, :func:`volsr.data.hsi.load_cube`), times that maximum.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.io
import torch

from volsr import io
from volsr.cli import main
from volsr.engine import EngineOptions, upsample, upsample_to_store
from volsr.engine.manifest import finished_header
from volsr.engine.normalise import input_scale
from volsr.geometry import output_coordinates
from volsr.models import ModelCard, default_model_name, registry
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.ensemble import SelfEnsemble
from volsr.models.registry import SHIPPED_OUTPUT_FLOOR
from volsr.volume import Volume

WAVELENGTHS = np.linspace(400.0, 700.0, 31)


@pytest.fixture(scope="module")
def network() -> Attn1D2D:
    net = Attn1D2D(scale=4, features=4, stages=1, init_residual_scale=0.5)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # a residual that is far from zero, so the network is visible
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        net.residual_scale.fill_(0.5)
    return net.eval()


@pytest.fixture
def shipped_x4(network: Attn1D2D, monkeypatch: pytest.MonkeyPatch) -> Attn1D2D:
    """``attn1d2d.x4`` registered with the shipped-weights card, removed after the test."""
    card = ModelCard(
        name="attn1d2d.x4", kind="network", grid="lr", halo=network.halo, scales="integer",
        scale_range=(4.0, 4.0), modality="hsi", description="test stand-in",
        input_scaling="max", output_floor=SHIPPED_OUTPUT_FLOOR,
    )  # fmt: skip
    monkeypatch.setitem(registry._REGISTRY, card.name, (card, lambda: copy.deepcopy(network)))
    return network


def _cube(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth positive spectra times a random texture, in raw units (max ~ 5000)."""
    rng = np.random.default_rng(seed)
    spectrum = 1000.0 + 600.0 * np.sin(np.linspace(0, 3, shape[2]))
    texture = 1.0 + 0.5 * rng.random(shape[:2])
    return (texture[:, :, None] * spectrum * (1 + 0.05 * rng.random(shape))).astype(np.float32)


@torch.no_grad()
def _whole_cube(net: Attn1D2D, cube: np.ndarray) -> np.ndarray:
    peak = float(cube.max())
    h, w, _ = cube.shape
    x = torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 0, 1)) / peak)[None]
    grid = (output_coordinates(h, 4 * h), output_coordinates(w, 4 * w))
    return _floored(net(x, grid)[0].numpy().transpose(1, 2, 0), peak)


def _floored(scaled: np.ndarray, divisor: float) -> np.ndarray:
    """Network outputs (scaled units) as the engine returns them for a positive cube: times
    the divisor, clamped below at -2 % of it (the engine's undershoot limit)."""
    return np.maximum(scaled, SHIPPED_OUTPUT_FLOOR) * divisor


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 0, err
    return err


def test_default_model_is_the_shipped_network_for_its_scale_only(shipped_x4) -> None:
    assert default_model_name(spectral=True, scale=(4, 4)) == "attn1d2d.x4"
    assert default_model_name(spectral=True, scale=4.0) == "attn1d2d.x4"
    assert default_model_name(spectral=True, scale=(2, 2)) == "attn1d2d.x2"  # shipped weights
    for other in ((3, 3), (3.5, 3.5), (4, 2)):
        assert default_model_name(spectral=True, scale=other) == "bicubic"
    assert default_model_name(spectral=False, scale=(4, 4, 4)) != "attn1d2d.x4"


def test_mat_cube_at_x4_runs_the_shipped_network_and_keeps_wavelengths(
    tmp_path: Path, shipped_x4: Attn1D2D, capsys: pytest.CaptureFixture[str]
) -> None:
    cube = _cube((10, 9, 31))
    scipy.io.savemat(tmp_path / "cube.mat", {"cube": cube, "wavelengths": WAVELENGTHS[:, None]})
    err = _run(["upsample", f"{tmp_path / 'cube.mat'}:cube", f"{tmp_path / 'sr.mat'}:sr",
                "--scale", "4"], capsys)  # fmt: skip
    assert "model: attn1d2d.x4" in err and "no shipped" not in err
    saved = scipy.io.loadmat(tmp_path / "sr.mat")
    np.testing.assert_allclose(saved["sr"], _whole_cube(shipped_x4, cube), rtol=2e-5, atol=0.05)
    np.testing.assert_allclose(saved["wavelengths"].ravel(), WAVELENGTHS)
    result = io.load(f"{tmp_path / 'sr.mat'}:sr")
    assert result.axes == ("i", "j", "band") and result.shape == (40, 36, 31)
    np.testing.assert_allclose(result.wavelengths, WAVELENGTHS)


def test_the_card_peak_and_self_ensemble_reach_the_cli(
    tmp_path: Path, network: Attn1D2D, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The shipped cards map an input's maximum to the training LR peak and average over
    # the 8 flips/swaps; expected: that mean, computed here on the whole cube.
    card = ModelCard(
        name="attn1d2d.x4", kind="network", grid="lr", halo=network.halo, scales="integer",
        scale_range=(4.0, 4.0), modality="hsi", description="test stand-in",
        input_scaling="max", input_peak=0.75, self_ensemble=True, output_floor=SHIPPED_OUTPUT_FLOOR,
    )  # fmt: skip
    monkeypatch.setitem(registry._REGISTRY, card.name, (card, lambda: copy.deepcopy(network)))
    cube = _cube((9, 8, 12))
    scipy.io.savemat(tmp_path / "cube.mat", {"cube": cube})
    divisor = float(cube.max()) / 0.75
    x = torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 0, 1)) / divisor)[None]
    grid = (output_coordinates(9, 36), output_coordinates(8, 32))
    with torch.no_grad():
        expected = {True: SelfEnsemble(network, (4, 4))(x, grid), False: network(x, grid)}
    for ensemble in (True, False):
        flag = [] if ensemble else ["--no-self-ensemble"]
        err = _run(["upsample", f"{tmp_path / 'cube.mat'}:cube", f"{tmp_path / 'sr.mat'}:sr",
                    "--scale", "4", "--overwrite", *flag], capsys)  # fmt: skip
        assert ("self-ensemble: the mean over 8 flips" in err) == ensemble
        want = _floored(expected[ensemble][0].numpy().transpose(1, 2, 0), divisor)
        np.testing.assert_allclose(scipy.io.loadmat(tmp_path / "sr.mat")["sr"], want, rtol=2e-5, atol=0.05)


def test_scale_without_a_shipped_network_falls_back_to_bicubic_with_a_note(
    tmp_path: Path, shipped_x4: Attn1D2D, capsys: pytest.CaptureFixture[str]
) -> None:
    # Constant spectrum everywhere: any interpolation must give it back exactly.
    cube = np.broadcast_to(np.linspace(10.0, 40.0, 31, dtype=np.float32), (8, 7, 31)).copy()
    scipy.io.savemat(tmp_path / "c.mat", {"c": cube, "wavelengths": WAVELENGTHS})
    err = _run(["upsample", f"{tmp_path / 'c.mat'}:c", str(tmp_path / "sr.zarr"),
                "--scale", "3"], capsys)  # fmt: skip (x2 and x4 have shipped networks)
    assert "model: bicubic" in err
    assert "no shipped hyperspectral network for scale 3x3: using bicubic" in err
    result = io.load(tmp_path / "sr.zarr")
    assert result.shape == (24, 21, 31)
    np.testing.assert_allclose(result.numpy(), np.broadcast_to(cube[:1, :1], (24, 21, 31)), rtol=1e-6)
    np.testing.assert_allclose(result.wavelengths, WAVELENGTHS)


def _hippo_header() -> Path:
    spec = importlib.util.find_spec("napari_hippo")
    if spec is None or spec.origin is None:
        pytest.skip("napari-hippo is not installed (its testdata holds the ENVI cube)")
    header = Path(spec.origin).parent / "testdata" / "image.hdr"
    if not header.is_file():
        pytest.skip(f"napari-hippo's ENVI test cube is missing: {header}")
    return header


@pytest.mark.parametrize("suffix", [".zarr", ".hdr"])
def test_envi_cube_to_zarr_and_envi_keeps_wavelengths_and_fwhm(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    header = _hippo_header()
    source = io.load(str(header))  # 38 lines x 23 samples x 450 bands (Specim Fenix)
    out = tmp_path / f"sr{suffix}"
    err = _run(["upsample", str(header), str(out), "--scale", "2"], capsys)
    assert f"model: {default_model_name(spectral=True, scale=(2, 2))}" in err
    result = io.load(str(out))
    assert result.axes == ("i", "j", "band") and result.shape == (76, 46, 450)
    np.testing.assert_allclose(result.wavelengths, source.wavelengths, rtol=1e-6)
    np.testing.assert_allclose(result.fwhm, source.fwhm, rtol=1e-6)
    np.testing.assert_allclose(result.spacing, [0.5, 0.5])
    if "bicubic" in err:  # the in-memory engine path on the whole cube gives the same numbers
        expected = upsample(source, scale=2, model="bicubic").numpy()
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-3)


def test_zarr_cube_runs_out_of_core_tile_by_tile(tmp_path: Path, network: Attn1D2D) -> None:
    cube = _cube((32, 28, 31), seed=3)
    stored = tmp_path / "cube.zarr"
    # Chunks over rows x cols x all bands, as a cube too large for memory would be stored.
    io.save(Volume(cube, np.eye(4), ("i", "j", "band"), wavelengths=WAVELENGTHS), stored,
            chunks=(8, 8, 31))  # fmt: skip
    net = copy.deepcopy(network)
    net.card = ModelCard(
        name="attn1d2d.test", kind="network", grid="lr", halo=network.halo, scales="integer",
        scale_range=(4.0, 4.0), modality="hsi", description="", input_scaling="max",
        output_floor=SHIPPED_OUTPUT_FLOOR,
    )  # fmt: skip
    out = tmp_path / "sr.zarr"
    upsample_to_store(stored, out, scale=4, model=net,
                      options=EngineOptions(chunks=(32, 32), tile=(32, 32), quiet=True))
    options = finished_header(out)["options"]
    assert options["plan"]["tile"] == [32, 32] and options["tasks"] == 16
    result = io.load(out)
    assert result.shape == (128, 112, 31)
    np.testing.assert_allclose(result.wavelengths, WAVELENGTHS)
    np.testing.assert_allclose(result.numpy(), _whole_cube(network, cube), rtol=2e-5, atol=0.05)
    # A small memory budget alone makes the engine pick small tiles: several tasks, same result.
    small = tmp_path / "small.zarr"
    upsample_to_store(stored, small, scale=4, model=net,
                      options=EngineOptions(chunks=(16, 16), max_memory="8M", quiet=True))  # fmt: skip
    options = finished_header(small)["options"]
    assert options["tasks"] > 1 and np.prod(options["plan"]["tile"]) < 128 * 112
    np.testing.assert_allclose(io.load(small).numpy(), result.numpy(), rtol=1e-5, atol=0.02)


def test_input_scale_max_is_the_whole_cube_maximum() -> None:
    values = np.random.default_rng(1).random((20, 10, 7)) * 300.0
    chunked = da.from_array(values, chunks=(5, 5, 7))
    assert input_scale("max", chunked) == float(np.max(values))
    assert input_scale("none", chunked) == 1.0
    assert input_scale("max", da.zeros((3, 3), chunks=2)) == 1.0  # not positive: no scaling
    assert input_scale("max", chunked, peak=0.75) == pytest.approx(float(np.max(values)) / 0.75)
    with pytest.raises(ValueError, match="peak must be positive"):
        input_scale("max", chunked, peak=0.0)
    with pytest.raises(ValueError, match="input_scaling must be one of .* got 'p99'"):
        input_scale("p99", chunked)
