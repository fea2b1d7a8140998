"""Tests of volsr.engine.plan: tasks partition the output, tiles cover tasks, blend work is bounded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from volsr.engine.plan import make_plan
from volsr.engine.progress import WORKSPACE_FACTOR, activation_bytes
from volsr.models import ModelCard, get_card


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
    """Keeps ``n`` full-size feature maps alive at once, as a densely connected block does;
    none of them is a module output (only the final sum is)."""

    card = ModelCard(name="holds", kind="network", grid="lr", halo=0, scales="real",
                     scale_range=(1.0, 1.0), modality="any", description="test")  # fmt: skip

    def __init__(self, n: int, channels: int) -> None:
        super().__init__()
        self.n, self.channels = n, channels

    def forward(self, x, positions):
        features = [x.expand(-1, self.channels, -1, -1, -1) * (i + 1.0) for i in range(self.n)]
        return torch.stack(features).sum(0)[:, :1]


@pytest.mark.parametrize("n", [1, 4])
def test_activation_estimate_counts_every_live_tensor_not_only_module_outputs(n):
    net, channels = _HoldsFeatures(n, 8), 8
    plan = make_plan(net.card, (30, 30, 30), (30, 30, 30), chunks=(30, 30, 30), tile=(30, 30, 30))
    per_voxel = activation_bytes(net, plan, 1, torch.device("cpu"))
    # n float32 maps of 8 channels alive together, then their stacked copy: 2 n 8 4 bytes.
    assert per_voxel >= WORKSPACE_FACTOR * 2 * n * channels * 4
    assert per_voxel <= WORKSPACE_FACTOR * (2 * n + 2) * channels * 4
