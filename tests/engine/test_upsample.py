"""The whole-volume upsample API: slabs equal one pass, geometry, spectral cubes, errors."""

from __future__ import annotations

import importlib
import itertools
import math

import dask.array as da
import numpy as np
import pytest
import torch

from volsr.engine import EngineOptions, upsample
from volsr.geometry import output_coordinates
from volsr.models import ModelCard, create_model
from volsr.models.interpolation import SeparableInterpolation
from volsr.volume import Volume

upsample_module = importlib.import_module("volsr.engine.upsample")
BASELINES = ("nearest", "linear", "cubic", "lanczos")


def _oblique_affine(rng: np.random.Generator, spacing) -> np.ndarray:
    rotation, upper = np.linalg.qr(rng.standard_normal((3, 3)))
    rotation = rotation * np.sign(np.diag(upper))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    return affine


def _one_pass(name: str, array: np.ndarray, shape_out) -> np.ndarray:
    shape_in = array.shape[-len(shape_out) :]
    positions = tuple(output_coordinates(n, m) for n, m in zip(shape_in, shape_out, strict=True))
    with torch.no_grad():
        return create_model(name)(torch.from_numpy(array)[None], positions)[0].numpy()


@pytest.mark.parametrize("name", BASELINES)
def test_slab_by_slab_equals_one_whole_pass(name, monkeypatch):
    # One output row per slab: windows are clipped at both ends and interior for cubic's halo.
    monkeypatch.setattr(upsample_module, "_SLAB_BYTES", 1)
    rng = np.random.default_rng(0)
    data = rng.random((40, 6, 5)).astype(np.float32)
    out = upsample(Volume(data, np.eye(4), ("i", "j", "k")), scale=(2.5, 1.5, 2.0), model=name)
    expected = _one_pass(name, data[None], (100, 9, 10))[0]
    tolerance = 1e-5 if name == "cubic" else 1e-6  # cubic: prefilter truncated at the halo
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=tolerance)


def test_tiles_inside_a_slab_follow_the_memory_budget_and_stay_exact(monkeypatch):
    # One slab holds the whole output; a 6 MiB budget forces tiles much smaller than it.
    monkeypatch.setattr(upsample_module, "default_budget", lambda: 6 * 2**20)
    seen = []
    original = upsample_module.plan_run
    monkeypatch.setattr(upsample_module, "plan_run", lambda *a: seen.append(original(*a)) or seen[-1])
    data = np.random.default_rng(3).random((60, 56, 24)).astype(np.float32)
    out = upsample(Volume(data, np.eye(4), ("i", "j", "k")), scale=(1, 1, 4), model="cubic")
    plan = seen[0][0]
    assert plan.n_tasks == 1 and math.prod(plan.tile) < math.prod(plan.shape_out) / 4
    expected = _one_pass("cubic", data[None], (60, 56, 96))[0]
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


def test_slabs_of_a_band_last_cube_equal_one_pass(monkeypatch):
    monkeypatch.setattr(upsample_module, "_SLAB_BYTES", 3 * 4 * 3 * 11)
    rng = np.random.default_rng(1)
    cube = rng.random((31, 7, 3)).astype(np.float32)
    out = upsample(Volume(cube, np.eye(4), ("i", "j", "band")), scale=1.5, model="cubic")
    expected = _one_pass("cubic", np.moveaxis(cube, -1, 0), (47, 11))  # 46.5, 10.5 round up
    np.testing.assert_allclose(out.numpy(), np.moveaxis(expected, 0, -1), rtol=0, atol=1e-5)


def test_field_of_view_corners_keep_their_world_position():
    rng = np.random.default_rng(2)
    affine = _oblique_affine(rng, (0.9, 1.1, 3.3))
    volume = Volume(rng.random((5, 6, 7)).astype(np.float32), affine, ("i", "j", "k"))
    out = upsample(volume, scale=(2.0, 1.5, 3.3), model="linear")
    assert out.shape == (10, 9, 23)
    for corner in itertools.product((0, 1), repeat=3):
        before = [-0.5 + c * n for c, n in zip(corner, volume.shape, strict=True)]
        after = [-0.5 + c * n for c, n in zip(corner, out.shape, strict=True)]
        np.testing.assert_allclose(
            out.affine @ [*after, 1.0], volume.affine @ [*before, 1.0], atol=1e-9
        )


def test_target_spacing_sets_shape_and_affine():
    affine = np.diag([1.0, 1.0, 3.3, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    volume = Volume(np.ones((5, 6, 7), np.int16), affine, ("i", "j", "k"))
    out = upsample(volume, target_spacing=(1, 1, 1), model="linear")
    assert out.shape == (5, 6, 23)  # 7 * 3.3 = 23.1 -> 23
    step = 3.3 * 7 / 23
    expected = np.diag([1.0, 1.0, step, 1.0])
    # Slice 0 of the output is centred half an output slice above the input FOV's edge.
    expected[:3, 3] = (10.0, -20.0, 5.0 - 3.3 / 2 + step / 2)
    np.testing.assert_allclose(out.affine, expected, atol=1e-12)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-6)


@pytest.mark.parametrize("axes", [("i", "j", "band"), ("band", "i", "j")])
def test_spectral_cube_keeps_bands_and_metadata(axes):
    rng = np.random.default_rng(3)
    shape = {"i": 6, "j": 5, "band": 4}
    volume = Volume(
        rng.random(tuple(shape[a] for a in axes)).astype(np.float32),
        np.eye(4),
        axes,
        wavelengths=[450.0, 550.0, 650.0, 750.0],
        fwhm=[10.0, 10.0, 12.0, 12.0],
        meta={"source": "test"},
    )
    out = upsample(volume, scale=2, model="cubic")
    assert out.axes == axes
    assert out.shape[axes.index("band")] == 4
    assert out.spatial_shape == (12, 10)
    np.testing.assert_array_equal(out.wavelengths, volume.wavelengths)
    np.testing.assert_array_equal(out.fwhm, volume.fwhm)
    assert dict(out.meta) == {"source": "test"}
    band = volume.crop(tuple(slice(2, 3) if a == "band" else slice(None) for a in axes))
    alone = upsample(band, scale=2, model="cubic").numpy()
    taken = np.take(out.numpy(), [2], axis=axes.index("band"))
    np.testing.assert_allclose(taken, alone, atol=1e-6)


def test_result_is_lazy_float32_and_a_module_model_works():
    model = SeparableInterpolation(method="linear")
    model.card = create_model("linear").card
    model.train()
    volume = Volume(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.eye(4), ("i", "j", "k"))
    out = upsample(volume, scale=(2, 1, 1), model=model)
    assert isinstance(out.data, da.Array) and out.dtype == np.float32
    np.testing.assert_allclose(out.numpy()[:, 0, 0], [0.0, 1.0, 3.0, 4.0])
    assert model.training  # the caller's mode is restored


class _IntegerOnly(torch.nn.Module):
    card = ModelCard(
        name="integer-only", kind="network", grid="lr", halo=1, scales="integer",
        scale_range=(2.0, 4.0), modality="any", description="test double",
    )

    def forward(self, x, positions):  # pragma: no cover - never reached
        raise AssertionError


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one of scale and target_spacing"),
        ({"scale": 2, "target_spacing": 1}, ValueError, "exactly one"),
        ({"scale": 0}, ValueError, r"scale must be finite and > 0, got \(0.0, 0.0, 0.0\)"),
        ({"scale": (2, np.nan, 2)}, ValueError, "scale must be finite"),
        ({"scale": (2, 2)}, ValueError, r"scale needs 1 or 3 values"),
        ({"scale": "2"}, TypeError, "scale must be a number"),
        ({"target_spacing": (1, -1, 1)}, ValueError, "target_spacing must be finite"),
        ({"scale": 20}, ValueError, r"'cubic' supports per-axis scales in \[0.5, 16.0\], got"),
        ({"target_spacing": 4.0}, ValueError, r"got scale \(0.25, 0.25, 0.25\)"),
        ({"scale": 2, "model": "cubc"}, KeyError, "did you mean cubic"),
        ({"scale": 2, "model": torch.nn.Identity()}, TypeError, "ModelCard"),
        ({"scale": 2.5, "model": _IntegerOnly()}, ValueError, "'integer-only' supports integer"),
        ({"scale": 8, "model": _IntegerOnly()}, ValueError, r"\[2.0, 4.0\], got scale \(8.0"),
        ({"scale": 2, "options": EngineOptions(device="gpu0")}, ValueError, "device must name a torch device"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    volume = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), ("i", "j", "k"))
    with pytest.raises(error, match=match):
        upsample(volume, **kwargs)
