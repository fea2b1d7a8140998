"""Tests of volsr.engine.plan: tasks partition the output, tiles cover tasks, blend work is bounded."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from volsr.engine.plan import make_plan
from volsr.models import get_card


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
