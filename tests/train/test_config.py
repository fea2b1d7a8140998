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
    LossConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    ValidationConfig,
    config_from_dict,
    load_config,
)
from volsr.train.config_files import read_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MINIMAL = {"run": {"name": "t", "output_dir": "runs/t"},
           "data": {"volumes": ["mri/templates/*.nii.gz"]},
           "optim": {"steps": 10}}


def with_value(section: str, key: str, value) -> dict:
    mapping = {k: dict(v) for k, v in MINIMAL.items()}
    mapping.setdefault(section, {})[key] = value
    return mapping


@pytest.mark.parametrize("name", ["mri/mdcsrn/stage2.yaml", "mri/mdcsrn/gan.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, TrainConfig)
    assert (config.gan is not None) == name.endswith("gan.yaml")
    assert config.data.factor_range[0] >= 2 and config.data.factor_range[1] <= 5


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")))
def test_shipped_configs_comment_every_value(name):
    for number, line in enumerate((CONFIGS / name).read_text().splitlines(), 1):
        if re.match(r"^\s*[a-z_]+:\s*\S", line) and not line.lstrip().startswith("#"):
            assert "#" in line, f"{name}:{number} has no comment: {line!r}"


def test_extends_merges_a_chain_over_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "run": {"name": "a", "output_dir": "runs/a", "seed": 3},
        "data": {"volumes": ["x/*.nii.gz", "y.nii.gz"], "patch": [16, 16, 16]},
        "optim": {"steps": 10, "lr": 1.0e-3}, "gan": {"n_critic": 3}}))
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\noptim:\n  lr: 2.0e-4\ndata:\n  volumes: [z.nii.gz]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leaf.yaml").write_text("extends: ../mid.yaml\nrun:\n  seed: 7\ngan: null\n")
    config = load_config(tmp_path / "sub" / "leaf.yaml")
    expected = config_from_dict({  # written out in full: what the chain must mean
        "run": {"name": "a", "output_dir": "runs/a", "seed": 7},
        "data": {"volumes": ["z.nii.gz"], "patch": [16, 16, 16]},  # a list replaces, a mapping merges
        "optim": {"steps": 10, "lr": 2.0e-4}, "gan": None})
    assert config == expected
    assert read_config(tmp_path / "mid.yaml")["gan"] == {"n_critic": 3}


def test_extends_refuses_loops_and_missing_bases(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: gone.yaml\n")
    with pytest.raises(FileNotFoundError, match="gone.yaml' not found .extended by"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [a.yaml]\n")
    with pytest.raises(ValueError, match="'extends' in .* must be a file name"):
        load_config(tmp_path / "d.yaml")


def test_shipped_lineages_extend_their_previous_stage():
    # the shipped meta_srgan.t1 lineage reads top-down: each stage names the one before it
    chain = ["gpu.yaml", "ft.yaml", "ft2.yaml"]
    for previous, stage in zip(chain, chain[1:]):
        assert yaml.safe_load((CONFIGS / "mri/meta_srgan" / stage).read_text())["extends"] == previous
    assert load_config(CONFIGS / "mri/meta_srgan/ft2.yaml").optim.steps == 3000


def test_defaults_fill_and_match_dataclasses():
    config = config_from_dict(MINIMAL)
    assert config.optim == OptimConfig(steps=10)
    assert config.run == RunConfig(name="t", output_dir="runs/t")
    assert config.data == DataConfig(volumes=("mri/templates/*.nii.gz",))
    assert config.validation == ValidationConfig()
    assert config.gan is None
    assert dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen


def test_gan_and_validation_sections():
    mapping = {**MINIMAL, "loss": {"wgan": 1e-3}, "gan": {"n_critic": 3}, "validation": None}
    config = config_from_dict(mapping)
    assert config.gan == GanConfig(n_critic=3)
    assert config.loss == LossConfig(l1=1.0, wgan=1e-3)
    assert config.validation is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"loss": {"sam": 0.3}}, "'loss.sam' weighs a spectral term: it needs cubes"),
        ({"loss": {"wgan": 1e-3}}, r"'loss.wgan' > 0 and a 'gan' section .* go together, got wgan 0.001 and gan null"),
        ({"gan": {"n_critic": 3}}, "got wgan 0 and gan set"),
        ({"loss": {"l1": 0}}, "'loss' needs a term besides 'wgan' of positive weight"),
        ({"loss": {"l1": -1}}, r"'loss.l1' must be >= 0"),
    ],
)
def test_a_loss_the_run_cannot_compute_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict({**MINIMAL, **changes})


def test_a_cube_config_refuses_the_volume_critic():
    mapping = {"run": MINIMAL["run"], "optim": MINIMAL["optim"], "data": {"cubes": ["a.mat:x"]}}
    assert config_from_dict({**mapping, "loss": {"sam": 0.3}}).loss == LossConfig(l1=1.0, sam=0.3)
    with pytest.raises(ValueError, match="'loss.wgan' needs volumes"):
        config_from_dict({**mapping, "loss": {"wgan": 1e-3}})


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
    config = load_config(CONFIGS / "mri/meta_srgan/gpu.yaml")
    assert config.model.arch == "meta_srgan" and config.model.taps % 2 == 0
    # The card's declared range is the trained (continuous) factor range, within [1, 6].
    assert config.model.scale_range == config.data.factor_range == (1.0, 6.0)
    assert not config.data.integer_factors and config.gan is not None
    with pytest.raises(ValueError, match="'model.taps' must be an even integer >= 2, got 3"):
        config_from_dict(with_value("model", "taps", 3))
    with pytest.raises(ValueError, match=r"'model.arch' must be one of \['mdcsrn', 'meta_srgan'\]"):
        config_from_dict(with_value("model", "arch", "rdn"))


def test_the_data_section_shares_the_samplers_names_and_defaults():
    # DataConfig is the YAML face of SamplerOptions: a shared field must not drift in name or default.
    from volsr.data import SamplerOptions

    sampler = {f.name: f.default for f in dataclasses.fields(SamplerOptions)}
    data = {f.name: f.default for f in dataclasses.fields(DataConfig) if f.name != "volumes"}
    renamed = {"patch": "patch_shape", "slice_axes": "axes", "cache_mb": "cache_bytes"}
    own = {"batch_size", "workers"}
    assert set(data) - own <= set(sampler) | set(renamed)
    for name, default in data.items():
        if name in own:
            continue
        expected = sampler[renamed.get(name, name)]
        assert (default * 2**20 if name == "cache_mb" else default) == expected, name
