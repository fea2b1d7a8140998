"""Every shipped YAML config in ``configs/`` builds its data sampler and model objects.

Catches mismatches between config values and the constructors' own checks (a config that
validates against the schema but that a constructor refuses, e.g. an intensity
``scale_range`` the sampler rejects) before hours of training are spent. Nothing is trained:
the objects are built as ``volsr train`` builds them, and one
batch is drawn to reach the checks that run at sampling time.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from volsr.train.build import build_batches, build_critic, build_model
from volsr.train.config import load_config
from volsr.train.config_files import read_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
DATA = Path(os.environ.get("VOLSR_DATA", ROOT.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data absent: {DATA}")


def _is_hsi(path: Path) -> bool:
    return "cubes" in (read_config(path).get("data") or {})


def test_configs_exist():
    assert {str(p.relative_to(ROOT / "configs")) for p in CONFIGS} >= {"mri/mdcsrn/stage2.yaml", "mri/mdcsrn/gan.yaml"}


@pytest.mark.parametrize("path", [p for p in CONFIGS if not _is_hsi(p)], ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_mri_config_builds_models(path):
    config = load_config(path)
    model = build_model(config.model, seed=config.run.seed)
    assert tuple(model.card.scale_range) == tuple(config.model.scale_range)
    low, high = config.data.factor_range  # the card must cover the trained factors
    assert model.card.scale_range[0] <= low and high <= model.card.scale_range[1]
    if config.gan is not None:
        critic = build_critic(config.model, seed=config.run.seed)
        assert critic(torch.zeros(1, 1, *config.data.patch)).shape == (1,)


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("path", [p for p in CONFIGS if not _is_hsi(p)], ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_mri_config_builds_sampler_and_draws_a_batch(path):
    config = load_config(path)
    data = dataclasses.replace(config.data, workers=0)  # same sampler, no worker process
    batches, names = build_batches(data, seed=config.run.seed)
    assert len(names) >= len(config.data.volumes)
    batch = next(batches(0))
    assert batch["hr"].shape == (config.data.batch_size, 1, *config.data.patch)
    assert torch.isfinite(batch["hr"]).all() and torch.isfinite(batch["lr"]).all()


@needs_data
@pytest.mark.parametrize("path", [p for p in CONFIGS if _is_hsi(p)], ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_hsi_config_builds_dataset_and_model(path):
    from volsr.train.cubes import build_cube_dataset, build_cube_model, resolve_cubes

    config = load_config(path)
    model = build_cube_model(config.model, seed=config.run.seed)
    specs = resolve_cubes(config.data.cubes)
    dataset = build_cube_dataset(config)
    # Every cube is used (grid_phases > 1: on up to grid_phases**2 shifted LR grids each).
    assert {pair.name for pair in dataset.pairs} == set(specs)
    assert len(specs) <= len(dataset.pairs) <= len(specs) * config.data.grid_phases**2
    assert sum(p.numel() for p in model.parameters()) > 0
    if config.validation is not None:
        assert all(Path(spec.split(":")[0]).is_file()
                   for spec in resolve_cubes(config.validation.cubes))
