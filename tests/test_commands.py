"""What each sub-command computes, run through ``volsr.cli.main`` and checked independently.

Expectations come from nibabel (headers, affines), SciPy (MAT-files), analytic block means
of box-profile thick slices, the field-of-view rule of the geometry contract written out by
hand, and the metric functions of :mod:`volsr.metrics` called directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import scipy.io
from nibabel.testing import data_path

from volsr import io, metrics
from volsr.cli import main
from volsr.commands import checked_finite, describe
from volsr.degrade import degrade
from volsr.engine import upsample
from volsr.errors import InvalidDataError
from volsr.volume import Volume

NIBABEL_DATA = Path(data_path)
AFFINE = np.array(
    [[1.0, 0.0, 0.0, -5.0], [0.0, 1.2, 0.0, 3.0], [0.0, 0.0, 1.5, 2.0], [0.0, 0.0, 0.0, 1.0]]
)


def _smooth(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth positive float32 volume (sum of low-frequency cosines) plus a little texture."""
    grids = np.meshgrid(*[np.linspace(0, np.pi, n) for n in shape], indexing="ij")
    values = 2.0 + sum(np.cos((a + 1) * g) for a, g in enumerate(grids))
    values += 0.05 * np.random.default_rng(seed).random(shape)
    return values.astype(np.float32)


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


# ----------------------------------------------------------------------------- info


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_info_json_matches_nibabel(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = NIBABEL_DATA / name
    facts = json.loads(_ok(["info", str(path), "--json"], capsys))
    reference = nib.load(path)
    assert facts["shape"] == list(reference.shape)
    assert facts["format"] == "nifti"
    np.testing.assert_allclose(facts["affine"], reference.affine, atol=1e-6)
    np.testing.assert_allclose(facts["spacing_mm"], reference.header.get_zooms()[:3], atol=1e-5)
    assert facts["orientation"] == "".join(nib.aff2axcodes(reference.affine))


def test_info_text_lists_shape_and_affine(capsys: pytest.CaptureFixture[str]) -> None:
    path = NIBABEL_DATA / "anatomical.nii"
    out = _ok(["info", str(path)], capsys)
    reference = nib.load(path)
    assert f"shape: {list(reference.shape)}" in out
    rows = [line.split() for line in out.splitlines()[-4:]]
    np.testing.assert_allclose(np.array(rows, dtype=float), reference.affine, atol=1e-4)


def test_info_of_a_spectral_cube_reports_bands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scipy.io.savemat(tmp_path / "cube.mat", {"cube": np.ones((12, 10, 7))})
    facts = json.loads(_ok(["info", f"{tmp_path / 'cube.mat'}:cube", "--json"], capsys))
    assert facts["shape"] == [12, 10, 7]
    assert facts["axes"] == ["i", "j", "band"]
    assert facts["bands"] == 7


def test_describe_reads_no_voxels() -> None:
    def boom(block: np.ndarray) -> np.ndarray:
        raise AssertionError("describe read voxels")

    lazy = da.ones((4, 5, 6), chunks=2).map_blocks(boom, dtype=float, meta=np.empty((0, 0, 0)))
    facts = describe(Volume(lazy, np.diag([2.0, 3.0, 4.0, 1.0]), ("i", "j", "k")), "x.zarr")
    assert facts["shape"] == [4, 5, 6]
    assert facts["spacing_mm"] == [2.0, 3.0, 4.0]
    assert facts["format"] == "zarr"
    assert facts["size_mb"] == pytest.approx(4 * 5 * 6 * 8 / 1e6, abs=1e-3)


# -------------------------------------------------------------------------- convert


def test_convert_nifti_zarr_nifti_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = NIBABEL_DATA / "anatomical.nii"
    before = _stamp(source)
    zarr_path, back = tmp_path / "a.zarr", tmp_path / "back.nii.gz"
    _ok(["convert", str(source), str(zarr_path), "--chunks", "16,16,8"], capsys)
    assert zarr_path.is_dir()
    _ok(["convert", str(zarr_path), str(back)], capsys)
    reference, result = nib.load(source), nib.load(back)
    np.testing.assert_array_equal(np.asarray(result.dataobj), np.asarray(reference.dataobj))
    np.testing.assert_allclose(result.affine, reference.affine, atol=1e-6)
    assert _stamp(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "back.nii.gz"]


@pytest.mark.parametrize("command", ["convert", "degrade", "upsample"])
def test_nonfinite_voxels_refused_or_filled(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _smooth((8, 8, 8))
    data[0, 0, :2] = np.nan
    data[3, 3, 3] = -np.inf
    source = _write(tmp_path / "in.nii.gz", data)
    extra = {"convert": [], "degrade": ["--factor", "1,1,2"], "upsample": ["--scale", "1,1,2"]}
    argv = [command, str(source), str(tmp_path / "out.nii.gz"), *extra[command]]
    assert main(argv) == 2
    assert "3 NaN/Inf voxels" in capsys.readouterr().err
    assert not (tmp_path / "out.nii.gz").exists()
    _ok([*argv, "--fill-nonfinite", "0"], capsys)
    out = nib.load(tmp_path / "out.nii.gz").get_fdata()
    assert np.isfinite(out).all()
    if command == "convert":
        expected = np.where(np.isfinite(data), data, 0.0)
        np.testing.assert_array_equal(out, expected)


def test_checked_finite_counts_and_fills() -> None:
    values = np.array([[[np.nan, 1.0, np.inf, -np.inf]]])
    volume = Volume(values, np.eye(4), ("i", "j", "k"))
    with pytest.raises(InvalidDataError, match="^3 NaN/Inf voxels"):
        checked_finite(volume, None)
    np.testing.assert_array_equal(checked_finite(volume, 7.0).numpy(), [[[7.0, 1.0, 7.0, 7.0]]])
    finite = Volume(np.ones((2, 2, 2)), np.eye(4), ("i", "j", "k"))
    assert checked_finite(finite, None) is finite


# -------------------------------------------------------------------------- degrade


def test_degrade_then_upsample_lands_on_the_original_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _smooth((10, 12, 18))
    source = _write(tmp_path / "hr.nii.gz", data)
    before = _stamp(source)
    lr_path, sr_path = tmp_path / "lr.nii.gz", tmp_path / "sr.nii.gz"
    _ok(["degrade", str(source), str(lr_path), "--factor", "1,1,4", "--profile", "box"], capsys)
    lr = nib.load(lr_path)
    assert lr.shape == (10, 12, 4)  # floor(18 / 4) slices
    # box slices of width 4 voxels: LR slice k is the mean of HR slices 4k..4k+3
    block_means = data[:, :, :16].reshape(10, 12, 4, 4).mean(axis=3)
    np.testing.assert_allclose(lr.get_fdata(), block_means, rtol=1e-5)
    # slice centre = middle of HR voxels 0..3 (z = 2 + 1.5 * 1.5), spacing 4 * 1.5 mm
    expected_lr = AFFINE.copy()
    expected_lr[2, 2], expected_lr[2, 3] = 6.0, 4.25
    np.testing.assert_allclose(lr.affine, expected_lr, atol=1e-6)
    _ok(["upsample", str(lr_path), str(sr_path), "--scale", "1,1,4"], capsys)
    sr = nib.load(sr_path)
    assert sr.shape == (10, 12, 16)  # the covered leading sub-grid of the HR volume
    assert np.allclose(sr.affine, AFFINE, atol=1e-6)
    assert _stamp(source) == before


def test_degrade_thickness_and_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _smooth((6, 6, 16))
    source = _write(tmp_path / "hr.nii.gz", data)
    out = tmp_path / "lr.nii.gz"
    # 1.5 mm thick box slices every 6 mm: centred between HR voxels 4k+1 and 4k+2
    _ok(["degrade", str(source), str(out), "--factor", "1,1,4", "--thickness", "1.5",
         "--gap", "4.5", "--profile", "box"], capsys)
    expected = (data[:, :, 1::4] + data[:, :, 2::4]) / 2
    np.testing.assert_allclose(nib.load(out).get_fdata(), expected, rtol=1e-5)
    assert main(["degrade", str(source), str(tmp_path / "x.nii.gz"), "--factor", "1,1,4",
                 "--thickness", "3", "--gap", "1"]) == 2
    err = capsys.readouterr().err
    assert "thickness 3.0 mm + gap 1.0 mm = 4.0 mm" in err
    assert "6 mm" in err
    assert main(["degrade", str(source), str(tmp_path / "x.nii.gz"), "--factor", "1,1,4",
                 "--method", "gaussian", "--thickness", "6"]) == 2
    assert "apply to method slice only" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


def test_degrade_noise_is_seeded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write(tmp_path / "hr.nii.gz", np.full((16, 16, 16), 100.0, np.float32))
    base = ["degrade", str(source)]
    options = ["--factor", "1,1,4", "--snr", "20"]
    paths = {name: tmp_path / f"{name}.nii" for name in ("a", "b", "c")}
    _ok([*base, str(paths["a"]), *options, "--seed", "3"], capsys)
    _ok([*base, str(paths["b"]), *options, "--seed", "3"], capsys)
    _ok([*base, str(paths["c"]), *options, "--seed", "4"], capsys)
    assert paths["a"].read_bytes() == paths["b"].read_bytes()
    assert paths["a"].read_bytes() != paths["c"].read_bytes()
    # SNR 20 dB on a constant 100: sigma = 100 / 10 (magnitude noise std ~ sigma at high SNR)
    noisy = nib.load(paths["a"]).get_fdata()
    assert noisy.std() == pytest.approx(10.0, rel=0.1)
    assert noisy.mean() == pytest.approx(100.5, abs=1.0)


def test_degrade_other_methods_keep_the_field_of_view() -> None:
    volume = Volume(_smooth((8, 8, 8)), AFFINE, ("i", "j", "k"))
    for method in ("kspace", "gaussian", "bicubic"):
        result = degrade(volume, factors=(2, 2, 1), method=method)
        assert result.shape == (4, 4, 8), method
        # first-voxel edge of the field of view is unchanged: origin - spacing / 2
        np.testing.assert_allclose(
            result.affine[:3, 3] - np.diag(result.affine)[:3] / 2,
            AFFINE[:3, 3] - np.diag(AFFINE)[:3] / 2, atol=1e-6, err_msg=method,
        )


# ------------------------------------------------------------------------- upsample


def test_upsample_target_spacing_keeps_the_field_of_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "in.nii.gz", _smooth((10, 12, 16)))
    out = tmp_path / "out.nii.gz"
    _ok(["upsample", str(source), str(out), "--target-spacing", "0.5,1.2,0.75",
         "--model", "linear"], capsys)
    result = nib.load(out)
    assert result.shape == (20, 12, 32)
    np.testing.assert_allclose(result.header.get_zooms(), (0.5, 1.2, 0.75), atol=1e-6)
    # the outer edges of the first and last voxels stay where they were
    low = AFFINE[:3, 3] - np.diag(AFFINE)[:3] / 2
    new_low = result.affine[:3, 3] - np.diag(result.affine)[:3] / 2
    np.testing.assert_allclose(new_low, low, atol=1e-6)


def test_upsample_of_an_image_defaults_to_cubic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _smooth((10, 12, 1))[:, :, 0]
    source = _write(tmp_path / "slice.nii.gz", image)
    out = tmp_path / "out.nii.gz"
    assert main(["upsample", str(source), str(out), "--scale", "2"]) == 0
    assert "takes single-channel 3-D volumes" in capsys.readouterr().err
    expected = upsample(io.load(str(source)), scale=2, model="cubic").numpy()
    np.testing.assert_allclose(nib.load(out).get_fdata(), expected, atol=1e-6)


def test_a_default_model_fallback_is_announced_before_the_run_even_when_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from volsr.engine import store

    source = _write(tmp_path / "v.nii.gz", _smooth((10, 12, 4)))
    said_before_work = []
    original = store._run
    monkeypatch.setattr(store, "_run", lambda *a: said_before_work.append(capsys.readouterr().err) or original(*a))
    assert main(["upsample", str(source), str(tmp_path / "o.nii.gz"), "--scale", "1,1,8", "--quiet"]) == 0
    assert said_before_work == ["no shipped MRI network for scale 1x1x8: using cubic (see `volsr models`)\n"]
    assert main(["upsample", str(source), str(tmp_path / "p.nii.gz"), "--scale", "1,1,2", "--model", "linear"]) == 0
    assert said_before_work[1].startswith("model: linear\n")


def test_upsample_spectral_mat_cube_keeps_bands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    levels = np.arange(1.0, 8.0)  # band b is constant b + 1
    cube = np.broadcast_to(levels, (12, 12, 7)).copy()
    cube[:, :, 3] += np.random.default_rng(5).random((12, 12))
    scipy.io.savemat(tmp_path / "cube.mat", {"cube": cube})
    before = _stamp(tmp_path / "cube.mat")
    status = main(["upsample", f"{tmp_path / 'cube.mat'}:cube", f"{tmp_path / 'sr.mat'}:sr",
                   "--scale", "2", "--model", "bicubic"])  # (the x2 default is a network)
    err = capsys.readouterr().err
    assert status == 0, err
    assert "model: bicubic" in err
    result = scipy.io.loadmat(tmp_path / "sr.mat")["sr"]
    assert result.shape == (24, 24, 7)
    for band in (0, 1, 2, 4, 5, 6):  # interpolation resamples bands independently: constants stay
        np.testing.assert_allclose(result[:, :, band], levels[band], rtol=1e-5)
    assert _stamp(tmp_path / "cube.mat") == before


# ------------------------------------------------------------------------- evaluate


def _parse_table(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in (line.split() for line in text.splitlines())}


def test_evaluate_matches_the_metric_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = _smooth((16, 16, 16))
    prediction = reference + 0.1 * np.random.default_rng(1).standard_normal(reference.shape)
    prediction = prediction.astype(np.float32)
    mask = (reference > np.median(reference)).astype(np.uint8)
    paths = [_write(tmp_path / f"{n}.nii.gz", a) for n, a in
             (("ref", reference), ("pred", prediction), ("mask", mask))]
    report = tmp_path / "m.json"
    status = main(["evaluate", "--reference", str(paths[0]), "--prediction", str(paths[1]),
                   "--mask", str(paths[2]), "--json", str(report)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    ref, est, inside = reference.astype(np.float64), prediction.astype(np.float64), mask != 0
    peak = float(ref.max() - ref.min())
    expected = {
        "psnr": metrics.psnr(ref, est, data_range=peak),
        "ssim": metrics.ssim(ref, est, data_range=peak),
        "nrmse": metrics.nrmse(ref, est),
        "psnr_foreground": metrics.psnr(ref, est, data_range=peak, mask=inside),
        "ssim_foreground": metrics.ssim(ref, est, data_range=peak, mask=inside),
        "nrmse_foreground": metrics.nrmse(ref, est, mask=inside),
    }
    written = json.loads(report.read_text())
    assert set(written) == set(expected) | {"conventions"}
    assert written["conventions"]["data_range"] == peak and written["conventions"]["reference_crop"] is None
    assert written["conventions"]["data_range_from"] == "max - min of the reference"
    for name, value in expected.items():
        assert written[name] == pytest.approx(value, rel=1e-9), name
    printed = _parse_table(captured.out)
    for name, value in expected.items():
        assert printed[name] == pytest.approx(value, rel=1e-5), name
    assert f"data range: {peak:.6g}" in captured.err


def test_evaluate_crops_the_reference_to_a_leading_sub_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = _smooth((16, 16, 20))
    prediction = reference[:, :, :14] + np.float32(0.05)
    ref_path = _write(tmp_path / "ref.nii.gz", reference)
    pred_path = _write(tmp_path / "pred.nii.gz", prediction)
    status = main(["evaluate", "--reference", str(ref_path), "--prediction", str(pred_path),
                   "--data-range", "4"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "reference cropped" in captured.err
    printed = _parse_table(captured.out)
    cropped = reference[:, :, :14].astype(np.float64)
    expected = metrics.psnr(cropped, prediction.astype(np.float64), data_range=4.0)
    assert printed["psnr"] == pytest.approx(expected, rel=1e-5)
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.0
    _write(pred_path, prediction, shifted)
    assert main(["evaluate", "--reference", str(ref_path), "--prediction", str(pred_path)]) == 2
    assert "reference grid (16, 16, 20) does not match the prediction grid (16, 16, 14)" in capsys.readouterr().err


# --------------------------------------------------------------------- models, demo


def test_models_lists_the_baselines(capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok(["models"], capsys)
    names = {line.split()[0] for line in out.splitlines()[1:]}
    assert {"nearest", "linear", "bicubic", "cubic", "lanczos"} <= names
    assert out.splitlines()[0].split()[:3] == ["name", "kind", "modality"]


def test_models_lists_a_weights_file_used_in_the_same_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from volsr.models.files import register_model_file
    from volsr.models.weights import WEIGHTS_DIR

    card = register_model_file(WEIGHTS_DIR / "mdcsrn_t1.safetensors")
    rows = {line.split()[0]: line.split() for line in _ok(["models"], capsys).splitlines()[1:]}
    assert rows[card.name][6] == "-"  # a weights file ships no model card


def test_demo_command_passes_its_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import volsr.demo

    calls = []

    def fake(outdir: Path, *, factor: float, overwrite: bool) -> str:
        calls.append((outdir, factor, overwrite))
        return "demo table"

    monkeypatch.setattr(volsr.demo, "run_demo", fake)
    assert _ok(["demo", str(tmp_path / "d"), "--factor", "3", "--overwrite"], capsys) == (
        "demo table\n"
    )
    assert calls == [(tmp_path / "d", 3.0, True)]


def test_degrade_says_what_it_did_and_gives_float32_for_integer_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "i.nii.gz", (_smooth((12, 12, 16)) * 1000).astype(np.int16))
    out = _ok(["degrade", str(source), str(tmp_path / "lr.nii.gz"), "--factor", "1,1,4", "--profile", "box",
               "--snr", "25", "--seed", "3"], capsys)  # fmt: skip
    assert "float32" in out and "thick slices, box profile" in out and "SNR 25 dB (seed 3)" in out
    assert io.load(tmp_path / "lr.nii.gz").dtype == np.float32


def test_a_target_spacing_the_grid_must_round_is_announced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _smooth((10, 10, 7))
    source = tmp_path / "t.nii.gz"
    io.save(Volume(data, np.diag([1.0, 1.0, 4.2, 1.0]), ("i", "j", "k")), source)
    assert main(["upsample", str(source), str(tmp_path / "o.nii.gz"), "--target-spacing", "1,1,1",
                 "--model", "linear", "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    # 7 x 4.2 mm = 29.4 mm: 29 voxels over the same field of view are 29.4 / 29 = 1.0138 mm.
    assert "axis 2: 7 x 4.2 mm holds 29.4 voxels, so the output has 29 at 1.014 mm" in err
    assert "axis 0" not in err and "axis 1" not in err
    assert io.load(tmp_path / "o.nii.gz").spacing[2] == pytest.approx(29.4 / 29)


def test_help_shows_defaults_and_describes_positionals(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["degrade", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: slice)" in text and "(default: gaussian)" in text and "(default: 0.0)" in text
    assert "input file: .nii/.nii.gz" in text and "(default: None)" not in text


def test_missing_zarr_chunks_are_counted_by_info_and_warned_by_upsample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "v.zarr"
    io.save(Volume(_smooth((8, 8, 8)), np.eye(4), ("i", "j", "k")), store, chunks=(4, 8, 8))
    chunk = next(p for p in sorted((store / "0").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.unlink()  # one of the two chunks lost: it reads as the fill value
    facts = json.loads(_ok(["info", str(store), "--json"], capsys))
    assert facts["missing_chunks"].startswith("1 of 2")
    with pytest.warns(UserWarning, match="1 of 2 chunks of .* are missing on disk; they read as the store's fill"):
        assert main(["upsample", str(store), str(tmp_path / "o.nii.gz"), "--scale", "2", "--model", "linear",
                     "--quiet"]) == 0  # fmt: skip


def test_upsample_prints_the_acquisition_model_from_flags_or_a_sidecar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sub-01_T1w.nii.gz"
    io.save(Volume(_smooth((12, 12, 6)), np.diag([1.0, 1.0, 4.0, 1.0]), ("i", "j", "k")), source)
    (tmp_path / "sub-01_T1w.json").write_text(json.dumps({"SliceThickness": 3.5, "SpacingBetweenSlices": 4.0}))
    common = ["--scale", "1,1,4", "--model", "linear"]
    assert main(["upsample", str(source), str(tmp_path / "a.nii.gz"), *common]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("acquisition:"))
    assert "slices along axis 2, thickness 3.5 mm (sidecar), gap 0.5 mm" in line
    assert main(["upsample", str(source), str(tmp_path / "b.nii.gz"), *common, "--thickness", "3",
                 "--gap", "1", "--profile", "box"]) == 0  # fmt: skip
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("acquisition:"))
    assert "thickness 3 mm (flag), gap 1 mm" in line and "box profile" in line
    cube = tmp_path / "cube.mat"
    scipy.io.savemat(cube, {"cube": np.ones((8, 8, 5))})
    assert main(["upsample", f"{cube}:cube", str(tmp_path / "c.mat:sr"), "--scale", "2", "--model", "linear",
                 "--thickness", "3"]) == 2  # fmt: skip
    assert "describe MRI slices" in capsys.readouterr().err
