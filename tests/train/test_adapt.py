"""Self-supervised adaptation: pairs from the scan, the fine-tune, its guard, the CLI around it."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from volsr import adaptation, cli, io
from volsr.acquisition import acquisition_from_spacing
from volsr.data.pairs import PatchParams, lr_tile_length
from volsr.data.self_pairs import SelfPairSampler, central_slab
from volsr.degrade import thick_slice
from volsr.models import create_model
from volsr.train import adapt as adapt_module
from volsr.train.adapt import AdaptOptions, adapt, adaptation_axis


def _scan(shape=(48, 40, 12), seed=0) -> np.ndarray:
    """A smooth positive volume with structure on every axis (a stand-in for a thick-slice scan)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    x = 0.4 + 0.2 * np.sin(7 * grid[0] + 3 * grid[1]) * np.cos(5 * grid[1] - 2 * grid[2])
    return (x + 0.02 * rng.standard_normal(shape)).astype(np.float32)


def test_a_pair_is_the_scan_thick_sliced_along_an_in_plane_axis_and_swapped_into_the_slice_position():
    scan = _scan()
    sampler = SelfPairSampler(scan, slice_axis=2, factor=4.0, thickness_ratio=1.0, profile="gaussian", patch=8)
    # Patch axis 2 (the slice position) holds in-plane volume axis 1; patch axis 1 holds the slice axis.
    params = PatchParams(volume=0, origin=(5, 2, 12), axis=2, factor=4.0, thickness=4.0, permutation=(0, 2, 1))
    item = sampler.make_item(params)
    normalised = np.clip(scan / sampler.stats[0].reference, 0, 1)
    swapped = np.transpose(normalised, (0, 2, 1))
    expected = thick_slice(swapped, axis=2, factor=4.0)  # volsr.degrade on the same axis
    first = 12 // 4 - sampler.options.lr_halo
    length = lr_tile_length(8, 4.0, halo=sampler.options.lr_halo)
    np.testing.assert_allclose(item["lr"][0].numpy(), expected[5:13, 2:10, first:first + length], atol=1e-5)
    np.testing.assert_allclose(item["hr"][0].numpy(), swapped[5:13, 2:10, 12:20], atol=1e-6)
    assert all(p[2] != 2 for p in sampler.permutations)  # the slice position always holds an in-plane axis


def test_pairs_stay_inside_or_outside_the_held_out_slab():
    scan = _scan((60, 40, 12))
    slab = central_slab(scan.shape, 0, 16)
    rng = np.random.default_rng(3)
    for inside in (True, False):
        sampler = SelfPairSampler(scan, slice_axis=2, factor=3.0, thickness_ratio=1.0, profile="box", patch=8,
                                  slab=slab, inside=inside)
        for _ in range(40):
            params = sampler.draw_params(rng, factor=3.0, axis=2)
            start, stop = sampler.volume_range(params, 0)
            assert (slab[1] <= start and stop <= slab[2]) if inside else (stop <= slab[1] or start >= slab[2])


def test_the_adaptation_axis_is_the_one_upsampled_axis():
    assert adaptation_axis((1, 4, 1)) == 1
    for factors in ((1, 2, 4), (2, 2, 2), (1, 1, 1), (0.5, 1, 4)):
        with pytest.raises(ValueError, match="one axis upsampled"):
            adaptation_axis(factors)


def _small_options(**changes) -> AdaptOptions:
    return AdaptOptions(**{"steps": 4, "patch": 8, "batch_size": 2, "holdout_pairs": 2, "checks": 2, **changes})


def test_the_same_seed_gives_the_same_weights_and_another_seed_other_weights():
    scan = _scan()
    nets = [adapt(scan, "meta_srgan.t1", factors=(1, 1, 4), options=_small_options(seed=s, min_gain_db=-1e9),
                  progress=False) for s in (5, 5, 6)]  # fmt: skip
    states = [n.state_dict() for n in nets]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])
    assert nets[0].adaptation.kept and nets[0].card.name == "meta_srgan.t1"


def test_the_guard_falls_back_to_the_unadapted_network_when_adaptation_hurts():
    # A learning rate of 1 wrecks the weights: the held-out pairs must say so.
    net = adapt(_scan(), "meta_srgan.t1", factors=(1, 1, 4), options=_small_options(learning_rate=1.0),
                progress=False)  # fmt: skip
    base = create_model("meta_srgan.t1").state_dict()
    assert not net.adaptation.kept and net.adaptation.best_step == 0
    assert all(torch.equal(v, base[k]) for k, v in net.state_dict().items())
    assert "using the unadapted network" in net.adaptation.describe()


def test_adaptation_refuses_what_it_cannot_learn_from():
    with pytest.raises(ValueError, match="interpolation"):
        adapt(_scan(), "cubic", factors=(1, 1, 4))
    with pytest.raises(ValueError, match="too small"):
        adapt(_scan((20, 20, 12)), "meta_srgan.t1", factors=(1, 1, 4), options=_small_options(patch=16))


def test_the_acquisitions_slice_gap_reaches_the_pairs(monkeypatch):
    seen = []
    original = SelfPairSampler.__init__

    def spy(self, volume, **kwargs):
        seen.append(kwargs)
        original(self, volume, **kwargs)

    monkeypatch.setattr(SelfPairSampler, "__init__", spy)
    acquisition = acquisition_from_spacing((1.0, 1.0, 4.0), slice_thickness=3.0)  # 1 mm gaps
    adapt(_scan(), "meta_srgan.t1", factors=(1, 1, 4), acquisition=acquisition, options=_small_options(steps=1),
          progress=False)  # fmt: skip
    assert {k["thickness_ratio"] for k in seen} == {0.75} and {k["factor"] for k in seen} == {4.0}


def _nifti(path, scan):
    nib.save(nib.Nifti1Image(scan, np.diag([1.0, 1.0, 4.0, 1.0])), path)
    return str(path)


def test_upsample_adapt_saves_weights_that_run_as_a_model(tmp_path, capsys):
    lr = _nifti(tmp_path / "lr.nii.gz", _scan())
    saved = tmp_path / "adapted.safetensors"
    common = ["--scale", "1,1,4", "--quiet"]
    assert cli.main(["upsample", lr, str(tmp_path / "a.nii.gz"), *common, "--adapt", "--adapt-steps", "2",
                     "--save-adapted", str(saved)]) == 0  # fmt: skip
    assert not adaptation.adapted_weights_path(str(tmp_path / "a.nii.gz")).exists()  # gone once delivered
    assert cli.main(["upsample", lr, str(tmp_path / "b.nii.gz"), *common, "--model", str(saved)]) == 0
    a, b = (io.load(tmp_path / n).numpy() for n in ("a.nii.gz", "b.nii.gz"))
    np.testing.assert_array_equal(a, b)
    record = io.load(lr)
    assert record.shape == (48, 40, 12)
    assert cli.main(["upsample", lr, str(tmp_path / "c.nii.gz"), *common, "--adapt-steps", "2"]) == 2
    assert "go with --adapt" in capsys.readouterr().err
    assert cli.main(["upsample", lr, str(tmp_path / "c.nii.gz"), *common, "--adapt", "--model", "cubic"]) == 2
    assert "interpolation" in capsys.readouterr().err.splitlines()[-1]


def test_resume_reuses_the_interrupted_runs_adapted_weights_bit_identically(tmp_path, monkeypatch):
    from volsr.engine import store as store_module

    lr = _nifti(tmp_path / "lr.nii.gz", _scan())
    args = ["--scale", "1,1,4", "--quiet", "--adapt", "--adapt-steps", "2", "--chunks", "16,16,16",
            "--tile", "16,16,16"]
    original, calls = store_module.write_result, []

    def failing(array, region, result):
        calls.append(region)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(array, region, result)

    monkeypatch.setattr(store_module, "write_result", failing)
    assert cli.main(["upsample", lr, str(tmp_path / "a.zarr"), *args]) == 1
    kept = adaptation.adapted_weights_path(str(tmp_path / "a.zarr"))
    assert kept.exists()
    monkeypatch.setattr(store_module, "write_result", original)

    def no_second_adaptation(*a, **k):
        raise AssertionError("resume adapted again")

    monkeypatch.setattr(adaptation, "adapt", no_second_adaptation)
    assert cli.main(["upsample", lr, str(tmp_path / "a.zarr"), *args, "--resume"]) == 0
    assert not kept.exists()
    monkeypatch.setattr(adaptation, "adapt", adapt_module.adapt)
    assert cli.main(["upsample", lr, str(tmp_path / "b.zarr"), *args]) == 0
    assert io.load(tmp_path / "a.zarr").numpy().tobytes() == io.load(tmp_path / "b.zarr").numpy().tobytes()


def test_ctrl_c_during_the_adaptation_stops_the_run(tmp_path, monkeypatch):
    # The trainer turns SIGINT into a clean stop; the run must not go on with a half-adapted network.
    monkeypatch.setattr(adapt_module.Trainer, "fit", lambda self, **k: "interrupted")
    lr = _nifti(tmp_path / "lr.nii.gz", _scan())
    assert cli.main(["upsample", lr, str(tmp_path / "a.nii.gz"), "--scale", "1,1,4", "--quiet", "--adapt",
                     "--adapt-steps", "2"]) == 130  # fmt: skip
    assert not (tmp_path / "a.nii.gz").exists()


def test_a_scan_too_small_for_pairs_runs_unadapted_and_says_so(tmp_path, capsys):
    lr = _nifti(tmp_path / "lr.nii.gz", _scan((20, 20, 12)))
    args = ["--scale", "1,1,4", "--model", "mdcsrn.t1"]
    assert cli.main(["upsample", lr, str(tmp_path / "a.nii.gz"), *args, "--adapt"]) == 0
    err = capsys.readouterr().err
    assert "too small for self-supervised pairs" in err and "using the unadapted network" in err
    assert cli.main(["upsample", lr, str(tmp_path / "b.nii.gz"), *args, "--quiet"]) == 0
    np.testing.assert_array_equal(io.load(tmp_path / "a.nii.gz").numpy(), io.load(tmp_path / "b.nii.gz").numpy())


def test_volsr_adapt_is_the_adaptation_and_import_volsr_stays_light():
    import subprocess
    import sys

    import volsr

    assert volsr.adapt is adapt
    code = "import sys, volsr; assert 'torch' not in sys.modules; volsr.adapt; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    with pytest.raises(AttributeError, match="no attribute 'adapted'"):
        volsr.adapted  # noqa: B018
