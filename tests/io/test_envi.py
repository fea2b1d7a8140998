"""ENVI reader/writer, checked against hand-written files and ``spectral.envi`` as a reference."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

from volsr.errors import FormatError, GeometryError, OutputExistsError
from volsr.io import envi as envi_io
from volsr.io import files_read, load, save, writable_dtype
from volsr.io.envi import load_envi, parse_header
from volsr.volume import Volume

# The hand-written headers use upper-case keys on purpose (ENVI keys are case-insensitive).
pytestmark = pytest.mark.filterwarnings("ignore:Parameters with non-lowercase names:UserWarning")

#: File order of an interleave, from rows x cols x bands.
FILE_ORDER = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}
CODES = {np.uint8: 1, np.int16: 2, np.int32: 3, np.float32: 4, np.float64: 5,
         np.uint16: 12, np.uint32: 13, np.int64: 14, np.uint64: 15}  # fmt: skip


def write_by_hand(folder: Path, cube: np.ndarray, *, interleave="bsq", byte_order=0,
                  offset=0, extra="", data_name="cube.img") -> Path:  # fmt: skip
    """An ENVI pair written with plain NumPy (independent of the writer under test)."""
    lines, samples, bands = cube.shape
    dtype = cube.dtype.newbyteorder("<" if byte_order == 0 else ">")
    raw = np.ascontiguousarray(cube.transpose(FILE_ORDER[interleave])).astype(dtype)
    (folder / data_name).write_bytes(b"\x07" * offset + raw.tobytes())
    header = folder / "cube.hdr"
    header.write_text(
        f"ENVI\nsamples = {samples}\nlines   = {lines}\nbands = {bands}\nheader offset = {offset}\n"
        f"data type = {CODES[cube.dtype.type]}\nINTERLEAVE = {interleave.upper()}\n"
        f"byte order = {byte_order}\n{extra}"
    )
    return header


def random_cube(rng: np.random.Generator, dtype, shape=(5, 6, 4)) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), shape, endpoint=True).astype(
        dtype
    )


def hippo_header() -> Path:
    spec = importlib.util.find_spec("napari_hippo")  # locates the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("napari-hippo (real ENVI test cube) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "testdata" / "image.hdr"


@pytest.fixture
def spectral_envi():
    """The independent reference reader (only the tests that compare against it need it)."""
    return pytest.importorskip("spectral.io.envi", reason="spectral is the reference reader")


def test_parse_header_lists_case_and_comments():
    text = "ENVI\n; a comment\nDescription = {two\n  lines}\nWavelength   Units = Micrometers\n\nfwhm = {0.1,\n0.2 ,\n 0.3}\n"
    fields = parse_header(text)
    assert fields == {"description": "{two lines}", "wavelength units": "Micrometers",
                      "fwhm": "{0.1, 0.2 , 0.3}"}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HDF\nsamples = 1", "first line"),
        ("ENVI\nsamples 4", "no '='"),
        ("ENVI\nfwhm = {1,\n2", "never closes"),
    ],
)
def test_parse_header_rejects_broken_text(text, message):
    with pytest.raises(FormatError, match=message):
        parse_header(text)


@pytest.mark.parametrize("byte_order", [0, 1])
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_reads_hand_written_files_like_spectral(tmp_path, spectral_envi, interleave, byte_order):
    rng = np.random.default_rng(7)
    for dtype in CODES:
        folder = tmp_path / np.dtype(dtype).name
        folder.mkdir()
        cube = random_cube(rng, dtype)
        header = write_by_hand(
            folder, cube, interleave=interleave, byte_order=byte_order, offset=16
        )
        volume = load(header)
        reference = spectral_envi.open(header, folder / "cube.img").open_memmap(interleave="bip")
        assert volume.axes == ("i", "j", "band")
        assert volume.dtype == np.dtype(dtype) and volume.dtype.isnative
        np.testing.assert_array_equal(volume.numpy(), cube)
        np.testing.assert_array_equal(volume.numpy(), reference)


@pytest.mark.parametrize("byte_order", ["0", "1"])
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_round_trip_keeps_interleave_byte_order_and_spectra(
    tmp_path, spectral_envi, interleave, byte_order
):
    rng = np.random.default_rng(3)
    for dtype in (np.uint16, np.int32, np.float32, np.float64):
        cube = random_cube(rng, dtype, (4, 7, 3))
        volume = Volume(cube, np.eye(4), ("i", "j", "band"), wavelengths=[450.5, 550, 650.25],
                        fwhm=[10, 11, 12], meta={"envi": {"interleave": interleave, "byte order": byte_order},
                                                 "reflectance_scale_factor": 10000.0})  # fmt: skip
        header = save(volume, tmp_path / f"{np.dtype(dtype).name}.hdr")
        back = load(header)
        np.testing.assert_array_equal(back.numpy(), cube)
        np.testing.assert_array_equal(back.wavelengths, [450.5, 550, 650.25])
        np.testing.assert_array_equal(back.fwhm, [10, 11, 12])
        assert back.meta["reflectance_scale_factor"] == 10000.0
        reference = spectral_envi.open(header, header.with_suffix(".img"))
        assert (reference.interleave, reference.byte_order) == (
            {"bsq": 0, "bil": 1, "bip": 2}[interleave],
            int(byte_order),
        )
        np.testing.assert_array_equal(reference.open_memmap(interleave="bip"), cube)
        assert [float(w) for w in reference.metadata["wavelength"]] == [450.5, 550, 650.25]


def test_real_cube_from_napari_hippo(tmp_path, spectral_envi):
    header = hippo_header()
    volume = load(header)
    reference = spectral_envi.open(header, header.with_suffix(".dat"))
    assert volume.shape == (38, 23, 450) and volume.dtype == np.uint16
    np.testing.assert_array_equal(volume.numpy(), reference.open_memmap(interleave="bip"))
    np.testing.assert_allclose(
        volume.wavelengths, [float(w) for w in reference.metadata["wavelength"]]
    )
    assert volume.wavelengths[0] == pytest.approx(378.19, abs=0.01)
    assert volume.wavelengths[-1] == pytest.approx(2503.73, abs=0.01)
    np.testing.assert_allclose(volume.fwhm[:3], 3.36)
    # Scale factor and ignore value are reported, not applied: raw integers stay as stored.
    assert volume.meta["reflectance_scale_factor"] == 65535.0
    assert volume.meta["nodata"] == 0.0
    assert volume.meta["envi"]["sensor type"] == "Fenix"

    out = save(volume.crop((slice(None), slice(None), slice(0, 100))), tmp_path / "crop.hdr")
    back = load(out)
    np.testing.assert_array_equal(back.numpy(), volume.numpy()[:, :, :100])
    np.testing.assert_array_equal(back.wavelengths, volume.wavelengths[:100])
    assert back.meta["envi"]["sensor type"] == "Fenix"
    assert "default bands" not in back.meta["envi"]  # {287,262,244} no longer exist
    assert spectral_envi.open(out, out.with_suffix(".img")).metadata["sensor type"] == "Fenix"


@pytest.mark.parametrize(
    ("units", "written", "expected"),
    [("wavelength units = Micrometers\n", [0.45, 2.5], [450, 2500]),
     ("", [0.45, 2.5], [450, 2500]),  # no units, all < 100: micrometres
     ("", [450, 2500], [450, 2500]),
     ("wavelength units = nm\n", [0.45, 2.5], [0.45, 2.5])],
)  # fmt: skip
def test_wavelength_units(tmp_path, units, written, expected):
    extra = units + f"wavelength = {{{written[0]}, {written[1]}}}\nfwhm = {{0.01, 0.02}}\n"
    header = write_by_hand(tmp_path, np.zeros((2, 2, 2), np.uint8), extra=extra)
    volume = load(header)
    np.testing.assert_allclose(volume.wavelengths, expected)
    np.testing.assert_allclose(volume.fwhm, np.array([0.01, 0.02]) * expected[0] / written[0])


def test_unknown_wavelength_unit_is_kept_raw(tmp_path):
    extra = "wavelength units = Index\nwavelength = {1, 2}\n"
    volume = load(write_by_hand(tmp_path, np.zeros((2, 2, 2), np.uint8), extra=extra))
    assert volume.wavelengths is None
    assert volume.meta["envi"]["wavelength"] == "{1, 2}"


def test_map_info_gives_pixel_centres_in_mm(tmp_path):
    extra = (
        "map info = {UTM, 2, 3, 500000.0, 4000000.0, 30.0, 20.0, 13, North, WGS-84, units=Meters}\n"
    )
    header = write_by_hand(tmp_path, np.zeros((4, 5, 1), np.uint8), extra=extra)
    volume = load(header)
    for i, j in [(0, 0), (3, 4)]:
        # Tie point: 1-based corner coordinate (2, 3) sits at (500000, 4000000) m.
        east = 500000.0 + (j + 1.5 - 2) * 30.0
        north = 4000000.0 - (i + 1.5 - 3) * 20.0
        np.testing.assert_allclose(volume.affine @ [i, j, 0, 1], [east * 1e3, north * 1e3, 0, 1])
    out = save(volume.crop((slice(1, 4), slice(2, 5))), tmp_path / "crop.hdr")
    back = load(out)
    np.testing.assert_allclose(back.affine, volume.affine @ np.array(
        [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 0], [0, 0, 0, 1]]))  # fmt: skip
    map_info = parse_header(out.read_text())["map info"]
    assert map_info.startswith("{UTM, 1, 1,") and "units=Meters" in map_info
    stripped = out.read_text().replace("volsr affine", "ignored")  # geometry from map info alone
    out.write_text(stripped)
    np.testing.assert_allclose(load(out).affine, back.affine)


def test_rotated_map_info_warns_and_uses_unit_pixels(tmp_path):
    extra = "map info = {UTM, 1, 1, 0, 0, 30, 30, 13, North, WGS-84, rotation=15}\n"
    header = write_by_hand(tmp_path, np.zeros((2, 2, 1), np.uint8), extra=extra)
    with pytest.warns(UserWarning, match="rotation"):
        volume = load(header)
    np.testing.assert_array_equal(volume.affine, np.eye(4))


def test_three_d_volume_with_oblique_affine_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.array([[0.8, 0.3, 0, 12], [-0.3, 0.8, 0.1, -4], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    volume = Volume(rng.random((5, 4, 3), dtype=np.float32), affine, ("i", "j", "k"))
    back = load(save(volume, tmp_path / "v.hdr"))
    assert back.axes == ("i", "j", "k")
    np.testing.assert_array_equal(back.affine, affine)
    np.testing.assert_array_equal(back.numpy(), volume.numpy())


def test_band_first_and_two_d_volumes_round_trip(tmp_path):
    cube = np.arange(24, dtype=np.int16).reshape(3, 2, 4)
    first = Volume(cube, np.eye(4), ("band", "i", "j"))
    back = load(save(first, tmp_path / "b.hdr"))
    assert back.axes == ("band", "i", "j")
    np.testing.assert_array_equal(back.numpy(), cube)
    image = Volume(cube[0], np.diag([2.0, 3, 1, 1]), ("i", "j"))
    back = load(save(image, tmp_path / "img.hdr"))
    assert back.axes == ("i", "j")
    np.testing.assert_array_equal(back.numpy(), cube[0])


def test_data_file_may_be_given_instead_of_header(tmp_path):
    cube = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    write_by_hand(tmp_path, cube, data_name="cube")
    np.testing.assert_array_equal(load_envi(tmp_path / "cube", None).numpy(), cube)
    np.testing.assert_array_equal(load(tmp_path / "cube.hdr").numpy(), cube)


def test_load_reads_no_voxels(tmp_path, monkeypatch):
    header = write_by_hand(tmp_path, np.ones((40, 30, 20), np.float32))
    reads = []
    original = envi_io._RawCube.__getitem__
    monkeypatch.setattr(
        envi_io._RawCube, "__getitem__", lambda self, i: reads.append(i) or original(self, i)
    )
    volume = load(header)
    assert volume.shape == (40, 30, 20) and volume.affine.shape == (4, 4)
    assert reads == []
    assert float(volume.data[3, 4, 5].compute()) == 1.0
    assert len(reads) == 1


def test_truncated_data_file_names_both_sizes(tmp_path):
    header = write_by_hand(tmp_path, np.zeros((4, 5, 3), np.int16))
    data = tmp_path / "cube.img"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(FormatError, match=r"truncated: 100 bytes, the header needs 120"):
        load(header)


@pytest.mark.parametrize(
    ("extra_header", "message"),
    [("data type = 6\n", "complex"), ("data type = 7\n", "unknown ENVI data type 7"),
     ("interleave = bsx\n", "interleave"), ("byte order = 2\n", "byte order"),
     ("wavelength = {1, 2, 3}\n", "3 wavelength values for 2 bands"),
     ("map info = {UTM, 1, 1, 0, 0, 0, 30}\n", "geometry is invalid")],
)  # fmt: skip
def test_bad_headers_raise_format_error(tmp_path, extra_header, message):
    write_by_hand(tmp_path, np.zeros((2, 2, 2), np.uint8))
    header = tmp_path / "cube.hdr"
    header.write_text(header.read_text() + extra_header)  # later fields override earlier ones
    with pytest.raises(FormatError, match=message):
        load(header)


def test_missing_data_file(tmp_path):
    (tmp_path / "lonely.hdr").write_text("ENVI\nsamples = 1\nlines = 1\nbands = 1\ndata type = 1\n")
    with pytest.raises(FormatError, match="no ENVI data file beside"):
        load(tmp_path / "lonely.hdr")


def test_save_refuses_unsupported_dtype_and_foreign_data_file(tmp_path):
    with pytest.raises(FormatError, match=r"complex data \(complex64\).*take the magnitude first"):
        save(
            Volume(np.zeros((2, 2, 2), np.complex64), np.eye(4), ("i", "j", "band")), tmp_path / "a.hdr"
        )
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "b.img").write_bytes(b"not ours")
    with pytest.raises(OutputExistsError, match="exists without header"):
        save(
            Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), ("i", "j", "band")), tmp_path / "b.hdr"
        )
    assert (tmp_path / "b.img").read_bytes() == b"not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.img"]


def test_overwrite_replaces_both_files(tmp_path):
    first = Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), ("i", "j", "band"))
    save(first, tmp_path / "c.hdr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save(first.replace(data=first.data + 5), tmp_path / "c.hdr", overwrite=True)
    assert load(tmp_path / "c.hdr").numpy().max() == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.hdr", "c.img"]


def test_overwrite_reuses_the_old_data_file_name(tmp_path):
    write_by_hand(tmp_path, np.zeros((2, 3, 2), np.uint8), data_name="cube")
    volume = Volume(np.full((2, 3, 2), 9, np.uint8), np.eye(4), ("i", "j", "band"))
    save(volume, tmp_path / "cube.hdr", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube", "cube.hdr"]
    np.testing.assert_array_equal(load(tmp_path / "cube.hdr").numpy(), volume.numpy())


# ------------------------------------------------------------------- hostile headers


def _with_fields(tmp_path, fields: str) -> Path:
    header = write_by_hand(tmp_path, np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
    header.write_text(header.read_text() + fields)  # later fields override earlier ones
    return header


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [("header offset = -5\n", FormatError, r"ENVI header offset must be >= 0, got -5 \(header of .*cube.img\)"),
     ("data ignore value = {}\n", FormatError, r"'data ignore value' of .*cube.hdr must be one number, got '\{\}'"),
     ("reflectance scale factor = {1, 2}\n", FormatError, "'reflectance scale factor' .* must be one number"),
     ("lines = -2\n", FormatError, r"declares a negative size in shape \(-2, 2, 2\)"),
     ("bands = 0\n", GeometryError, r"zero-size axis in shape \(2, 2, 0\)"),
     ("lines = 1000000\nsamples = 1000000\nbands = 1000000\n", FormatError, "= 1e\\+18 voxels, beyond"),
     ("lines = 10000\nsamples = 10000\nbands = 10000\n", FormatError, "truncated: 8 bytes, the header needs"),
     ("data type = 9\n", FormatError, r"complex data \(ENVI data type 9, complex128\).*take the magnitude")],
    ids=["negative-offset", "empty-ignore-value", "two-scale-factors", "negative-lines", "zero-bands",
         "absurd-shape", "large-shape", "complex128"],
)  # fmt: skip
def test_hostile_headers_are_refused(tmp_path, fields, error, message):
    with pytest.raises(error, match=message):
        load(_with_fields(tmp_path, fields))


def test_files_read_names_header_and_data(tmp_path):
    header = write_by_hand(tmp_path, np.zeros((2, 2, 2), np.uint8), data_name="cube.bil")
    assert files_read(header) == (header.resolve(), (tmp_path / "cube.bil").resolve())
    assert envi_io.files_envi(tmp_path / "cube.bil", None, False) == files_read(header)


@pytest.mark.parametrize(("dtype", "stored"), [(np.bool_, np.uint8), (np.float16, np.float32), (np.int8, np.int16)])
def test_dtypes_without_an_envi_code_are_widened_losslessly(tmp_path, dtype, stored):
    values = (np.arange(24).reshape(2, 3, 4) % 3 - (1 if dtype is np.int8 else 0)).astype(dtype)
    assert writable_dtype(tmp_path / "w.hdr", np.dtype(dtype)) == np.dtype(stored)
    save(Volume(values, np.eye(4), ("i", "j", "band")), tmp_path / "w.hdr")
    assert parse_header((tmp_path / "w.hdr").read_text())["data type"] == str(CODES[stored])
    back = load(tmp_path / "w.hdr")
    assert back.dtype == np.dtype(stored)
    np.testing.assert_array_equal(back.numpy(), values.astype(stored))


# ------------------------------------------------------------------- not ENVI, new grids, integer types


@pytest.mark.parametrize(
    ("kind", "endian", "name"),
    [("AnalyzeImage", "<", "an Analyze 7.5"), ("AnalyzeImage", ">", "an Analyze 7.5"),
     ("Nifti1Pair", "<", "a NIfTI-1")],
)  # fmt: skip
def test_a_binary_analyze_or_nifti_header_is_named(tmp_path, kind, endian, name):
    import nibabel as nib  # a volsr dependency
    image_class = getattr(nib, kind)
    header = image_class.header_class(endianness=endian)
    image_class(np.zeros((3, 4, 5), np.int16), np.eye(4), header).to_filename(tmp_path / "t1.hdr")
    assert (tmp_path / "t1.img").exists() and (tmp_path / "t1.hdr").stat().st_size == 348
    message = (rf"t1.hdr is {name} header \(binary, 348 bytes\), not an ENVI header: convert it with "
               r"nibabel to .nii \(nibabel.save\(nibabel.load\('.*t1.hdr'\), 't1.nii'\)\)$")  # fmt: skip
    with pytest.raises(FormatError, match=message):
        load(tmp_path / "t1.hdr")


def test_an_upsampled_or_cropped_grid_moves_map_info_x_start_and_pixel_size(tmp_path):
    from volsr.geometry import resampled_affine

    extra = ("map info = {UTM, 2, 3, 500000.0, 4000000.0, 30.0, 30.0, 13, North, WGS-84, units=Meters}\n"
             "x start = 11\ny start = 5\npixel size = {30.0, 30.0, units=Meters}\n")  # fmt: skip
    volume = load(write_by_hand(tmp_path, np.zeros((4, 6, 2), np.uint16), extra=extra))
    affine = resampled_affine(volume.affine, (4, 6), (8, 12))
    out = save(volume.replace(data=np.zeros((8, 12, 2), np.float32), affine=affine), tmp_path / "x2.hdr")
    fields = parse_header(out.read_text())
    # The corner of pixel (1, 1) lies one pixel left of and two pixels above the tie point (2, 3).
    assert fields["map info"] == "{UTM, 1, 1, 499970.0, 4000060.0, 15.0, 15.0, 13, North, WGS-84, units=Meters}"
    assert (fields["x start"], fields["y start"]) == ("21", "9")  # (start - 1) * 2 + 1
    assert fields["pixel size"] == "{15.0, 15.0, units=Meters}"
    corner = [-0.5, -0.5, 0, 1]
    np.testing.assert_allclose(load(out).affine @ corner, volume.affine @ corner)
    out.write_text(out.read_text().replace("volsr affine", "ignored"))  # geometry from map info alone
    np.testing.assert_allclose(load(out).affine, affine)
    fields = parse_header(save(volume.crop((slice(1, 4), slice(2, 6))), tmp_path / "crop.hdr").read_text())
    assert (fields["x start"], fields["y start"], fields["pixel size"]) == ("13", "6", "{30.0, 30.0, units=Meters}")


def test_floats_into_an_integer_type_are_rounded_clipped_and_counted_once(tmp_path):
    values = np.array([[[-3.2, 7.6], [70000.0, 12.4]], [[0.0, 65535.4], [-0.4, 1e9]]], np.float32)
    volume = Volume(values, np.eye(4), ("i", "j", "band"), meta={"envi": {"data type": "12"}, "nodata": 0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save(volume, tmp_path / "u16.hdr")
    assert [str(w.message) for w in caught] == [
        "3 values outside the range of uint16 [0, 65535] were clipped to it in u16.hdr (ENVI data type 12)"]
    assert caught[0].filename == __file__
    back = load(tmp_path / "u16.hdr")
    assert back.dtype == np.uint16 and back.meta["nodata"] == 0.0
    assert back.numpy().tolist() == [[[0, 8], [65535, 12]], [[0, 65535], [0, 65535]]]
    assert parse_header((tmp_path / "u16.hdr").read_text())["data ignore value"] == "0.0"
    with pytest.raises(FormatError, match=r"no-data value -9999 does not fit ENVI data type 12 \(uint16\)"):
        save(volume.replace(meta={"envi": {"data type": "12"}, "nodata": -9999}), tmp_path / "bad.hdr")


def test_x_start_y_start_and_pixel_size_move_without_map_info(tmp_path):
    from volsr.geometry import resampled_affine

    extra = "x start = 101\ny start = 51\npixel size = {30, 30, units=Meters}\n"
    volume = load(write_by_hand(tmp_path, np.zeros((4, 6, 2), np.uint16), extra=extra))
    affine = resampled_affine(volume.affine, (4, 6), (8, 12))
    fields = parse_header(save(volume.replace(data=np.zeros((8, 12, 2), np.float32), affine=affine),
                               tmp_path / "x2.hdr").read_text())  # fmt: skip
    # 1-based: the first pixel of a 2x grid starts where old pixel 101 did, at new pixel (101 - 1) * 2 + 1.
    assert (fields["x start"], fields["y start"], fields["pixel size"]) == ("201", "101", "{15.0, 15.0, units=Meters}")
    fields = parse_header(save(volume.crop((slice(1, 4), slice(2, 6))), tmp_path / "crop.hdr").read_text())
    assert (fields["x start"], fields["y start"], fields["pixel size"]) == ("103", "52", "{30.0, 30.0, units=Meters}")


def test_grid_fields_without_map_info_follow_the_pixel_grid():
    from volsr.geometry import resampled_affine
    from volsr.io._envi_map import grid_fields

    template = {"x start": "101", "y start": "51", "pixel size": "{30, 30, units=Meters}"}
    # 3x along lines, 2x along samples, then cropped by (1, 2) new pixels.
    affine = resampled_affine(np.eye(4), (4, 6), (12, 12))
    affine[:3, 3] += affine[:3, :3] @ [1, 2, 0]
    assert grid_fields(template, affine) == {"x start": "203", "y start": "152",
                                             "pixel size": "{15.0, 10.0, units=Meters}"}  # fmt: skip
    swapped = affine[:, [1, 0, 2, 3]]  # lines and samples exchanged: not the old grid rescaled
    assert grid_fields(template, swapped) == {}
    assert grid_fields({"description": "{x}"}, affine) == {}
