"""Training on cubes through the one pipeline (volsr/train/run.py, cubes.py): config, exact resume, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.io
import torch

from volsr.errors import OutputExistsError
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.weights import load_module
from volsr.train.config import config_from_dict
from volsr.train.run import run_training


def hsi_config_mapping(tmp_path, folder: str) -> dict:
    """A tiny HSI experiment (two random cubes written to ``tmp_path``) as its YAML mapping."""
    rng = np.random.default_rng(0)
    specs = []
    for name, bands in (("a", 12), ("b", 17)):
        path = tmp_path / f"{name}.mat"
        scipy.io.savemat(path, {"cube": rng.random((16, 16, bands))})
        specs.append(f"{path}:cube")
    return {
        "run": {"name": "attn1d2d_x2", "output_dir": str(tmp_path / folder), "progress": False,
                "checkpoint_every": 2, "log_every": 1},
        "model": {"scale": 2, "features": 2, "stages": 1, "init_residual_scale": 0.1},
        "data": {"cubes": specs, "lr_patch": 4, "batch_size": 2, "min_bands": 4},
        "loss": {"l1": 1.0, "sam": 0.1, "spectral_gradient": 0.1},
        "optim": {"steps": 4, "lr": 1e-2, "warmup_steps": 0, "amp": False},
        "validation": {"cubes": [specs[1]], "every": 2},
    }


def _config(tmp_path, folder: str) -> object:
    return config_from_dict(hsi_config_mapping(tmp_path, folder))


def test_resume_reproduces_an_uninterrupted_run_and_exports_loadable_weights(tmp_path):
    whole = run_training(_config(tmp_path, "whole"))
    assert whole["status"] == "finished" and whole["step"] == 4
    assert set(whole["validation"]) >= {"b/mpsnr", "b/sam", "b/mpsnr_gain", "score"}
    config = _config(tmp_path, "split")
    assert run_training(config, max_steps=2)["status"] == "paused"
    with pytest.raises(OutputExistsError, match="--resume"):
        run_training(config)
    split = run_training(config, resume=True)
    a, b = (load_module(Attn1D2D, r["export"]) for r in (whole, split))
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert a.scale == 2 and float(a.residual_scale.detach()) != 0.1  # trained


def test_init_from_starts_from_an_earlier_stage(tmp_path):
    first = run_training(_config(tmp_path, "stage1"))
    checkpoint = sorted((tmp_path / "stage1" / "checkpoints").glob("step_*.safetensors"))[-1]
    config = _config(tmp_path, "stage2")
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, init_from=str(checkpoint)),
                                 optim=dataclasses.replace(config.optim, lr=0.0))
    second = run_training(config)  # lr 0: stage 2 keeps stage 1's weights
    a, b = (load_module(Attn1D2D, r["export"]) for r in (first, second))
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    wrong = _config(tmp_path, "wrong")
    wrong = dataclasses.replace(wrong, run=dataclasses.replace(wrong.run, init_from=str(checkpoint)),
                                model=dataclasses.replace(wrong.model, features=3))
    with pytest.raises(ValueError, match="does not match the configured model"):
        run_training(wrong)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown config key 'model.width'"):
        config_from_dict({"run": {"name": "t", "output_dir": "x"}, "data": {"cubes": ["c"]},
                          "optim": {"steps": 1}, "model": {"width": 3}})
