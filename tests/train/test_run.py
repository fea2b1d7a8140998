"""``volsr train`` for both modalities (volsr/train/run.py): the data source picks the pipeline,
``--check`` builds everything and trains nothing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests.train.test_hsi_training import hsi_config_mapping
from volsr.cli import main
from volsr.io import save
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.weights import load_module
from volsr.train.config import config_from_dict, data_source
from volsr.train.run import run_training
from volsr.volume import Volume


def _hsi_config(tmp_path, folder: str) -> dict:
    return {**hsi_config_mapping(tmp_path, folder), "validation": None}


def _mri_config(tmp_path) -> dict:
    x = np.zeros((24, 24, 24), np.float32)
    x[4:20, 4:20, 4:20] = np.random.default_rng(1).uniform(50, 100, (16, 16, 16))
    save(Volume(x, np.eye(4), ("i", "j", "k")), tmp_path / "v.nii.gz")
    return {"run": {"name": "t", "output_dir": str(tmp_path / "mri_run"), "progress": False},
            "model": {"arch": "mdcsrn", "growth": 2, "blocks": 1, "units": 2, "scale_range": [1.0, 3.0]},
            "data": {"volumes": [str(tmp_path / "v.nii.gz")], "patch": [8, 8, 8], "batch_size": 2,
                     "factor_range": [2.0, 2.0], "workers": 0},
            "optim": {"steps": 2}, "validation": None}


def _write(path, mapping) -> str:
    path.write_text(yaml.safe_dump(mapping))
    return str(path)


def test_volsr_train_runs_a_hyperspectral_config_as_the_library_does(tmp_path, capsys):
    mapping = _hsi_config(tmp_path, "cli")
    assert main(["train", _write(tmp_path / "hsi.yaml", mapping), "--device", "cpu"]) == 0
    capsys.readouterr()
    direct = run_training(config_from_dict({**mapping, "run": {**mapping["run"], "output_dir": str(tmp_path / "direct")}}),
                          device="cpu")
    a = load_module(Attn1D2D, tmp_path / "cli" / "export" / "attn1d2d_x2.safetensors")
    b = load_module(Attn1D2D, direct["export"])
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert np.array_equal(x.numpy(), y.numpy()), key


def test_check_builds_both_kinds_and_trains_nothing(tmp_path, capsys):
    for name, mapping, words in (("hsi.yaml", _hsi_config(tmp_path, "hsi_run"), "attn1d2d"),
                                 ("mri.yaml", _mri_config(tmp_path), "mdcsrn")):
        assert main(["train", _write(tmp_path / name, mapping), "--check"]) == 0
        line = capsys.readouterr().out
        assert ": ok: " + words in line and "batch lr (2, " in line
        assert not (tmp_path / mapping["run"]["output_dir"]).exists()  # nothing written


def test_a_config_must_name_one_data_source(tmp_path, capsys):
    assert data_source({"data": {"volumes": ["v"]}}) == "volumes"
    for data in ({}, {"volumes": ["v"], "cubes": ["c"]}):
        with pytest.raises(ValueError, match="names its source"):
            data_source({"data": data})
    bad = _mri_config(tmp_path)
    bad["data"] = {"patch": [8, 8, 8]}
    assert main(["train", _write(tmp_path / "bad.yaml", bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert "names its source" in err and len(err.strip().splitlines()) == 1


def test_cubes_refuse_several_processes(tmp_path):
    from volsr.train.run import pipeline

    config = config_from_dict(_hsi_config(tmp_path, "ddp"))
    with pytest.raises(ValueError, match="cubes train in one process"):
        pipeline(config, rank=0, world=2)
