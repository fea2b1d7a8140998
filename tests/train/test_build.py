"""Tests of volsr.train.build: a real (tiny) run through ``volsr train`` on the shared data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from volsr.cli import main
from volsr.geometry import output_coordinates
from volsr.models.interpolation import SeparableInterpolation
from volsr.models.mdcsrn import MDCSRN, MDCSRNUpsampler
from volsr.models.weights import load_module
from volsr.train.build import build_batches, build_model, load_initial_weights, resolve_data_paths
from volsr.train.checkpoint import save_checkpoint
from volsr.train.config import DataConfig, ModelConfig

DATA = Path(os.environ.get("VOLSR_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "mri").is_dir(), reason=f"shared data absent: {DATA}")


def tiny_config(tmp_path: Path, *, gan: bool) -> Path:
    config = {
        "run": {"name": "mdcsrn_tiny", "output_dir": str(tmp_path / "run"), "seed": 1,
                "checkpoint_every": 1, "keep_last": 1, "log_every": 1, "progress": False},
        "model": {"blocks": 1, "units": 1, "growth": 4, "base": 4, "critic_base": 2,
                  "critic_levels": 1},
        "data": {"volumes": ["mri/templates/MNI152_T1_brain_1mm.nii.gz"], "patch": [12, 12, 12],
                 "batch_size": 2, "factor_range": [2, 4], "snr_db_range": [20, 30]},
        "optim": {"steps": 3, "lr": 1e-3, "warmup_steps": 1, "ema_decay": 0.9},
        "validation": {"volumes": ["icbm152"], "every": 2, "crop": [24, 24, 24]},
    }
    if gan:
        config["gan"] = {"n_critic": 1, "start_step": 1}
        config["loss"] = {"l1": 1.0, "wgan": 1e-3}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_untrained_model_is_cubic():
    model = build_model(ModelConfig(blocks=1, units=2, growth=4, base=4), seed=0)
    x = torch.rand(1, 1, 6, 6, 3, generator=torch.Generator().manual_seed(0))
    grid = (np.arange(6.0), np.arange(6.0), output_coordinates(3, 12))
    assert torch.equal(model(x, grid), SeparableInterpolation(method="cubic")(x, grid))
    assert model.card.halo == 3 and model.card.input_scaling == "p99.9"
    again = build_model(ModelConfig(blocks=1, units=2, growth=4, base=4), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


@needs_data
def test_batches_are_indexed_by_position():
    config = DataConfig(volumes=("mri/templates/MNI152_T1_brain_1mm.nii.gz",), patch=(8, 8, 8),
                        batch_size=2, factor_range=(2.0, 3.0))
    batches, names = build_batches(config, seed=0)
    assert names == ["mri/templates/MNI152_T1_brain_1mm.nii.gz"]
    stream = batches(0)
    first = [next(stream) for _ in range(3)]
    resumed = next(batches(2))
    assert torch.equal(first[2]["hr"], resumed["hr"]) and torch.equal(first[2]["lr"], resumed["lr"])
    assert first[0]["lr"].shape[0] == 2 and first[0]["hr"].shape == (2, 1, 8, 8, 8)


@needs_data
@pytest.mark.parametrize("gan", [False, True])
def test_volsr_train_runs_resumes_and_exports(tmp_path, gan):
    config = tiny_config(tmp_path, gan=gan)
    assert main(["train", str(config), "--max-steps", "2", "--device", "cpu"]) == 0
    assert main(["train", str(config), "--max-steps", "2"]) == 2  # exists: needs --resume
    assert main(["train", str(config), "--resume", "--device", "cpu"]) == 0
    run = tmp_path / "run"
    with open(run / "train.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3]
    with open(run / "validation.csv") as handle:
        metrics = {(int(r["step"]), r["metric"]) for r in csv.DictReader(handle)}
    assert {(2, "score"), (3, "score"), (3, "icbm152/psnr")} <= metrics
    exported = run / "export" / "mdcsrn_tiny.safetensors"
    network = load_module(MDCSRN, exported)
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["card"]["name"] == "mdcsrn.tiny" and sidecar["metadata"]["step"] == 3
    assert sidecar["metadata"]["datasets"] == ["mri/templates/MNI152_T1_brain_1mm.nii.gz"]
    assert isinstance(MDCSRNUpsampler(network), MDCSRNUpsampler)


def test_init_from_loads_the_checkpoints_ema_weights(tmp_path):
    config = ModelConfig(blocks=1, units=1, growth=4, base=4)
    trained, fresh = build_model(config, seed=0), build_model(config, seed=1)
    state = trained.state_dict()
    ema = {k: v + 1.0 for k, v in state.items()}  # differs from the raw weights
    tensors = {**{f"model.{k}": v for k, v in state.items()},
               **{f"ema.{k}": v for k, v in ema.items()}}
    save_checkpoint(tmp_path, "best", tensors=tensors, meta={"step": 7})
    load_initial_weights(fresh, tmp_path / "best.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in fresh.state_dict().items())
    wider = build_model(ModelConfig(blocks=1, units=1, growth=4, base=6), seed=0)
    with pytest.raises(ValueError, match="does not match the configured model"):
        load_initial_weights(wider, tmp_path / "best.safetensors")


def test_init_from_loads_exported_weights_as_they_are(tmp_path):
    config = ModelConfig(blocks=1, units=1, growth=4, base=4)
    trained, fresh = build_model(config, seed=0), build_model(config, seed=1)
    save_checkpoint(tmp_path, "shipped", tensors=trained.state_dict(), meta={"card": {}})
    load_initial_weights(fresh, tmp_path / "shipped.safetensors")
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_missing_files_are_reported():
    with pytest.raises(FileNotFoundError, match="no file matches"):
        resolve_data_paths("/no/such/dir/*.nii.gz")


def test_meta_srgan_arch_builds_an_lr_grid_model_that_starts_at_cubic():
    from volsr.models.meta_srgan import MetaSRGAN

    config = ModelConfig(arch="meta_srgan", blocks=1, units=1, growth=2, base=2, hidden=4,
                         scale_range=(1.0, 6.0))
    model = build_model(config, seed=0)
    assert isinstance(model, MetaSRGAN)
    assert (model.card.name, model.card.grid, model.card.halo, model.card.scale_range) == (
        "meta_srgan.run", "lr", 14, (1.0, 6.0))
    x = torch.rand(1, 1, 6, 6, 4, generator=torch.Generator().manual_seed(0))
    grid = (np.arange(6.0), np.arange(6.0), output_coordinates(4, 10))  # factor 2.5
    assert torch.equal(model(x, grid), SeparableInterpolation(method="cubic")(x, grid))
    again = build_model(config, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


@needs_data
def test_volsr_train_meta_srgan_runs_with_a_critic_and_exports(tmp_path):
    from volsr.models.meta_srgan import MetaSRGAN

    config = yaml.safe_load(tiny_config(tmp_path, gan=True).read_text())
    config["run"]["name"] = "meta_srgan_tiny"
    config["model"] = {"arch": "meta_srgan", "blocks": 1, "units": 1, "growth": 2, "base": 2,
                       "hidden": 4, "scale_range": [1.0, 6.0], "critic_base": 2,
                       "critic_levels": 1}
    config["data"]["factor_range"] = [1.5, 3.5]
    config["data"]["isotropic_probability"] = 1.0  # every batch low-resolution along all axes
    config["data"]["isotropic_factor_range"] = [1.5, 2.5]
    config["optim"]["steps"] = 2
    config["validation"] = None
    path = tmp_path / "meta.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--device", "cpu"]) == 0
    exported = tmp_path / "run" / "export" / "meta_srgan_tiny.safetensors"
    assert isinstance(load_module(MetaSRGAN, exported), MetaSRGAN)
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["card"]["name"] == "meta_srgan.tiny" and sidecar["card"]["scale_range"] == [1, 6]
    assert sidecar["metadata"]["step"] == 2
    with open(tmp_path / "run" / "train.csv") as handle:
        assert all(np.isfinite(float(r["loss"])) for r in csv.DictReader(handle))
