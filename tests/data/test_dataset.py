"""Tests for volsr.data.dataset: per-worker seeding, DataLoader workers, epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from volsr.data import PatchDataset, PatchSampler, SamplerOptions
from volsr.io import save
from volsr.volume import Volume


@pytest.fixture(scope="module")
def sampler(tmp_path_factory: pytest.TempPathFactory) -> PatchSampler:
    folder = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(0)
    paths = []
    for n, shape in enumerate([(32, 30, 34), (30, 32, 30)]):
        path = folder / f"v{n}.nii.gz"
        save(Volume(rng.uniform(0, 100, shape).astype(np.float32), np.eye(4), ("i", "j", "k")), path)
        paths.append(str(path))
    options = SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 4.0), snr_db_range=(20, 30),
                             permute_axes=True, flip_axes=(0, 1, 2))  # fmt: skip
    return PatchSampler(paths, options)


def _worker_batches(sampler: PatchSampler, seed: int, epoch: int, worker: int, count: int) -> list:
    """What worker `worker` must yield: the documented SeedSequence([seed, epoch, worker])."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, worker]))
    return [sampler.sample_batch(rng, batch_size=2) for _ in range(count)]


def test_two_workers_yield_different_valid_batches_from_their_own_seeds(sampler) -> None:
    dataset = PatchDataset(sampler, batch_size=2, seed=7, batches_per_epoch=4)
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    got = list(loader)
    assert len(got) == len(loader) == 4
    # In-order DataLoader: batches alternate between worker 0 and worker 1.
    expected = _worker_batches(sampler, 7, 0, 0, 2), _worker_batches(sampler, 7, 0, 1, 2)
    for index, batch in enumerate(got):
        reference = expected[index % 2][index // 2]
        torch.testing.assert_close(batch["lr"], reference["lr"], rtol=0, atol=0)
        torch.testing.assert_close(batch["hr"], reference["hr"], rtol=0, atol=0)
        assert batch["hr"].shape == (2, 1, 8, 8, 8) and 0 <= float(batch["hr"].min())
        assert float(batch["hr"].max()) <= 1 and len(batch["positions"]) == 3
    assert not torch.equal(got[0]["hr"], got[1]["hr"])
    dataset.set_epoch(1)
    assert not torch.equal(next(iter(DataLoader(dataset, batch_size=None)))["hr"], got[0]["hr"])


def test_single_process_iteration_and_length(sampler) -> None:
    dataset = PatchDataset(sampler, batch_size=2, seed=3, batches_per_epoch=3)
    batches = list(dataset)
    for batch, reference in zip(batches, _worker_batches(sampler, 3, 0, 0, 3), strict=True):
        assert torch.equal(batch["lr"], reference["lr"])
    endless = PatchDataset(sampler, batch_size=1, seed=3)
    with pytest.raises(TypeError, match="no length"):
        len(endless)
    assert next(iter(endless))["hr"].shape == (1, 1, 8, 8, 8)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"batch_size": 0, "seed": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 2, "seed": -1}, "seed must be an integer >= 0"),
        ({"batch_size": 2, "seed": 0, "batches_per_epoch": 0}, "batches_per_epoch must be"),
    ],
)
def test_bad_options_are_rejected(sampler, options, match) -> None:
    with pytest.raises(ValueError, match=match):
        PatchDataset(sampler, **options)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        PatchDataset(sampler, batch_size=1, seed=0).set_epoch(-2)
