"""Trust outputs of the engine: uncertainty (an array of the same tasks) and consistency."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from volsr import io
from volsr.acquisition import acquisition_from_spacing
from volsr.cli import main
from volsr.consistency import consistency_map, enforce_consistency
from volsr.degrade import thick_slice
from volsr.engine import store as store_module
from volsr.engine import upsample_to_store
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
    kwargs = dict(scale=(1, 1, 4), model="cubic", chunks=(8, 8, 8), quiet=True)
    plain = upsample_to_store(lr, tmp_path / "plain.nii.gz", **kwargs)
    out = upsample_to_store(lr, tmp_path / "sr.nii.gz", uncertainty=tmp_path / "u.nii.gz", **kwargs)
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
    whole = upsample_to_store(lr, tmp_path / "a.zarr", scale=(1, 1, 4), model="cubic", tile=(64, 64, 64),
                              uncertainty=tmp_path / "ua.zarr", quiet=True)  # fmt: skip
    tiled = upsample_to_store(lr, tmp_path / "b.zarr", scale=(1, 1, 4), model="cubic", chunks=(4, 4, 8),
                              tile=(4, 4, 8), uncertainty=tmp_path / "ub.zarr", quiet=True)  # fmt: skip
    assert np.allclose(io.load(tmp_path / "ua.zarr").numpy(), io.load(tmp_path / "ub.zarr").numpy(), atol=1e-5)
    assert np.allclose(io.load(whole).numpy(), io.load(tiled).numpy(), atol=1e-4)
    assert "uncertainty" not in [p.name for p in (tmp_path / "a.zarr").iterdir()]  # its own file, not the image's


def test_a_run_with_uncertainty_resumes_bit_identically(tmp_path, monkeypatch):
    lr, original = _lr(), store_module.write_result
    calls = []

    def failing(array, region, result):
        calls.append(region)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        original(array, region, result)

    kwargs = dict(scale=(1, 1, 4), model="cubic", chunks=(8, 8, 8), tile=(8, 8, 8), quiet=True)
    monkeypatch.setattr(store_module, "write_result", failing)
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(lr, tmp_path / "a.zarr", uncertainty=tmp_path / "ua.nii.gz", **kwargs)
    assert not (tmp_path / "ua.nii.gz").exists()
    monkeypatch.setattr(store_module, "write_result", original)
    upsample_to_store(lr, tmp_path / "a.zarr", uncertainty=tmp_path / "ua.nii.gz", resume=True, **kwargs)
    upsample_to_store(lr, tmp_path / "b.zarr", uncertainty=tmp_path / "ub.nii.gz", **kwargs)
    assert io.load(tmp_path / "ua.nii.gz").numpy().tobytes() == io.load(tmp_path / "ub.nii.gz").numpy().tobytes()
    assert io.load(tmp_path / "a.zarr").numpy().tobytes() == io.load(tmp_path / "b.zarr").numpy().tobytes()
    with pytest.raises(Exception, match="differ|changed|match"):
        upsample_to_store(lr, tmp_path / "b.zarr", uncertainty=tmp_path / "other.nii.gz", resume=True, **kwargs)


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
                                          model="cubic", quiet=True))  # fmt: skip
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


def test_refusals_are_one_line_before_any_work(tmp_path, capsys):
    lr = _lr()
    with pytest.raises(ValueError, match="ships no uncertainty calibration"):
        upsample_to_store(lr, tmp_path / "a.zarr", scale=(1, 1, 4), model=_Mine(), uncertainty=tmp_path / "u.zarr",
                          quiet=True)  # fmt: skip
    cube = Volume(np.ones((8, 8, 5), np.float32), np.eye(4), ("i", "j", "band"))
    with pytest.raises(ValueError, match="spectral cubes have no calibration"):
        upsample_to_store(cube, tmp_path / "b.zarr", scale=2, model="cubic", uncertainty=tmp_path / "u.zarr",
                          quiet=True)  # fmt: skip
    with pytest.raises(ValueError, match="another output of this run"):
        upsample_to_store(lr, tmp_path / "c.zarr", scale=(1, 1, 4), model="cubic", uncertainty=tmp_path / "c.zarr",
                          quiet=True)  # fmt: skip
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
    kwargs = dict(scale=(1, 1, 4), model="cubic", chunks=(8, 8, 8), tile=(8, 8, 8), quiet=True)
    upsample_to_store(lr, tmp_path / "a.zarr", uncertainty=tmp_path / "ua.zarr", **kwargs)
    upsample_to_store(lr, tmp_path / "b.zarr", uncertainty=tmp_path / "ub.zarr", workers=2, **kwargs)
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
