"""MATLAB reader/writer: real v5 cubes against scipy, v7.3 files in MATLAB's HDF5 layout."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from volsr.errors import FormatError, InvalidDataError
from volsr.io import check_output, files_read, load, save
from volsr.io import matlab as matlab_module
from volsr.io._common import SaveOptions
from volsr.io.matlab import load_matlab, save_matlab
from volsr.volume import Volume

DATA_ROOT = Path(os.environ.get("VOLSR_DATA", Path(__file__).parents[2].parent / "shared" / "data"))
CAVE = sorted((DATA_ROOT / "hsi" / "cave256").glob("*_ms_256.mat"))
GATORSENSE = DATA_ROOT / "hsi" / "gatorsense" / "an_hsi_image_sub_for_demo.mat"
needs_data = pytest.mark.skipif(not CAVE, reason=f"CAVE cubes not found under {DATA_ROOT}")


def _write_v73_by_hand(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A v7.3 file as MATLAB lays it out: 512-byte user block, C-order (reversed) dims."""
    classes = {np.dtype(np.uint16): b"uint16", np.dtype(np.float64): b"double"}
    with h5py.File(path, "w", userblock_size=512) as handle:
        for name, array in variables.items():
            dataset = handle.create_dataset(name, data=np.ascontiguousarray(array.T))
            dataset.attrs["MATLAB_class"] = np.bytes_(classes[array.dtype])
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, test".ljust(116) + bytes(8) + b"\x00\x02IM")


@needs_data
@pytest.mark.parametrize("path", CAVE, ids=lambda p: p.name)
def test_real_cave_cube_matches_scipy(path: Path) -> None:
    volume = load_matlab(path, None)  # the only array variable: NRD
    expected = scipy.io.loadmat(path)["NRD"]
    assert volume.axes == ("i", "j", "band") and volume.shape == (256, 256, 31)
    assert volume.dtype == expected.dtype == np.uint16
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    np.testing.assert_array_equal(volume.numpy(), expected)


@needs_data
def test_header_facts_do_not_read_voxels(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("voxels were read")

    monkeypatch.setattr(scipy.io, "loadmat", refuse)
    volume = load(f"{CAVE[0]}:NRD")
    assert volume.shape == (256, 256, 31) and volume.dtype == np.uint16


@pytest.mark.skipif(not GATORSENSE.exists(), reason=f"{GATORSENSE} not found")
def test_real_wavelengths_in_nm_are_kept() -> None:
    volume = load_matlab(GATORSENSE, "hsi_img_sub")
    expected = scipy.io.loadmat(GATORSENSE)["wavelengths"].ravel()
    assert expected.min() > 100  # the file stores nm
    np.testing.assert_array_equal(volume.wavelengths, expected)
    assert volume.shape == (51, 88, 72) and volume.dtype == np.float32


def test_wavelengths_in_micrometres_become_nm(tmp_path: Path) -> None:
    cube = np.zeros((3, 4, 3), np.float32)
    scipy.io.savemat(tmp_path / "c.mat", {"cube": cube, "wavelength": [0.45, 0.55, 0.65]})
    volume = load_matlab(tmp_path / "c.mat", None)
    np.testing.assert_allclose(volume.wavelengths, [450.0, 550.0, 650.0])


def test_wavelengths_of_wrong_length_are_ignored_with_warning(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "c.mat", {"cube": np.zeros((3, 4, 3)), "wl": [500.0, 600.0]})
    with pytest.warns(UserWarning, match="ignoring 'wl'.*2 values for 3 bands"):
        volume = load_matlab(tmp_path / "c.mat", "cube")
    assert volume.wavelengths is None


def test_v73_file_in_matlab_layout_reads_rows_cols_bands(tmp_path: Path) -> None:
    cube = np.random.default_rng(0).integers(0, 4000, size=(6, 5, 4)).astype(np.uint16)
    wavelengths = np.array([[400.0], [500.0], [600.0], [700.0]])  # MATLAB column vector
    _write_v73_by_hand(tmp_path / "c73.mat", {"cube": cube, "wavelengths": wavelengths})
    assert scipy.io.matlab.matfile_version(tmp_path / "c73.mat") == (2, 0)
    volume = load(f"{tmp_path / 'c73.mat'}:cube")
    assert volume.axes == ("i", "j", "band") and volume.shape == (6, 5, 4)
    assert volume.dtype == np.uint16
    np.testing.assert_array_equal(volume.numpy(), cube)
    np.testing.assert_array_equal(volume.wavelengths, wavelengths.ravel())


def test_v5_round_trip_data_dtype_affine_wavelengths(tmp_path: Path) -> None:
    cube = np.random.default_rng(1).normal(size=(7, 6, 3)).astype(np.float32)
    affine = np.diag([30.0, 30.0, 1.0, 1.0])
    volume = Volume(cube, affine, ("i", "j", "band"), wavelengths=[450.0, 550.0, 650.0])
    save(volume, f"{tmp_path / 'r.mat'}:cube")
    stored = scipy.io.loadmat(tmp_path / "r.mat")  # what MATLAB would see
    np.testing.assert_array_equal(stored["cube"], cube)
    np.testing.assert_array_equal(stored["wavelengths"], [[450.0], [550.0], [650.0]])
    back = load(f"{tmp_path / 'r.mat'}:cube")
    assert back.dtype == np.float32 and back.axes == ("i", "j", "band")
    np.testing.assert_array_equal(back.affine, affine)
    np.testing.assert_array_equal(back.wavelengths, [450.0, 550.0, 650.0])
    np.testing.assert_array_equal(back.numpy(), cube)


def test_band_axis_is_moved_last(tmp_path: Path) -> None:
    bands_first = np.arange(2 * 3 * 4, dtype=np.int16).reshape(4, 2, 3)
    volume = Volume(bands_first, np.eye(4), ("band", "i", "j"))
    save_matlab(volume, tmp_path / "b.mat", "x", SaveOptions())
    np.testing.assert_array_equal(
        load_matlab(tmp_path / "b.mat", "x").numpy(), bands_first.transpose(1, 2, 0)
    )


def test_v73_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matlab_module, "V73_MIN_BYTES", 0)  # force the large-array path
    cube = np.random.default_rng(2).integers(0, 60000, size=(9, 7, 5)).astype(np.uint16)
    volume = Volume(
        cube, np.eye(4), ("i", "j", "band"), wavelengths=[400.0, 500.0, 600.0, 700.0, 800.0]
    )
    save_matlab(volume, tmp_path / "big.mat", "cube", SaveOptions(chunks=(4, 4, 5)))
    assert scipy.io.matlab.matfile_version(tmp_path / "big.mat") == (2, 0)
    with h5py.File(tmp_path / "big.mat", "r") as handle:  # MATLAB's layout: reversed dims
        assert handle["cube"].shape == (5, 7, 9)
        assert handle["cube"].attrs["MATLAB_class"] == b"uint16"
        np.testing.assert_array_equal(handle["cube"][()], cube.T)
    back = load_matlab(tmp_path / "big.mat", None)
    np.testing.assert_array_equal(back.numpy(), cube)
    np.testing.assert_array_equal(back.wavelengths, [400.0, 500.0, 600.0, 700.0, 800.0])


@pytest.mark.parametrize("big", [False, True])
def test_logical_image_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big: bool
) -> None:
    if big:
        monkeypatch.setattr(matlab_module, "V73_MIN_BYTES", 0)
    mask = np.random.default_rng(3).random((5, 4)) > 0.5
    save_matlab(Volume(mask, np.eye(4), ("i", "j")), tmp_path / "m.mat", None, SaveOptions())
    back = load_matlab(tmp_path / "m.mat", "data")
    assert back.axes == ("i", "j") and back.dtype == np.uint8  # volsr reads bool as 0/1 uint8
    np.testing.assert_array_equal(back.numpy(), mask.astype(np.uint8))


def test_key_errors_list_variables(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "k.mat", {"a": np.zeros((2, 2)), "b": np.zeros((2, 2, 2))})
    with pytest.raises(FormatError, match=r"no variable 'c'.*variables: a 2x2 double, b 2x2x2"):
        load_matlab(tmp_path / "k.mat", "c")
    with pytest.raises(FormatError, match=r"holds 2 candidate arrays.*variables: a 2x2"):
        load_matlab(tmp_path / "k.mat", None)


def test_non_numeric_and_wrong_dimensionality(tmp_path: Path) -> None:
    scipy.io.savemat(
        tmp_path / "n.mat",
        {"text": "hello", "four": np.zeros((2, 2, 2, 2)), "z": np.zeros((1, 1)) * 1j},
    )
    with pytest.raises(FormatError, match="'text'.*is a char, not a numeric array"):
        load_matlab(tmp_path / "n.mat", "text")
    with pytest.raises(InvalidDataError, match=r"shape \(2, 2, 2, 2\): need rows x cols"):
        load_matlab(tmp_path / "n.mat", "four")
    with pytest.raises(FormatError, match=r"complex data \(complex double\) in variable 'z'"):
        load_matlab(tmp_path / "n.mat", "z")


def test_broken_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.mat").write_bytes(b"\x01\x02 not a mat file" * 20)
    with pytest.raises(FormatError, match="not a readable MAT-file"):
        load_matlab(tmp_path / "junk.mat", None)
    scipy.io.savemat(tmp_path / "full.mat", {"x": np.arange(5000.0).reshape(50, 100)})
    full = (tmp_path / "full.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(full[: len(full) - 100])
    with pytest.raises(FormatError, match="truncated MAT-file"):
        load_matlab(tmp_path / "cut.mat", "x")


def test_save_refuses_bad_names_and_shapes(tmp_path: Path) -> None:
    cube = Volume(np.zeros((2, 2, 2)), np.eye(4), ("i", "j", "band"))
    with pytest.raises(FormatError, match="'2cube' for .*a.mat is not a valid identifier"):
        save_matlab(cube, tmp_path / "a.mat", "2cube", SaveOptions())
    with pytest.raises(FormatError, match="'wavelengths' for .*a.mat is reserved for volsr's metadata"):
        save_matlab(cube, tmp_path / "a.mat", "wavelengths", SaveOptions())
    four = Volume(np.zeros((2, 2, 2, 2)), np.eye(4), ("i", "j", "k", "channel"))
    with pytest.raises(FormatError, match="rows x cols"):
        save_matlab(four, tmp_path / "a.mat", "x", SaveOptions())


def test_v73_header_facts_do_not_read_voxels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_v73_by_hand(tmp_path / "c73.mat", {"cube": np.zeros((6, 5, 4), np.uint16)})

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("voxels were read")

    monkeypatch.setattr(matlab_module.HDF5Array, "__getitem__", refuse)
    volume = load_matlab(tmp_path / "c73.mat", None)
    assert volume.shape == (6, 5, 4) and volume.dtype == np.uint16


# ---------------------------------------------------------------- hostile MAT-files


@pytest.mark.parametrize("compressed", [False, True])
def test_complex_v5_variable_is_refused_at_load(tmp_path: Path, compressed: bool) -> None:
    cube = np.arange(24.0).reshape(2, 3, 4)
    scipy.io.savemat(tmp_path / "c.mat", {"cube": cube + 1j * cube, "real": cube}, do_compression=compressed)
    with pytest.raises(FormatError, match=r"complex data \(complex double\) in variable 'cube' of .*c.mat.*magnitude"):
        load(f"{tmp_path / 'c.mat'}:cube")
    np.testing.assert_array_equal(load(f"{tmp_path / 'c.mat'}:real").numpy(), cube)


def test_complex_v73_variable_is_refused_at_load(tmp_path: Path) -> None:
    _write_v73_by_hand(tmp_path / "c.mat", {"cube": np.zeros((2, 3, 4))})
    pair = np.zeros((4, 3, 2), dtype=[("real", "f8"), ("imag", "f8")])  # MATLAB's complex layout
    with h5py.File(tmp_path / "c.mat", "r+") as handle:
        del handle["cube"]
        handle.create_dataset("cube", data=pair).attrs["MATLAB_class"] = np.bytes_("double")
    with pytest.raises(FormatError, match=r"complex data \(complex double\) in variable 'cube'"):
        load(f"{tmp_path / 'c.mat'}:cube")


def test_v73_variable_stored_in_another_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    raw = tmp_path / "raw.bin"
    np.arange(24.0).tofile(raw)
    mat = tmp_path / "in" / "x.mat"
    _write_v73_by_hand(mat, {"wl": np.array([[0.4, 0.5, 0.6, 0.7]])})
    with h5py.File(mat, "r+") as handle:
        cube = handle.create_dataset("cube", shape=(4, 3, 2), dtype="<f8", external=[(str(raw), 0, 192)])
        cube.attrs["MATLAB_class"] = np.bytes_("double")
        handle["linked"] = h5py.ExternalLink(str(tmp_path / "other.mat"), "/cube")
    with pytest.raises(FormatError, match=f"dataset /cube in .*x.mat stores its voxels in another file \\({raw}\\)"):
        load(f"{mat}:cube")
    with pytest.raises(FormatError, match=f"'/linked' in .*x.mat is an external link to {tmp_path / 'other.mat'}"):
        load(f"{mat}:linked")
    volume = load(f"{mat}:cube", allow_external=True)
    np.testing.assert_array_equal(volume.numpy(), np.arange(24.0).reshape(4, 3, 2).T)
    assert files_read(f"{mat}:cube", allow_external=True) == (mat.resolve(), raw.resolve())


@pytest.mark.parametrize(
    ("key", "message"),
    [("affine", "reserved for volsr's metadata"), ("WL", "reserved for volsr's metadata"),
     ("fwhm", "reserved"), ("end", "not a valid identifier"), ("_x", "not a valid identifier"),
     ("a.b", "not a valid identifier"), ("x" * 64, "not a valid identifier")],
)  # fmt: skip
def test_unusable_output_variable_names_are_refused_before_work(tmp_path: Path, key: str, message: str) -> None:
    with pytest.raises(FormatError, match=f"MATLAB variable name '{key}' for .*o.mat is {message}"):
        check_output(f"{tmp_path / 'o.mat'}:{key}")
    check_output(f"{tmp_path / 'o.mat'}:cube_2")


def test_logical_v5_variable_is_read_as_uint8(tmp_path: Path) -> None:
    mask = np.arange(12).reshape(3, 4) % 2 == 0
    scipy.io.savemat(tmp_path / "m.mat", {"mask": mask})
    assert scipy.io.whosmat(tmp_path / "m.mat") == [("mask", (3, 4), "logical")]  # independent check
    volume = load(f"{tmp_path / 'm.mat'}:mask")
    assert volume.dtype == np.uint8
    np.testing.assert_array_equal(volume.numpy(), mask.astype(np.uint8))
