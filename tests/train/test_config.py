"""Tests of volsr.train.config: the shipped YAML files load, and every mistake is named."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from volsr.train.config import (
    DataConfig,
    GanConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    ValidationConfig,
    config_from_dict,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MINIMAL = {"run": {"name": "t", "output_dir": "runs/t"},
           "data": {"volumes": ["mri/templates/*.nii.gz"]},
           "optim": {"steps": 10}}


def with_value(section: str, key: str, value) -> dict:
    mapping = {k: dict(v) for k, v in MINIMAL.items()}
    mapping.setdefault(section, {})[key] = value
    return mapping


@pytest.mark.parametrize("name", ["mri_mdcsrn.yaml", "mri_mdcsrn_gan.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, TrainConfig)
    assert (config.gan is not None) == name.endswith("_gan.yaml")
    assert config.data.factor_range[0] >= 2 and config.data.factor_range[1] <= 5


@pytest.mark.parametrize("name", ["mri_mdcsrn.yaml", "mri_mdcsrn_gan.yaml", "mri_meta_srgan.yaml"])
def test_shipped_configs_comment_every_value(name):
    for number, line in enumerate((CONFIGS / name).read_text().splitlines(), 1):
        if re.match(r"^\s*[a-z_]+:\s*\S", line) and not line.lstrip().startswith("#"):
            assert "#" in line, f"{name}:{number} has no comment: {line!r}"


def test_defaults_fill_and_match_dataclasses():
    config = config_from_dict(MINIMAL)
    assert config.optim == OptimConfig(steps=10)
    assert config.run == RunConfig(name="t", output_dir="runs/t")
    assert config.data == DataConfig(volumes=("mri/templates/*.nii.gz",))
    assert config.validation == ValidationConfig()
    assert config.gan is None
    assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen


def test_gan_and_validation_sections():
    mapping = {**MINIMAL, "gan": {"n_critic": 3}, "validation": None}
    config = config_from_dict(mapping)
    assert config.gan == GanConfig(n_critic=3)
    assert config.validation is None


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("optim", "stepz", 1, "unknown config key 'optim.stepz'"),
        ("model", "arch", "unet", r"'model.arch' must be one of \['mdcsrn', 'meta_srgan'\]"),
        ("optim", "lr", -1.0, "'optim.lr' must be > 0"),
        ("optim", "lr", "fast", "'optim.lr' must be a number"),
        ("optim", "steps", 2.5, "'optim.steps' must be an integer"),
        ("optim", "amp", "yes", "'optim.amp' must be true or false"),
        ("data", "patch", [8, 8], "'data.patch' must be a list of 3 values"),
        ("data", "factor_range", [3, 2], "'data.factor_range' must be 1 <= low <= high"),
        ("validation", "crop", [8, 0, 8], "'validation.crop' must be positive sizes"),
        ("run", "keep_last", 0, "'run.keep_last' must be >= 1"),
    ],
)
def test_bad_values_are_named(section, key, value, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(with_value(section, key, value))


def test_missing_required_key():
    with pytest.raises(ValueError, match="'optim.steps' is required"):
        config_from_dict({**MINIMAL, "optim": {}})
    with pytest.raises(ValueError, match="'data' is required"):
        config_from_dict({k: v for k, v in MINIMAL.items() if k != "data"})


def test_load_config_uses_safe_load(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("run: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(path).optim.steps == 10
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config(tmp_path / "none.yaml")


def test_meta_srgan_config_loads_with_its_architecture_and_checks_taps():
    config = load_config(CONFIGS / "mri_meta_srgan.yaml")
    assert config.model.arch == "meta_srgan" and config.model.taps % 2 == 0
    # The card's declared range is the trained (continuous) factor range, within [1, 6].
    assert config.model.scale_range == config.data.factor_range == (1.0, 6.0)
    assert not config.data.integer_factors and config.gan is not None
    with pytest.raises(ValueError, match="'model.taps' must be an even integer >= 2, got 3"):
        config_from_dict(with_value("model", "taps", 3))
    with pytest.raises(ValueError, match=r"'model.arch' must be one of \['mdcsrn', 'meta_srgan'\]"):
        config_from_dict(with_value("model", "arch", "rdn"))
