"""NIfTI reader/writer, checked against nibabel on its shipped volumes and on real MRI."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from nibabel.arrayproxy import ArrayProxy
from nibabel.testing import data_path

from volsr.errors import FormatError, GeometryError, InvalidDataError
from volsr.io import load, save
from volsr.io._common import SaveOptions
from volsr.io.nifti import NiftiArray, load_nifti, save_nifti
from volsr.volume import Volume

NIBABEL_DATA = Path(data_path)
DATA_ROOT = Path(os.environ.get("VOLSR_DATA", Path(__file__).parents[2].parent / "shared" / "data"))
MR_GD = DATA_ROOT / "mri" / "MR_Gd.nii.gz"


def _oblique_affine() -> np.ndarray:
    angle = np.deg2rad(20.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


@pytest.mark.parametrize(
    ("name", "axes"),
    [
        ("anatomical.nii", ("i", "j", "k")),
        ("standard.nii.gz", ("i", "j", "k")),
        ("example4d.nii.gz", ("i", "j", "k", "channel")),
        ("example_nifti2.nii.gz", ("i", "j", "k", "channel")),
        ("functional.nii", ("i", "j", "k", "channel")),
    ],
)
def test_nibabel_volumes_match_nibabel(name: str, axes: tuple[str, ...]) -> None:
    path = NIBABEL_DATA / name
    reference = nib.load(path)
    volume = load_nifti(path)
    assert volume.axes == axes
    assert volume.shape == reference.shape
    np.testing.assert_array_equal(volume.affine, reference.affine)
    proxy = reference.dataobj
    scaled = (proxy.slope, proxy.inter) != (1.0, 0.0)
    raw = np.dtype(proxy.dtype).newbyteorder("=")
    assert volume.dtype == (np.result_type(raw, np.float32) if scaled else raw)
    np.testing.assert_allclose(volume.numpy(), reference.get_fdata(), rtol=1e-6)


def test_cifti_is_not_a_volume() -> None:
    with pytest.raises(FormatError, match="Cifti2Image, not a NIfTI volume"):
        load_nifti(NIBABEL_DATA / "row_major.dconn.nii")


@pytest.mark.skipif(not MR_GD.exists(), reason=f"real MRI not found at {MR_GD} (set VOLSR_DATA)")
def test_real_mri_header_without_reading_voxels(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = nib.load(MR_GD)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("voxels were read")

    with monkeypatch.context() as patch:
        for method in ("__getitem__", "__array__", "_get_scaled", "_get_unscaled"):
            patch.setattr(ArrayProxy, method, refuse)
        volume = load_nifti(MR_GD)
        assert volume.shape == (176, 188, 144)
        np.testing.assert_array_equal(volume.affine, reference.affine)
        assert volume.dtype == np.float32  # uint8 on disk with scl_slope != 1
    slab = volume.data[:, :, 70:72].compute()
    np.testing.assert_allclose(slab, reference.get_fdata()[:, :, 70:72], rtol=1e-6)


def test_scl_slope_and_inter_are_applied(tmp_path: Path) -> None:
    raw = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    path = tmp_path / "scaled.nii"
    nib.save(nib.Nifti1Image(raw, np.eye(4)), path)
    header = nib.load(path).header.copy()
    header.set_slope_inter(2.0, 10.0)
    header["vox_offset"] = 352  # nibabel zeroes it on load
    with open(path, "r+b") as handle:  # rewrite only the header: voxels stay raw int16
        handle.write(header.binaryblock)
    volume = load_nifti(path)
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume.numpy(), 2.0 * raw + 10.0)


def test_save_keeps_header_and_writes_consistent_qform_sform(tmp_path: Path) -> None:
    source = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), _oblique_affine())
    source.header["descrip"] = b"volsr test scan"
    source.header.set_xyzt_units("mm", "msec")
    source.header.set_intent("t test", (12.0,), name="stat")
    source.set_qform(_oblique_affine(), code="scanner")
    source.set_sform(_oblique_affine(), code="aligned")
    nib.save(source, tmp_path / "source.nii.gz")
    volume = load(tmp_path / "source.nii.gz")
    derived_affine = _oblique_affine() @ np.diag([0.5, 0.5, 1.0, 1.0])
    values = np.random.default_rng(1).normal(size=(12, 10, 4)).astype(np.float32)
    derived = volume.replace(data=values, affine=derived_affine)
    save(derived, tmp_path / "derived.nii.gz")

    assert (tmp_path / "derived.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip despite temp name
    written = nib.load(tmp_path / "derived.nii.gz")
    header = written.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 2)
    np.testing.assert_allclose(qform, derived_affine, atol=1e-5)
    np.testing.assert_allclose(sform, derived_affine, atol=1e-6)
    np.testing.assert_allclose(header.get_zooms(), [0.45, 0.55, 3.0], rtol=1e-6)
    assert header["descrip"] == b"volsr test scan"
    assert header.get_xyzt_units() == ("mm", "msec")
    assert header.get_intent() == ("t test", (12.0,), "stat")
    assert header.get_data_dtype() == np.float32
    np.testing.assert_array_equal(written.get_fdata(dtype=np.float32), values)


def test_save_without_source_header_uses_scanner_codes(tmp_path: Path) -> None:
    volume = Volume(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), _oblique_affine(), "ijk")
    save_nifti(volume, tmp_path / "plain.nii", None, SaveOptions())
    header = nib.load(tmp_path / "plain.nii").header
    assert int(header["qform_code"]) == int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-5)
    back = load_nifti(tmp_path / "plain.nii")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.numpy(), volume.numpy())
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-6)


def test_round_trip_channels_nan_and_2d(tmp_path: Path) -> None:
    four = np.random.default_rng(2).normal(size=(3, 4, 5, 2))
    four[0, 0, 0, 1] = np.nan
    volume = Volume(four, np.diag([2.0, 2.0, 2.0, 1.0]), ("i", "j", "k", "channel"))
    save_nifti(volume, tmp_path / "four.nii.gz", None, SaveOptions())
    back = load_nifti(tmp_path / "four.nii.gz")
    assert back.axes == volume.axes and back.dtype == np.float64
    np.testing.assert_array_equal(back.numpy(), four)  # NaN voxels survive at this layer

    image = np.arange(12, dtype=np.int32).reshape(3, 4)
    save_nifti(Volume(image, np.eye(4), ("i", "j")), tmp_path / "two.nii", None, SaveOptions())
    back = load_nifti(tmp_path / "two.nii")
    assert back.axes == ("i", "j")
    np.testing.assert_array_equal(back.numpy(), image)


def test_trailing_unit_axis_is_dropped(tmp_path: Path) -> None:
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "unit.nii")
    volume = load_nifti(tmp_path / "unit.nii")
    assert volume.axes == ("i", "j", "k")
    np.testing.assert_array_equal(volume.numpy(), values[..., 0])


def test_source_is_picklable_and_reads_by_path(tmp_path: Path) -> None:
    values = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "a.nii.gz")
    source = NiftiArray(tmp_path / "a.nii.gz", (2, 3, 4), np.dtype(np.int16))
    source[0, 0, 0]  # caches a proxy, which must not travel with the pickle
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[:, 1:, 2:], values[:, 1:, 2:])


def test_multi_member_gzip_is_read(tmp_path: Path) -> None:
    values = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "one.nii.gz")
    plain = gzip.decompress((tmp_path / "one.nii.gz").read_bytes())
    two = gzip.compress(plain[:500]) + gzip.compress(plain[500:])
    (tmp_path / "two.nii.gz").write_bytes(two)
    np.testing.assert_array_equal(load_nifti(tmp_path / "two.nii.gz").numpy(), values)


@pytest.fixture
def gz_volume(tmp_path: Path) -> bytes:
    values = np.random.default_rng(3).normal(size=(16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "v.nii.gz")
    return (tmp_path / "v.nii.gz").read_bytes()


def test_truncated_gzip_is_refused_on_load(tmp_path: Path, gz_volume: bytes) -> None:
    (tmp_path / "cut.nii.gz").write_bytes(gz_volume[: len(gz_volume) // 2])
    with pytest.raises(FormatError, match="truncated NIfTI file"):
        load_nifti(tmp_path / "cut.nii.gz")


def test_read_error_on_compute_is_a_format_error(tmp_path: Path, gz_volume: bytes) -> None:
    # A cut stream that still ends with the right size trailer passes the cheap load check;
    # the failure then comes from nibabel on compute and must still be a FormatError.
    cut = gz_volume[: len(gz_volume) // 2] + gz_volume[-4:]
    (tmp_path / "cut.nii.gz").write_bytes(cut)
    volume = load_nifti(tmp_path / "cut.nii.gz")
    with pytest.raises(FormatError, match="cannot read voxels"):
        volume.numpy()


def test_truncated_plain_file_is_refused(tmp_path: Path, gz_volume: bytes) -> None:
    (tmp_path / "cut.nii").write_bytes(gzip.decompress(gz_volume)[:-8])
    with pytest.raises(FormatError, match="truncated NIfTI file.*of 16736 bytes"):
        load_nifti(tmp_path / "cut.nii")


@pytest.mark.parametrize("name", ["junk.nii", "junk.nii.gz"])
def test_non_nifti_file_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"definitely not a NIfTI header " * 20)
    with pytest.raises(FormatError, match="not a readable NIfTI file"):
        load_nifti(tmp_path / name)


def test_zero_size_axis_is_a_geometry_error(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((0, 3, 4), np.float32), np.eye(4)), tmp_path / "z.nii")
    with pytest.raises(GeometryError, match="zero-size axis"):
        load_nifti(tmp_path / "z.nii")


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5, 6)])
def test_unsupported_dimensionality(tmp_path: Path, shape: tuple[int, ...]) -> None:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), tmp_path / "d.nii")
    with pytest.raises(InvalidDataError, match="not 2D, 3D or 4D"):
        load_nifti(tmp_path / "d.nii")


def test_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="NIfTI files hold one array"):
        load_nifti(NIBABEL_DATA / "anatomical.nii", "data")


def test_a_cube_with_wavelengths_saved_as_nifti_warns_that_they_are_dropped(tmp_path: Path) -> None:
    cube = Volume(np.ones((3, 4, 5), np.float32), np.eye(4), ("i", "j", "band"),
                  wavelengths=np.linspace(400.0, 800.0, 5))
    with pytest.warns(UserWarning, match="no place for band wavelengths: c.nii.gz keeps the 5 bands"):
        save(cube, tmp_path / "c.nii.gz")
    assert nib.load(tmp_path / "c.nii.gz").shape[-1] == 5


# ------------------------------------------------------------ hostile headers and dtypes


def _patched(tmp_path: Path, image: nib.Nifti1Image, offset: int, fmt: str, *values: int) -> Path:
    path = tmp_path / "p.nii"
    nib.save(image, path)
    raw = bytearray(path.read_bytes())
    struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(bytes(raw))
    return path


def test_negative_dimension_is_refused(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4))
    path = _patched(tmp_path, image, 42, "<h", -8)  # NIfTI-1 dim[1] (int16)
    with pytest.raises(FormatError, match=r"NIfTI header of .*p.nii declares a negative size in shape \(-8, 8, 4\)"):
        load(path)


def test_absurd_dimensions_are_refused_in_seconds(tmp_path: Path) -> None:
    image = nib.Nifti2Image(np.ones((8, 8, 4), np.float32), np.eye(4))
    path = _patched(tmp_path, image, 24, "<3q", 10**6, 10**6, 10**6)  # NIfTI-2 dim[1..3] (int64)
    with pytest.raises(FormatError, match=r"declares shape \(1000000, 1000000, 1000000\) = 1e\+18 voxels"):
        load(path)
    # Under the voxel limit, the file size is the judge: 1e9 voxels cannot be in 400 bytes.
    path = _patched(tmp_path, image, 24, "<3q", 1000, 1000, 1000)
    with pytest.raises(FormatError, match=r"truncated NIfTI file: .*p.nii has 1568 of 4000000544 bytes"):
        load(path)


@pytest.mark.parametrize(
    ("dtype", "message"),
    [(np.complex64, r"complex data \(complex64\) in NIfTI file .*take the magnitude first"),
     (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "holds dtype .*'R'.*not numbers")],
    ids=["complex64", "rgb24"],
)  # fmt: skip
def test_complex_and_rgb_are_refused(tmp_path: Path, dtype: np.dtype, message: str) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2), dtype), np.eye(4)), tmp_path / "c.nii.gz")
    with pytest.raises(FormatError, match=message):
        load(tmp_path / "c.nii.gz")


def test_big_endian_file_reads_native_values(tmp_path: Path) -> None:
    values = np.arange(24, dtype=">f4").reshape(4, 3, 2) / 7
    header = nib.Nifti1Header(endianness=">")
    nib.save(nib.Nifti1Image(values, np.eye(4), header=header), tmp_path / "be.nii")
    assert nib.load(tmp_path / "be.nii").header.endianness == ">"  # independent check of the file
    volume = load(tmp_path / "be.nii")
    assert volume.dtype == np.float32 and volume.dtype.isnative
    read = volume.numpy()
    assert read.dtype.isnative
    np.testing.assert_array_equal(read, values.astype("<f4"))


def test_sheared_affine_goes_in_the_sform_with_qform_unused(tmp_path: Path) -> None:
    shear = np.array([[1.0, 0.3, 0.0, 5.0], [0.0, 1.0, 0.2, -3.0], [0.0, 0.0, 2.0, 1.0], [0, 0, 0, 1]])
    save(Volume(np.ones((4, 3, 2), np.float32), shear, ("i", "j", "k")), tmp_path / "s.nii.gz")
    header = nib.load(tmp_path / "s.nii.gz").header
    sform, scode = header.get_sform(coded=True)
    np.testing.assert_allclose(sform, shear, atol=1e-6)
    assert int(scode) > 0 and int(header["qform_code"]) == 0
    np.testing.assert_allclose(nib.load(tmp_path / "s.nii.gz").affine, shear, atol=1e-6)
    np.testing.assert_allclose(header.get_zooms(), np.linalg.norm(shear[:3, :3], axis=0), rtol=1e-6)


def test_rotation_and_zoom_keep_qform_and_sform_consistent(tmp_path: Path) -> None:
    flipped = _oblique_affine() @ np.diag([1.0, -1.0, 1.0, 1.0])  # left-handed: qfac = -1
    save(Volume(np.ones((4, 3, 2), np.float32), flipped, ("i", "j", "k")), tmp_path / "r.nii")
    header = nib.load(tmp_path / "r.nii").header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    assert int(qcode) > 0 and int(scode) > 0
    np.testing.assert_allclose(qform, flipped, atol=1e-5)
    np.testing.assert_allclose(sform, flipped, atol=1e-6)


def test_writer_dtypes_are_checked_before_any_work(tmp_path: Path) -> None:
    computed = []
    data = da.from_delayed(dask.delayed(lambda: computed.append(1) or np.zeros((4, 3, 2), np.complex64))(),
                           shape=(4, 3, 2), dtype=np.complex64)  # fmt: skip
    with pytest.raises(FormatError, match=r"NIfTI output: complex data \(complex64\).*magnitude first"):
        save(Volume(data, np.eye(4), ("i", "j", "k")), tmp_path / "c.nii.gz")
    assert computed == [] and list(tmp_path.iterdir()) == []
    save(Volume(np.ones((4, 3, 2), np.float16), np.eye(4), ("i", "j", "k")), tmp_path / "h.nii.gz")
    assert nib.load(tmp_path / "h.nii.gz").get_data_dtype() == np.float32
