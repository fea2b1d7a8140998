"""Tiled, out-of-core output equals one whole-volume forward pass (R9)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.engine.nets import HRNet, Identity, LRNet
from volsr import io
from volsr.engine import EngineOptions, check_halo, upsample, upsample_to_store
from volsr.errors import VolsrError
from volsr.geometry import output_coordinates, resampled_shape
from volsr.models import get_card
from volsr.models.registry import SHIPPED_OUTPUT_FLOOR
from volsr.volume import Volume


def _whole(net, array, scale, divide=1.0):
    shape_out = resampled_shape(array.shape[1:], scale)
    positions = tuple(output_coordinates(n, m) for n, m in zip(array.shape[1:], shape_out))
    with torch.no_grad():
        x = torch.from_numpy((array / np.float32(divide)).astype(np.float32))[None]
        return net.eval()(x, positions)[0].numpy() * np.float32(divide)


CASES = [
    ((1, 1, 4), (13, 11, 7), (5, 4, 6), (6, 5, 7)),
    ((2, 2, 2), (9, 7, 6), (5, 6, 4), (4, 4, 3)),
    ((1, 1, 2.5), (10, 9, 7), (7, 5, 6), (3, 8, 5)),
]


@pytest.mark.parametrize("net_class", [LRNet, HRNet])
@pytest.mark.parametrize(("scale", "shape", "tile", "chunks"), CASES)
def test_exact_tiles_equal_a_whole_volume_pass(tmp_path, net_class, scale, shape, tile, chunks):
    net = net_class()
    # Negative voxels: the engine leaves the outputs unclamped (see the floor test below).
    data = np.random.default_rng(0).random(shape, dtype=np.float32) - np.float32(0.5)
    volume = Volume(data, np.eye(4), ("i", "j", "k"))
    path = upsample_to_store(volume, tmp_path / "sr.zarr", scale=scale, model=net,
                             options=EngineOptions(chunks=chunks, tile=tile, quiet=True))  # fmt: skip
    expected = _whole(net, data[None], scale)[0]
    np.testing.assert_allclose(io.load(path).numpy(), expected, rtol=0, atol=2e-5)
    lazy = upsample(volume, scale=scale, model=net).numpy()
    np.testing.assert_allclose(lazy, expected, rtol=0, atol=2e-5)


def test_gaussian_blend_of_exact_tiles_matches_too(tmp_path):
    net = LRNet(channels=2)
    data = np.random.default_rng(1).random((2, 12, 10, 5), dtype=np.float32) - np.float32(0.5)
    volume = Volume(np.moveaxis(data, 0, -1), np.eye(4), ("i", "j", "k", "channel"))
    path = upsample_to_store(volume, tmp_path / "b.zarr", scale=(1, 2, 3), model=net,
                             options=EngineOptions(chunks=(4, 8, 8), tile=(6, 8, 9), blend="gaussian", overlap=0.5, quiet=True))  # fmt: skip
    expected = np.moveaxis(_whole(net, data, (1, 2, 3)), 0, -1)
    np.testing.assert_allclose(io.load(path).numpy(), expected, rtol=0, atol=2e-5)


def test_identity_network_reproduces_the_input_exactly(tmp_path):
    data = np.random.default_rng(2).random((11, 7, 9), dtype=np.float32)
    path = upsample_to_store(Volume(data, np.eye(4), ("i", "j", "k")), tmp_path / "id.zarr", scale=1,
                             model=Identity(),
                             options=EngineOptions(chunks=(4, 3, 5), tile=(3, 2, 4), quiet=True))  # fmt: skip
    assert np.array_equal(io.load(path).numpy(), data)


def test_p999_scaling_is_global(tmp_path):
    net = LRNet(scaling="p99.9", seed=3)
    data = ((np.random.default_rng(3).random((9, 8, 5)) - 0.1) * 1000).astype(np.float32)
    path = upsample_to_store(Volume(data, np.eye(4), ("i", "j", "k")), tmp_path / "p.zarr", scale=(1, 1, 2),
                             model=net, options=EngineOptions(chunks=(4, 4, 4), quiet=True))  # fmt: skip
    expected = _whole(net, data[None], (1, 1, 2), divide=np.percentile(data, 99.9))[0]
    np.testing.assert_allclose(io.load(path).numpy(), expected, rtol=1e-5, atol=1e-3)


def test_a_card_declared_floor_clamps_undershoot_when_the_input_has_no_negative_voxel(tmp_path):
    net = LRNet(seed=4)
    data = np.random.default_rng(4).random((9, 8, 6), dtype=np.float32)
    whole = _whole(net, data[None], (1, 1, 2))[0]
    floor = SHIPPED_OUTPUT_FLOOR  # what the shipped networks declare (input scale 1 for this card)
    assert whole.min() < floor < whole.max()  # the random network undershoots: the clamp has work to do
    volume = Volume(data, np.eye(4), ("i", "j", "k"))
    # A module you bring runs exactly as written: no floor, equal to its whole-volume pass.
    path = upsample_to_store(volume, tmp_path / "byo.zarr", scale=(1, 1, 2), model=net,
                             options=EngineOptions(chunks=(4, 4, 4), tile=(5, 4, 6), quiet=True))  # fmt: skip
    np.testing.assert_allclose(io.load(path).numpy(), whole, rtol=0, atol=1e-5 * float(np.ptp(whole)))
    np.testing.assert_allclose(upsample(volume, scale=(1, 1, 2), model=net).numpy(), whole, rtol=0,
                               atol=1e-5 * float(np.ptp(whole)))  # fmt: skip
    net.card = dataclasses.replace(net.card, output_floor=floor)
    path = upsample_to_store(volume, tmp_path / "f.zarr", scale=(1, 1, 2), model=net,
                             options=EngineOptions(chunks=(4, 4, 4), tile=(5, 4, 6), quiet=True))  # fmt: skip
    np.testing.assert_allclose(io.load(path).numpy(), np.maximum(whole, floor), rtol=0, atol=2e-5)
    lazy = upsample(volume, scale=(1, 1, 2), model=net).numpy()
    np.testing.assert_allclose(lazy, np.maximum(whole, floor), rtol=0, atol=2e-5)
    step = Volume(np.repeat([0.0, 0.0, 1.0, 1.0], 4).reshape(1, 4, 4).repeat(3, 0).astype(np.float32),
                  np.eye(4), ("i", "j", "k"))
    assert upsample(step, scale=(1, 2, 1), model="cubic").numpy().min() < 0.0  # baselines: as they are
    assert {get_card(n).output_floor for n in ("meta_srgan.t1", "mdcsrn.t1", "attn1d2d.x2", "attn1d2d.x4")} == {
        SHIPPED_OUTPUT_FLOOR}


def test_halo_check_accepts_the_true_halo_and_catches_a_short_one():
    assert check_halo(LRNet(), scale=(1, 1, 2)) < 1e-5
    assert check_halo(HRNet(), scale=(2, 2, 2)) < 1e-5
    with pytest.raises(VolsrError, match="declares halo 1 .* receptive field is larger"):
        check_halo(LRNet(halo=1), scale=(1, 1, 2))
