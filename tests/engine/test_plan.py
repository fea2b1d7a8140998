"""Tests of volsr.engine.plan: tasks partition the output, tiles cover tasks, blend work is bounded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from volsr.engine.plan import make_plan
from volsr.engine.progress import WORKSPACE_FACTOR, activation_bytes
from volsr.models import ModelCard, create_model, get_card


def _task_owner(plan) -> np.ndarray:
    owner = np.full(plan.shape_out, -1)
    for index in range(plan.n_tasks):
        box = tuple(slice(a, b) for a, b in plan.task_region(index))
        assert np.all(owner[box] == -1), "two tasks own one voxel"
        owner[box] = index
    return owner


@pytest.mark.parametrize("blend", ["exact", "gaussian"])
def test_tasks_partition_the_output_and_their_tiles_cover_them(blend):
    plan = make_plan(get_card("linear"), (37, 29, 11), (37, 58, 44), chunks=(8, 16, 8),
                     tile=(16, 16, 16), blend=blend, overlap=0.25)  # fmt: skip
    assert np.all(_task_owner(plan) >= 0)
    for index in range(plan.n_tasks):
        region = plan.task_region(index)
        covered = np.zeros([b - a for a, b in region], int)
        for tile in plan.tiles(region):
            box = tuple(slice(max(a, ra) - ra, min(b, rb) - ra)
                        for (a, b), (ra, rb) in zip(tile.region, region))  # fmt: skip
            covered[box] += 1
        assert covered.min() >= 1
        if blend == "exact":
            assert covered.max() == 1  # exact tiles partition the task


def test_blend_tasks_span_several_tiles_so_little_is_computed_twice():
    n, tile, overlap = (384, 384, 384), (32, 32, 32), 0.25
    plan = make_plan(get_card("linear"), n, n, chunks=(16, 16, 16), tile=tile, blend="gaussian",
                     overlap=overlap)  # fmt: skip
    stride = int(tile[0] * (1 - overlap))
    per_axis = [sorted(set(range(0, m - t, stride)) | {m - t}) for m, t in zip(n, tile)]
    lattice = set(itertools.product(*per_axis))  # every blend tile, once
    computed = [tuple(a for a, _ in t.region) for i in range(plan.n_tasks)
                for t in plan.tiles(plan.task_region(i))]  # fmt: skip
    assert set(computed) == lattice
    # One tile per task computes each tile about 1.75^3 = 5.4 times; three per task, < 2.
    assert len(computed) / len(lattice) < 2.0


class _HoldsFeatures(torch.nn.Module):
    """Keeps ``n`` feature maps of its input box alive at once, as a densely connected block
    does; none of them is a module output (only the final one-channel output is)."""

    def __init__(self, n: int, channels: int, *, halo: int = 0) -> None:
        super().__init__()
        self.n, self.channels = n, channels
        self.card = ModelCard(name="holds", kind="network", grid="lr", halo=halo, scales="real",
                              scale_range=(1.0, 8.0), modality="any", description="test")  # fmt: skip

    def forward(self, x, positions):
        features = [x.expand(-1, self.channels, -1, -1, -1) * (i + 1.0) for i in range(self.n)]
        total = torch.stack(features).sum()
        return torch.zeros((x.shape[0], 1, *(len(p) for p in positions))) + total


@pytest.mark.parametrize("n", [1, 4])
def test_activation_estimate_counts_every_live_tensor_not_only_module_outputs(n):
    net, channels = _HoldsFeatures(n, 8), 8
    plan = make_plan(net.card, (30, 30, 30), (30, 30, 30), chunks=(30, 30, 30), tile=(30, 30, 30))
    cost = activation_bytes(net, plan, 1, torch.device("cpu"))
    assert cost.per_source == 0.0  # input box = output box: one term (the per-output cost)
    per_voxel = cost.per_output
    # n float32 maps of 8 channels alive together, then their stacked copy: 2 n 8 4 bytes.
    assert per_voxel >= WORKSPACE_FACTOR * 2 * n * channels * 4
    assert per_voxel <= WORKSPACE_FACTOR * (2 * n + 2) * channels * 4


def test_activation_cost_splits_input_box_maps_from_outputs():
    # Each source voxel holds n maps of 8 channels, then their stacked copy (2 n 8 4 bytes);
    # each output voxel one float32: a single small probe would charge the halo's maps to
    # the outputs, the two-probe fit gives each its own term.
    net, n, channels = _HoldsFeatures(3, 8, halo=6), 3, 8
    plan = make_plan(net.card, (40, 40, 40), (160, 160, 160), chunks=(32, 32, 32), tile=(32, 32, 32))
    cost = activation_bytes(net, plan, 1, torch.device("cpu"))
    np.testing.assert_allclose(cost.per_source, WORKSPACE_FACTOR * 2 * n * channels * 4, rtol=0.05)
    assert cost.per_output <= WORKSPACE_FACTOR * 4 * 2
    tile = plan.central_tile([32, 32, 32])
    source = np.prod([b - a for a, b in tile.source])
    output = np.prod([b - a for a, b in tile.compute])
    one_probe = WORKSPACE_FACTOR * 2 * n * channels * 4 * 10**3 / 4**3  # 16-voxel probe: 10 LR source
    assert cost.bytes(tile_in=source, tile_out=output) < one_probe * output / 2


def test_a_tile_spanning_the_volume_is_one_task():
    # 200 output voxels with chunks of 64: a clipped 200-voxel tile covers the axis, so one
    # task of 4 chunks (not 3-chunk tasks plus an 8-voxel one recomputing the halo).
    plan = make_plan(get_card("bicubic"), (50, 50), (200, 200), chunks=(64, 64), tile=(1024, 1024))
    assert plan.task_chunks == (4, 4) and plan.n_tasks == 1
    assert make_plan(get_card("bicubic"), (50, 50), (200, 200), chunks=(64, 64), tile=(128, 128)).n_tasks == 4


@pytest.mark.parametrize("name", ["tiny_attn1d2d", "linear"])
def test_activation_cost_of_many_channels_is_extrapolated_from_few(monkeypatch, name):
    # The probes run with PROBE_CHANNELS channels; probing with the real count is the reference.
    from volsr.engine import progress
    from volsr.models.attn1d2d import Attn1D2D

    if name == "linear":
        net = create_model("linear")
    else:
        net = Attn1D2D(scale=2, features=4, stages=2).eval()
        net.card = ModelCard(name=name, kind="network", grid="lr", halo=net.halo, scales="integer",
                             scale_range=(2.0, 2.0), modality="hsi", description="test")  # fmt: skip
    plan = make_plan(net.card, (40, 40), (80, 80), chunks=(32, 32), tile=(32, 32))
    channels = 30
    extrapolated = progress.activation_bytes(net, plan, channels, torch.device("cpu"))
    monkeypatch.setattr(progress, "PROBE_CHANNELS", (channels - 1, channels))
    measured = progress.activation_bytes(net, plan, channels, torch.device("cpu"))
    for tile_in, tile_out in ((36 * 36, 32 * 32), (80 * 80, 76 * 76)):
        a = extrapolated.bytes(tile_in=tile_in, tile_out=tile_out)
        b = measured.bytes(tile_in=tile_in, tile_out=tile_out)
        assert a == pytest.approx(b, rel=0.02)
