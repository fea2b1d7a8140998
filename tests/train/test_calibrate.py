"""volsr.train.calibrate: the cube calibrations are fitted on training cubes only."""

from __future__ import annotations

import json

import pytest

from volsr.models.weights import WEIGHTS_DIR
from volsr.train.calibrate import BASELINE_FACTORS, HSI_TRAINING_CUBES, cube_cases


def _training_cubes(sidecar: dict) -> set[str]:
    """Every ``data.cubes`` of the training configs a sidecar records (a soup records each source's)."""
    metadata = sidecar["metadata"]
    configs = [metadata["training_config"]] if "training_config" in metadata else [
        source["training_config"] for source in metadata["soup_of"]]  # fmt: skip
    return {spec for config in configs for spec in config["data"]["cubes"]}


@pytest.mark.parametrize(("model", "factor"), [("attn1d2d.x2", 2), ("attn1d2d.x4", 4)])
def test_a_network_is_calibrated_on_the_cubes_that_trained_it(model, factor):
    sidecar = json.loads((WEIGHTS_DIR / f"{model.replace('.', '_')}.json").read_text())
    cases = cube_cases(model)
    assert {spec for spec, _ in cases} == _training_cubes(sidecar)
    assert {f for _, f in cases} == {factor}


def test_baselines_are_calibrated_on_cubes_both_networks_trained_on():
    both = set.intersection(*(_training_cubes(json.loads((WEIGHTS_DIR / f"attn1d2d_x{s}.json").read_text()))
                              for s in (2, 4)))  # fmt: skip
    assert set(HSI_TRAINING_CUBES) == both
    assert sorted(cube_cases("bicubic")) == sorted((spec, f) for spec in both for f in BASELINE_FACTORS)
    assert not any("sandiego" in spec or "cave" in spec for spec in both)  # the held-out scenes
    with pytest.raises(ValueError, match="no training cubes known"):
        cube_cases("meta_srgan.t1")
