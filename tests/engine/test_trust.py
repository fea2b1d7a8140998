"""Trust outputs of the engine: uncertainty (an array of the same tasks) and consistency."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from tests.engine.runs import with_engine
from volsr import io
from volsr.acquisition import acquisition_from_spacing
from volsr.cli import main
from volsr.consistency import consistency_map, enforce_consistency
from volsr.degrade import thick_slice
from volsr.engine import EngineOptions, TrustOptions, upsample_to_store
from volsr.engine import store as store_module
from volsr.models import ModelCard, create_model
from volsr.volume import Volume

AFFINE = np.array([[0.9, 0, 0, -10], [0, 1.1, 0, 5], [0, 0, 4.0, 2], [0, 0, 0, 1]])


def _smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    data = ndi.gaussian_filter(rng.random(shape), 1.5).astype(np.float32)
    return (data - data.min()) / (data.max() - data.min()) * 100 + 10


def _lr(shape=(20, 18, 8)):
    return Volume(_smooth(shape), AFFINE, ("i", "j", "k"))


def test_uncertainty_is_on_the_output_grid_and_leaves_the_output_as_it_was(tmp_path):
    lr = _lr()
    kwargs = dict(scale=(1, 1, 4), model="cubic", options=EngineOptions(chunks=(8, 8, 8), quiet=True))
    plain = upsample_to_store(lr, tmp_path / "plain.nii.gz", **kwargs)
    out = upsample_to_store(lr, tmp_path / "sr.nii.gz", **kwargs,
                            trust=TrustOptions(uncertainty=tmp_path / "u.nii.gz"))
    sr, u = io.load(out), io.load(tmp_path / "u.nii.gz")
    assert np.array_equal(sr.numpy(), io.load(plain).numpy())
    assert u.shape == sr.shape and np.allclose(u.affine, sr.affine)
    values = u.numpy()
    assert (values > 0).all() and np.isfinite(values).all()
    # Widths follow the input's edges: larger where the output changes fastest.
    slope = np.linalg.norm(np.stack(np.gradient(sr.numpy())), axis=0)
    assert np.corrcoef(slope.ravel(), values.ravel())[0, 1] > 0.5


def test_tiled_uncertainty_equals_the_whole_volume_map(tmp_path):
    lr = _lr()
    whole = upsample_to_store(lr, tmp_path / "a.zarr", scale=(1, 1, 4), model="cubic",
                              options=EngineOptions(tile=(64, 64, 64), quiet=True),
                              trust=TrustOptions(uncertainty=tmp_path / "ua.zarr"))  # fmt: skip
    tiled = upsample_to_store(lr, tmp_path / "b.zarr", scale=(1, 1, 4), model="cubic",
                              options=EngineOptions(chunks=(4, 4, 8), tile=(4, 4, 8), quiet=True),
                              trust=TrustOptions(uncertainty=tmp_path / "ub.zarr"))  # fmt: skip
    assert np.allclose(io.load(tmp_path / "ua.zarr").numpy(), io.load(tmp_path / "ub.zarr").numpy(), atol=1e-5)
    assert np.allclose(io.load(whole).numpy(), io.load(tiled).numpy(), atol=1e-4)
    assert "uncertainty" not in [p.name for p in (tmp_path / "a.zarr").iterdir()]  # its own file, not the image's


def _disk_full_at_the_third_write(monkeypatch):
    """Make the engine's third task write fail as a full disk would; return the real writer."""
    original, calls = store_module.write_result, []

    def failing(array, region, result):
        calls.append(region)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        original(array, region, result)

    monkeypatch.setattr(store_module, "write_result", failing)
    return original


def test_a_run_with_uncertainty_resumes_bit_identically(tmp_path, monkeypatch):
    lr = _lr()
    kwargs = dict(scale=(1, 1, 4), model="cubic", options=EngineOptions(chunks=(8, 8, 8), tile=(8, 8, 8), quiet=True))
    original = _disk_full_at_the_third_write(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(lr, tmp_path / "a.zarr", **kwargs,
                          trust=TrustOptions(uncertainty=tmp_path / "ua.nii.gz"))
    assert not (tmp_path / "ua.nii.gz").exists()
    monkeypatch.setattr(store_module, "write_result", original)
    upsample_to_store(lr, tmp_path / "a.zarr", resume=True, **kwargs,
                      trust=TrustOptions(uncertainty=tmp_path / "ua.nii.gz"))
    upsample_to_store(lr, tmp_path / "b.zarr", **kwargs,
                      trust=TrustOptions(uncertainty=tmp_path / "ub.nii.gz"))
    assert io.load(tmp_path / "ua.nii.gz").numpy().tobytes() == io.load(tmp_path / "ub.nii.gz").numpy().tobytes()
    assert io.load(tmp_path / "a.zarr").numpy().tobytes() == io.load(tmp_path / "b.zarr").numpy().tobytes()
    with pytest.raises(Exception, match="differ|changed|match"):
        upsample_to_store(lr, tmp_path / "b.zarr", resume=True, **kwargs,
                          trust=TrustOptions(uncertainty=tmp_path / "other.nii.gz"))


def test_the_consistency_map_of_the_truth_is_zero_and_enforcing_makes_it_zero(tmp_path):
    hr = Volume(_smooth((16, 12, 24), seed=3), np.diag([1.0, 1.0, 1.0, 1.0]), ("i", "j", "k"))
    for thickness, profile in ((4.0, "gaussian"), (3.0, "gaussian"), (4.0, "box")):
        lr = thick_slice(hr, axis=2, factor=4, thickness=thickness, profile=profile)
        lr = lr.replace(data=lr.data.compute())
        acq = dataclasses.replace(acquisition_from_spacing(lr.spacing, slice_thickness=thickness), profile=profile)
        truth_map = consistency_map(hr, lr, acq)
        assert truth_map.shape == lr.shape and np.allclose(truth_map.affine, lr.affine)
        assert np.abs(truth_map.numpy()).max() < 1e-4 * 100  # matches volsr.degrade to float32 rounding
        cubic = io.load(upsample_to_store(lr, tmp_path / f"c{thickness}{profile}.zarr", scale=(1, 1, 4),
                                          model="cubic", options=EngineOptions(quiet=True)))  # fmt: skip
        assert np.abs(consistency_map(cubic, lr, acq).numpy()).max() > 0.1  # cubic does not satisfy it
        fixed = enforce_consistency(cubic, lr, acq)
        assert np.abs(consistency_map(fixed, lr, acq).numpy()).max() < 1e-3
        # Least squares: the correction is the smallest one, so the enforced output is no
        # farther from the truth than the cubic output.
        assert np.linalg.norm(fixed.numpy() - hr.numpy()) <= np.linalg.norm(cubic.numpy() - hr.numpy()) + 1e-3


def test_cli_writes_uncertainty_and_consistency_and_logs_the_rms(tmp_path, capsys):
    source = tmp_path / "lr.nii.gz"
    io.save(_lr(), source)
    code = main(["upsample", str(source), str(tmp_path / "sr.nii.gz"), "--scale", "1,1,4", "--model", "cubic",
                 "--uncertainty", str(tmp_path / "u.nii.gz"), "--consistency", str(tmp_path / "c.nii.gz")])
    assert code == 0
    err = capsys.readouterr().err
    assert "consistency: RMS" in err
    c, lr = io.load(tmp_path / "c.nii.gz"), io.load(source)
    assert c.shape == lr.shape and np.allclose(c.affine, lr.affine)
    code = main(["upsample", str(source), str(tmp_path / "e.nii.gz"), "--scale", "1,1,4", "--model", "cubic",
                 "--enforce-consistency", "--consistency", str(tmp_path / "ce.nii.gz")])
    assert code == 0
    assert np.abs(io.load(tmp_path / "ce.nii.gz").numpy()).max() < 1e-3 * lr.numpy().max()


class _Mine(torch.nn.Module):
    card = ModelCard(name="mine", kind="network", grid="lr", halo=2, scales="real", scale_range=(1, 8),
                     modality="any", description="bring your own")

    def forward(self, x, positions):
        return create_model("linear")(x, positions)


class _MriOnly(_Mine):
    card = dataclasses.replace(_Mine.card, name="mri-only", calibration="linear.json")  # an MRI calibration only


def test_refusals_are_one_line_before_any_work(tmp_path, capsys):
    lr = _lr()
    with pytest.raises(ValueError, match="ships no uncertainty calibration"):
        upsample_to_store(lr, tmp_path / "a.zarr", scale=(1, 1, 4), model=_Mine(),
                          options=EngineOptions(quiet=True),
                          trust=TrustOptions(uncertainty=tmp_path / "u.zarr"))  # fmt: skip
    cube = Volume(np.ones((8, 8, 5), np.float32), np.eye(4), ("i", "j", "band"))
    with pytest.raises(ValueError, match="ships no uncertainty calibration for spectral cubes"):
        upsample_to_store(cube, tmp_path / "b.zarr", scale=2, model=_MriOnly(),
                          options=EngineOptions(quiet=True),
                          trust=TrustOptions(uncertainty=tmp_path / "u.zarr"))  # fmt: skip
    with pytest.raises(ValueError, match="another output of this run"):
        upsample_to_store(lr, tmp_path / "c.zarr", scale=(1, 1, 4), model="cubic",
                          options=EngineOptions(quiet=True),
                          trust=TrustOptions(uncertainty=tmp_path / "c.zarr"))  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    source = tmp_path / "lr.nii.gz"
    io.save(lr, source)
    code = main(["upsample", str(source), str(tmp_path / "sr.zarr"), "--scale", "1,1,4", "--model", "cubic",
                 "--pyramid", "2", "--enforce-consistency"])
    assert code != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_evaluate_reports_the_calibration_of_an_uncertainty_map(tmp_path, capsys):
    rng = np.random.default_rng(4)
    ref = Volume(rng.random((20, 20, 20), dtype=np.float32), np.eye(4), ("i", "j", "k"))
    scale = rng.uniform(0.01, 0.2, ref.shape).astype(np.float32)
    pred = ref.replace(data=ref.numpy() + rng.normal(0, scale).astype(np.float32))
    for name, volume in (("ref", ref), ("pred", pred), ("u", ref.replace(data=1.645 * scale))):
        io.save(volume, tmp_path / f"{name}.nii.gz")
    code = main(["evaluate", "--reference", str(tmp_path / "ref.nii.gz"), "--prediction", str(tmp_path / "pred.nii.gz"),
                 "--uncertainty", str(tmp_path / "u.nii.gz"), "--data-range", "1"])
    assert code == 0
    lines = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert float(lines["coverage_90"]) == pytest.approx(0.9, abs=0.01)  # the exact half-width of N(0, scale)
    assert 0.2 < float(lines["ause"]) < 0.9
    assert float(lines["spearman_uncertainty_error"]) > 0.3


def test_dask_workers_write_the_same_uncertainty(tmp_path):
    lr = _lr()
    kwargs = dict(scale=(1, 1, 4), model="cubic", options=EngineOptions(chunks=(8, 8, 8), tile=(8, 8, 8), quiet=True))
    upsample_to_store(lr, tmp_path / "a.zarr", **kwargs, trust=TrustOptions(uncertainty=tmp_path / "ua.zarr"))
    upsample_to_store(lr, tmp_path / "b.zarr", **with_engine(kwargs, workers=2),
                      trust=TrustOptions(uncertainty=tmp_path / "ub.zarr"))
    assert np.array_equal(io.load(tmp_path / "ua.zarr").numpy(), io.load(tmp_path / "ub.zarr").numpy())


def test_a_cube_is_reacquired_by_the_protocols_bicubic(tmp_path):
    from volsr.degrade import bicubic_downsample

    rng = np.random.default_rng(5)
    hr = Volume(ndi.gaussian_filter(rng.random((24, 20, 6)), (1, 1, 0)).astype(np.float32), np.eye(4),
                ("i", "j", "band"))  # fmt: skip
    lr = bicubic_downsample(hr, factors=4)
    lr = lr.replace(data=lr.data.compute())
    assert np.abs(consistency_map(hr, lr, None).numpy()).max() < 1e-5
    code = main(["upsample", "--model", "bicubic", "--scale", "4", "--consistency", str(tmp_path / "c.zarr"),
                 str(_saved(lr, tmp_path / "lr.zarr")), str(tmp_path / "sr.zarr")])
    assert code == 0
    c = io.load(tmp_path / "c.zarr")
    assert c.shape == lr.shape and c.axes == lr.axes
    assert 0 < np.abs(c.numpy()).max() < 0.2 * float(lr.numpy().max())  # bicubic is close, not exact


def _saved(volume, path):
    io.save(volume, path)
    return path


def _cube(shape=(24, 20, 6), seed=0):
    rng = np.random.default_rng(seed)
    data = ndi.gaussian_filter(rng.random(shape), (1.5, 1.5, 0)).astype(np.float32)
    return Volume(data * np.linspace(50, 100, shape[2], dtype=np.float32) + 10, np.eye(4), ("i", "j", "band"))


def test_a_mat_cube_gets_per_band_uncertainty_in_its_units_through_the_cli(tmp_path):
    import scipy.io

    cube = _cube((12, 10, 5))
    for name, factor in (("cube", 1.0), ("scaled", 1000.0)):
        scipy.io.savemat(tmp_path / f"{name}.mat", {"c": cube.numpy() * factor})
    widths = {}
    # The network without its self-ensemble: the same path in a tenth of the time (its
    # widths then come from 4 flips; the sizing probes of 8 make a tiny cube slow).
    for model, scale in (("bicubic", "4,4"), ("attn1d2d.x2", "2")):
        for name in ("cube", "scaled"):
            run = ["upsample", f"{tmp_path / name}.mat:c", "--scale", scale, "--model", model, "--no-self-ensemble"]
            assert main([*run, f"{tmp_path / model}_{name}.mat:sr", "--uncertainty", f"{tmp_path / model}_{name}_u.mat:u"]) == 0
            sr, u = io.load(f"{tmp_path / model}_{name}.mat:sr"), io.load(f"{tmp_path / model}_{name}_u.mat:u")
            assert u.shape == sr.shape and u.axes == sr.axes == ("i", "j", "band") and np.allclose(u.affine, sr.affine)
            widths[model, name] = u.numpy()
        assert main([*run[:1], f"{tmp_path}/cube.mat:c", *run[2:], f"{tmp_path / model}_plain.mat:sr"]) == 0
        assert np.array_equal(io.load(f"{tmp_path / model}_plain.mat:sr").numpy(), io.load(f"{tmp_path / model}_cube.mat:sr").numpy())
        values = widths[model, "cube"]
        assert np.isfinite(values).all() and (values >= 0).all() and values.mean() > 0
        assert np.ptp(values.mean(axis=(0, 1))) > 0  # one width per pixel and band
        # The output's units: a cube 1000 times brighter gets widths 1000 times wider.
        np.testing.assert_allclose(widths[model, "scaled"], 1000 * values, rtol=1e-3, atol=1e-3 * values.max())
    assert widths["bicubic", "cube"].shape == (48, 40, 5) and widths["attn1d2d.x2", "cube"].shape == (24, 20, 5)


def test_cube_uncertainty_tiled_equals_whole_and_a_killed_run_resumes(tmp_path, monkeypatch):
    cube, original = _cube(), store_module.write_result
    kwargs = dict(scale=2, model="bicubic", options=EngineOptions(quiet=True))
    upsample_to_store(cube, tmp_path / "whole.zarr", **with_engine(kwargs, tile=(64, 64)),
                      trust=TrustOptions(uncertainty=tmp_path / "uw.zarr"))
    calls = []

    def failing(array, region, result):
        calls.append(region)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        original(array, region, result)

    tiled = dict(**with_engine(kwargs, chunks=(8, 8), tile=(8, 8)), trust=TrustOptions(uncertainty=tmp_path / "ut.zarr"))
    monkeypatch.setattr(store_module, "write_result", failing)
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(cube, tmp_path / "tiled.zarr", **tiled)
    monkeypatch.setattr(store_module, "write_result", original)
    upsample_to_store(cube, tmp_path / "tiled.zarr", resume=True, **tiled)
    whole, parts = io.load(tmp_path / "uw.zarr").numpy(), io.load(tmp_path / "ut.zarr").numpy()
    assert whole.shape == (48, 40, 6) and np.allclose(whole, parts, atol=1e-5)


def _noisy_cube(rng, sigmas, size=64):
    """A faint smooth scene plus white noise of a known sigma per band (the noise makes the error).

    Every feature and error then scales with the band's sigma, so a calibration fitted at some
    sigmas covers 90 % at any other, band by band.
    """
    smooth = ndi.gaussian_filter(rng.random((size, size)), 8)
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    bands = [0.3 + 0.1 * b + 0.01 * smooth + rng.normal(0, sigma, smooth.shape) for b, sigma in enumerate(sigmas)]
    return np.stack(bands, -1).astype(np.float32)


def test_cube_coverage_is_nominal_with_known_noise(tmp_path, monkeypatch):
    from volsr.data.hsi import make_pair
    from volsr.engine import trust as trust_module
    from volsr.train.calibrate import cube_features
    from volsr.uncertainty import coverage, fit_calibration

    rng = np.random.default_rng(0)
    train = [cube_features("bicubic", _noisy_cube(rng, sigmas), 2, members=1)
             for sigmas in ((0.01, 0.02, 0.04), (0.005, 0.03, 0.015), (0.02, 0.01, 0.05))]  # fmt: skip
    cal = fit_calibration("bicubic", [f for f, _ in train], [e for _, e in train], members=1, modality="hsi")
    monkeypatch.setattr(trust_module, "calibration_for", lambda card, modality: cal)
    pair = make_pair(_noisy_cube(rng, (0.008, 0.025, 0.06, 0.003)), scale=2)  # levels the fit never saw
    lr = Volume(pair.lr, np.eye(4), ("i", "j", "band"))
    sr = io.load(upsample_to_store(lr, tmp_path / "sr.zarr", scale=2, model="bicubic",
                                   options=EngineOptions(quiet=True),
                                   trust=TrustOptions(uncertainty=tmp_path / "u.zarr"))).numpy()  # fmt: skip
    width, error = io.load(tmp_path / "u.zarr").numpy(), sr - pair.hr
    # Over six seeds of this set-up: 0.894-0.909 in all, 0.886-0.926 per band.
    assert coverage(width, error) == pytest.approx(0.9, abs=0.02)
    for band in range(4):  # each band's own noise level (0.3 % to 6 %): the widths follow it
        assert coverage(width[..., band], error[..., band]) == pytest.approx(0.9, abs=0.04)


def test_a_held_out_cube_is_covered_near_nominal(tmp_path):
    from volsr.data.hsi import load_cube, make_pair
    from volsr.datasets import shared_data_root
    from volsr.uncertainty import ause, coverage

    path = shared_data_root() / "hsi" / "sandiego" / "sandiego.mat"
    if not path.exists():
        pytest.skip(f"held-out cube not found at {path} (set VOLSR_DATA)")
    pair = make_pair(load_cube(f"{path}:data")[0], scale=4)
    lr = Volume(pair.lr, np.eye(4), ("i", "j", "band"))
    sr = io.load(upsample_to_store(lr, tmp_path / "sr.zarr", scale=4, model="bicubic",
                                   options=EngineOptions(quiet=True),
                                   trust=TrustOptions(uncertainty=tmp_path / "u.zarr"))).numpy()  # fmt: skip
    width, error = io.load(tmp_path / "u.zarr").numpy(), sr - pair.hr
    # bench/trust.py: 0.96 (bicubic x4; its cube calibration is fitted on other scenes only).
    assert 0.88 <= coverage(width, error) <= 0.98
    assert ause(width, error) < 0.5


def test_the_ensemble_output_beside_the_widths_is_the_plain_ensembles_bit_for_bit():
    from volsr.geometry import output_coordinates
    from volsr.models.ensemble import SelfEnsemble
    from volsr.models.trust import WithUncertainty, calibration_for

    net = create_model("attn1d2d.x2")
    x = torch.from_numpy(_cube((10, 8, 5)).numpy().transpose(2, 0, 1).copy())[None] / 100
    grid = (output_coordinates(10, 20), output_coordinates(8, 16))
    with torch.inference_mode():
        plain = SelfEnsemble(net, (2, 2))(x, grid)
        both = WithUncertainty(net, (2, 2), calibration_for(net.card, "hsi"), ensemble=True)(x, grid)
    assert torch.equal(both[:, :5], plain) and (both[:, 5:] > 0).all()


def _noise_scan(seed=3):
    """HR = 100 + white noise of sigma 4 (64 x 64 x 128), and its x4 thick slices along axis 2."""
    hr = (100 + 4 * np.random.default_rng(seed).standard_normal((64, 64, 128))).astype(np.float32)
    lr = Volume(thick_slice(hr, axis=2, factor=4).astype(np.float32), np.diag([1.0, 1.0, 4.0, 1.0]), ("i", "j", "k"))
    return hr, lr


def _wide_calibration(monkeypatch, transfer):
    """Every run gets U = 5 x the noise feature (3x too wide), with ``transfer`` as its per-scan step."""
    from volsr.engine import trust as trust_module
    from volsr.uncertainty import Calibration

    wide = {"spread": 0.0, "slope": 0.0, "bend": 0.0, "noise": 5.0, "constant": 0.0}
    calibration = Calibration("cubic", wide, scan_transfer=transfer)
    monkeypatch.setattr(trust_module, "calibration_for", lambda card, modality: calibration)


def test_the_per_scan_check_brings_a_too_wide_calibration_to_nominal_coverage(tmp_path, monkeypatch):
    # Noise only. A calibration 3x too wide (U = 5 sigma where 1.645 sigma holds 90 %) covers
    # everything; its per-scan step, told that self-pairs err as the real run does (t = 1,
    # q = 0), must bring coverage to about 0.9.
    from volsr.uncertainty import coverage

    hr, lr = _noise_scan()
    covered = {}
    for name, transfer in (("plain", None), ("checked", (1.0, 0.0))):
        _wide_calibration(monkeypatch, transfer)
        out = upsample_to_store(lr, tmp_path / f"{name}.zarr", scale=(1, 1, 4), model="cubic",
                                options=EngineOptions(quiet=True),
                                trust=TrustOptions(uncertainty=tmp_path / f"u_{name}.zarr"))  # fmt: skip
        covered[name] = coverage(io.load(tmp_path / f"u_{name}.zarr").numpy(), io.load(out).numpy() - hr)
    assert covered["plain"] > 0.99
    assert 0.85 <= covered["checked"] <= 0.95
    assert np.array_equal(io.load(tmp_path / "plain.zarr").numpy(), io.load(tmp_path / "checked.zarr").numpy())


def test_a_resumed_run_reuses_the_per_scan_check(tmp_path, monkeypatch):
    _, lr = _noise_scan()
    _wide_calibration(monkeypatch, (1.0, 0.0))
    kwargs = dict(scale=(1, 1, 4), model="cubic", options=EngineOptions(chunks=(16, 16, 32), tile=(16, 16, 32), quiet=True))
    original = _disk_full_at_the_third_write(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(lr, tmp_path / "a.zarr", **kwargs,
                          trust=TrustOptions(uncertainty=tmp_path / "ua.zarr"))
    monkeypatch.setattr(store_module, "write_result", original)
    fresh = store_module.scan_width_scale
    monkeypatch.setattr(store_module, "scan_width_scale", lambda *a: pytest.fail("the check ran again on resume"))
    upsample_to_store(lr, tmp_path / "a.zarr", resume=True, **kwargs,
                      trust=TrustOptions(uncertainty=tmp_path / "ua.zarr"))
    monkeypatch.setattr(store_module, "scan_width_scale", fresh)
    upsample_to_store(lr, tmp_path / "b.zarr", **kwargs, trust=TrustOptions(uncertainty=tmp_path / "ub.zarr"))
    assert io.load(tmp_path / "ua.zarr").numpy().tobytes() == io.load(tmp_path / "ub.zarr").numpy().tobytes()
