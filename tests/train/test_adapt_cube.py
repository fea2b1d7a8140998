"""Adaptation of hyperspectral networks to the cube they upsample: the fine-tune, its guard, the CLI.

A small :class:`Attn1D2D` (4 features, 1 stage, a residual far from zero) with the shipped
networks' card stands in for ``attn1d2d.x4``, so that a few steps take a second.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.io
import torch

from volsr import adaptation, cli, io
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.registry import SHIPPED_OUTPUT_FLOOR, ModelCard
from volsr.models.weights import save_weights
from volsr.train import adapt_cube as adapt_cube_module
from volsr.train.adapt import AdaptOptions, adapt
from volsr.train.adapt_cube import CubeAdaptReport
from volsr.volume import Volume

PEAK = 0.75


def _network() -> Attn1D2D:
    net = Attn1D2D(scale=4, features=4, stages=1, init_residual_scale=0.5)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        net.residual_scale.fill_(0.1)
    net.card = ModelCard(
        name="attn1d2d.tiny", kind="network", grid="lr", halo=net.halo, scales="integer", scale_range=(4.0, 4.0),
        modality="hsi", description="test stand-in", input_scaling="max", input_peak=PEAK, self_ensemble=True,
        output_floor=SHIPPED_OUTPUT_FLOOR,
    )  # fmt: skip
    return net.eval()


def _cube(shape=(64, 48, 6), seed=0) -> np.ndarray:
    """A smooth positive cube with spatial structure and a spectrum that varies over the scene."""
    rng = np.random.default_rng(seed)
    r, c, b = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    x = 0.5 + 0.2 * np.sin(9 * r + 4 * c) * np.cos(3 * b + 2 * r) + 0.1 * np.cos(7 * c) * b
    return ((x + 0.01 * rng.standard_normal(shape)) * 1000).astype(np.float32)


def _options(**changes) -> AdaptOptions:
    return AdaptOptions(**{"steps": 4, "patch": 16, "batch_size": 2, "checks": 2, "learning_rate": 1e-3, **changes})


def test_the_same_seed_gives_the_same_weights_and_another_seed_other_weights(monkeypatch):
    # Every check is a candidate (PAIR_SAM_MARGIN 0), scoring as the unadapted network: the first is kept.
    monkeypatch.setattr(adapt_cube_module._CubeGuard, "scores", lambda self, net: (30.0, 1.0, 50.0, 0.1))
    monkeypatch.setattr(adapt_cube_module, "PAIR_SAM_MARGIN", 0.0)
    base = _network()
    nets = [adapt(_cube(), base, factors=(4, 4), options=_options(seed=s, min_gain_db=-1e9), progress=False)
            for s in (5, 5, 6)]  # fmt: skip
    states = [n.state_dict() for n in nets]
    assert all(n.adaptation.kept for n in nets)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], v) for k, v in _network().state_dict().items())
    report = nets[0].adaptation
    assert isinstance(report, CubeAdaptReport) and report.slab == (0, 48, 64) and report.best_step == 2
    assert "kept the weights of step 2" in report.describe()
    assert nets[0].card.name == "attn1d2d.tiny" and nets[0].card.input_peak == PEAK
    assert json.loads(json.dumps(report.to_json()))["checks"] == [[2, 30, 1, 50, 0.1], [4, 30, 1, 50, 0.1]]
    assert all(torch.equal(v, _network().state_dict()[k]) for k, v in base.state_dict().items())  # base untouched


def test_the_guard_falls_back_when_adaptation_hurts():
    net = adapt(_cube(), _network(), factors=(4, 4), options=_options(learning_rate=1.0), progress=False)
    assert not net.adaptation.kept and net.adaptation.best_step == 0
    base = _network().state_dict()
    assert all(torch.equal(v, base[k]) for k, v in net.state_dict().items())
    assert "using the unadapted network" in net.adaptation.describe()
    report = net.adaptation
    assert len(report.checks) == 2 and all(math.isfinite(v) for v in (*report.baseline_consistency, report.baseline_sam))


@pytest.mark.parametrize(("check", "kept"), [
    ((30.5, 0.99, 50.0, 0.1), True),  # better MPSNR, the pair's SAM 1 % lower, nothing worse
    ((30.5, 0.991, 50.0, 0.1), False),  # the held-out pair's SAM fell by less than PAIR_SAM_MARGIN
    ((30.5, 1.0 + 1e-6, 50.0, 0.1), False),  # the held-out pair's SAM got worse
    ((30.5, 0.9, 50.0, 0.1 + 1e-6), False),  # the re-degraded output's SAM got worse
    ((30.5, 0.9, 50.0 - 1e-6, 0.1), False),  # the re-degraded output's MPSNR got worse
    ((30.01, 0.9, 50.0, 0.1), False),  # a gain below min_gain_db
])
def test_the_guard_keeps_only_checks_not_worse_in_any_score(monkeypatch, check, kept):
    scores = iter([(30.0, 1.0, 50.0, 0.1), check, check])  # the unadapted network, then 2 checks

    monkeypatch.setattr(adapt_cube_module._CubeGuard, "scores", lambda self, net: next(scores))
    net = adapt(_cube(), _network(), factors=(4, 4), options=_options(), progress=False)
    report = net.adaptation
    assert report.kept == kept and len(report.checks) == 2
    assert (report.best_psnr, report.best_sam, report.best_consistency) == (
        (check[0], check[1], check[2:]) if kept else (30.0, 1.0, (50.0, 0.1)))
    if not kept:
        assert "did not help there (best check: step 2" in report.describe()
        assert all(torch.equal(v, _network().state_dict()[k]) for k, v in net.state_dict().items())


def test_adaptation_refuses_what_it_cannot_learn_from():
    with pytest.raises(ValueError, match="needs --scale 4,4"):
        adapt(_cube(), _network(), factors=(2, 2), options=_options())
    with pytest.raises(ValueError, match="needs a cube"):
        adapt(_cube()[..., 0], _network(), factors=(4, 4), options=_options())
    with pytest.raises(ValueError, match="needs a cube"):
        adapt(Volume(_cube(), np.eye(4), ("i", "j", "k")), _network(), factors=(4, 4), options=_options())
    with pytest.raises(ValueError, match="too small for self-supervised pairs"):
        adapt(_cube((25, 25, 6)), _network(), factors=(4, 4), options=_options())


@pytest.fixture
def tiny_weights(tmp_path):
    net = _network()
    config = {"scale": 4, "features": 4, "stages": 1, "init_residual_scale": 0.5}
    return str(save_weights(net, tmp_path / "tiny.safetensors", config=config,
                            card={"name": "attn1d2d.tiny", "scale_range": [4.0, 4.0], "description": "tiny",
                                  "input_peak": PEAK}))  # fmt: skip


def test_upsample_adapt_on_a_cube_saves_weights_that_run_as_a_model(tmp_path, tiny_weights, monkeypatch, capsys):
    # Keep whatever the 2 steps give (the test is about the plumbing, not the guard).
    monkeypatch.setattr(adaptation, "cube_options", lambda steps, seed: dataclasses.replace(
        _options(steps=steps, seed=seed), min_gain_db=-1e9))  # fmt: skip
    monkeypatch.setattr(adapt_cube_module, "PAIR_SAM_MARGIN", 0.0)
    monkeypatch.setattr(adapt_cube_module, "sam", lambda reference, estimate: 0.0)
    monkeypatch.setattr(adapt_cube_module, "mpsnr", lambda reference, estimate, data_range: 0.0)
    lr = tmp_path / "lr.mat"
    scipy.io.savemat(lr, {"cube": _cube()})
    saved = tmp_path / "adapted.safetensors"
    common = ["--scale", "4,4", "--no-self-ensemble"]
    out = {n: f"{tmp_path / n}.mat:sr" for n in ("a", "b", "c")}
    assert cli.main(["upsample", f"{lr}:cube", out["a"], *common, "--model", tiny_weights, "--adapt",
                     "--adapt-steps", "2", "--save-adapted", str(saved)]) == 0  # fmt: skip
    assert "adapt: 2 steps in" in capsys.readouterr().err
    assert not adaptation.adapted_weights_path(out["a"]).exists()  # gone once delivered
    sidecar = json.loads(saved.with_suffix(".json").read_text())
    assert sidecar["card"]["input_peak"] == PEAK and sidecar["metadata"]["lineage"]["acquisition"] is None
    assert sidecar["metadata"]["adaptation"]["kept"] and sidecar["metadata"]["lineage"]["factors"] == [4.0, 4.0]
    assert cli.main(["upsample", f"{lr}:cube", out["b"], *common, "--model", str(saved), "--quiet"]) == 0
    assert cli.main(["upsample", f"{lr}:cube", out["c"], *common, "--model", tiny_weights, "--quiet"]) == 0
    a, b, c = (io.load(out[n]).numpy() for n in ("a", "b", "c"))
    assert a.shape == (256, 192, 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # the adapted weights were used


def test_ctrl_c_during_a_cubes_adaptation_stops_the_run(tmp_path, tiny_weights, monkeypatch):
    # The trainer turns SIGINT into a clean stop; the run must not go on with a half-adapted network.
    monkeypatch.setattr(adapt_cube_module.Trainer, "fit", lambda self, **k: "interrupted")
    lr = tmp_path / "lr.mat"
    scipy.io.savemat(lr, {"cube": _cube()})
    assert cli.main(["upsample", f"{lr}:cube", f"{tmp_path / 'a.mat'}:sr", "--scale", "4,4", "--quiet",
                     "--model", tiny_weights, "--adapt", "--adapt-steps", "2"]) == 130  # fmt: skip
    assert not (tmp_path / "a.mat").exists()


def test_a_cube_too_small_for_pairs_runs_unadapted_and_says_so(tmp_path, tiny_weights, capsys):
    lr = tmp_path / "lr.mat"
    scipy.io.savemat(lr, {"cube": _cube((25, 25, 6))})  # x4: no room for a held-out block and patches
    common = ["--scale", "4,4", "--no-self-ensemble", "--model", tiny_weights]
    assert cli.main(["upsample", f"{lr}:cube", f"{tmp_path / 'a.mat'}:sr", *common, "--adapt",
                     "--save-adapted", str(tmp_path / "w.safetensors")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "too small for self-supervised pairs" in err and "using the unadapted network" in err
    assert not (tmp_path / "w.safetensors").exists()
    assert cli.main(["upsample", f"{lr}:cube", f"{tmp_path / 'b.mat'}:sr", *common, "--quiet"]) == 0
    np.testing.assert_array_equal(io.load(f"{tmp_path / 'a.mat'}:sr").numpy(), io.load(f"{tmp_path / 'b.mat'}:sr").numpy())
