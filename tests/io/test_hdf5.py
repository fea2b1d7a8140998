"""HDF5 reader/writer, checked against h5py reads of the same files."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import dask
import h5py
import numpy as np
import pytest

from volsr import io
from volsr.errors import FormatError, InvalidDataError
from volsr.io import check_output, files_read, load, save
from volsr.io._common import SaveOptions
from volsr.io.hdf5 import HDF5Array, load_hdf5, save_hdf5
from volsr.volume import Volume


def _affine() -> np.ndarray:
    affine = np.diag([0.5, 0.7, 2.5, 1.0])
    affine[0, 1] = 0.1
    affine[:3, 3] = [10.0, -3.0, 4.0]
    return affine


def test_round_trip_data_dtype_affine_and_chunks(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(size=(9, 8, 7)).astype(np.float32)
    volume = Volume(values, _affine(), ("i", "j", "k"))
    save(volume, f"{tmp_path / 'v.h5'}:/group/t1", chunks=(4, 4, 100))
    with h5py.File(tmp_path / "v.h5", "r") as handle:  # independent look at the file
        dataset = handle["/group/t1"]
        assert dataset.chunks == (4, 4, 7) and dataset.compression == "gzip"
        np.testing.assert_array_equal(dataset.attrs["affine"], _affine())
        np.testing.assert_array_equal(dataset[()], values)
    back = load(f"{tmp_path / 'v.h5'}:group/t1")
    assert back.axes == ("i", "j", "k") and back.dtype == np.float32
    np.testing.assert_array_equal(back.affine, _affine())
    np.testing.assert_array_equal(back.numpy(), values)


def test_round_trip_cube_with_wavelengths(tmp_path: Path) -> None:
    cube = np.arange(5 * 6 * 4, dtype=np.uint16).reshape(5, 6, 4)
    wavelengths, fwhm = [450.0, 550.0, 650.0, 750.0], [10.0, 10.0, 12.0, 12.0]
    volume = Volume(cube, np.eye(4), ("i", "j", "band"), wavelengths=wavelengths, fwhm=fwhm)
    save_hdf5(volume, tmp_path / "c.hdf5", None, SaveOptions())
    back = load_hdf5(tmp_path / "c.hdf5", None)  # the only dataset: /data
    assert back.axes == ("i", "j", "band") and back.dtype == np.uint16
    np.testing.assert_array_equal(back.wavelengths, wavelengths)
    np.testing.assert_array_equal(back.fwhm, fwhm)
    np.testing.assert_array_equal(back.numpy(), cube)


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((4, 5), ("i", "j")),
        ((4, 5, 6), ("i", "j", "k")),
        ((4, 5, 6, 2), ("i", "j", "k", "channel")),
    ],
)
def test_plain_dataset_defaults(tmp_path: Path, shape: tuple[int, ...], axes: tuple[str]) -> None:
    values = np.random.default_rng(1).integers(0, 1000, size=shape).astype(np.int32)
    with h5py.File(tmp_path / "p.he5", "w") as handle:
        handle.create_dataset("x", data=values, chunks=True)
    volume = load_hdf5(tmp_path / "p.he5", "/x")
    assert volume.axes == axes
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    np.testing.assert_array_equal(volume.numpy(), values)


@pytest.mark.parametrize(("stored", "expected"), [([0.45, 0.55, 2.5], [450.0, 550.0, 2500.0]),
                                                  ([450.0, 550.0, 2500.0], [450.0, 550.0, 2500.0])])
def test_plain_3d_dataset_with_wavelengths_per_last_entry_is_a_cube(tmp_path: Path, stored, expected) -> None:
    # Written as a foreign tool would: rows x cols x bands, no volsr 'axes' attribute.
    values = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3)
    with h5py.File(tmp_path / "hsi.h5", "w") as handle:
        dataset = handle.create_dataset("cube", data=values)
        dataset.attrs["wavelengths"] = stored
        dataset.attrs["fwhm"] = np.array(stored) / 50
    volume = load(f"{tmp_path / 'hsi.h5'}:/cube")
    assert volume.axes == ("i", "j", "band") and volume.spatial_shape == (4, 5)
    np.testing.assert_allclose(volume.wavelengths, expected)
    np.testing.assert_allclose(volume.fwhm, np.array(expected) / 50)
    np.testing.assert_array_equal(volume.numpy()[:, :, 2], values[:, :, 2])


def test_wavelengths_that_fit_no_band_axis_are_ignored_with_a_warning(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle.create_dataset("cube", data=np.zeros((4, 5, 3), np.float32)).attrs["wavelengths"] = [400.0, 500.0]
        tagged = handle.create_dataset("tagged", data=np.zeros((3, 4, 5), np.float32))
        tagged.attrs["axes"], tagged.attrs["wavelengths"] = ["band", "i", "j"], [400.0, 500.0, 600.0]
    with pytest.warns(UserWarning, match=r"ignoring 'wavelengths' of dataset /cube .*shape \(4, 5, 3\)"):
        volume = load(f"{tmp_path / 'v.h5'}:/cube")
    assert volume.axes == ("i", "j", "k") and volume.wavelengths is None
    assert load(f"{tmp_path / 'v.h5'}:/tagged").axes == ("band", "i", "j")  # volsr's axes win


def test_reads_in_threads_open_the_file_by_path(tmp_path: Path) -> None:
    values = np.random.default_rng(2).normal(size=(32, 16, 16))
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        handle.create_dataset("x", data=values, chunks=(4, 16, 16))
    volume = load_hdf5(tmp_path / "t.h5", "x")
    with h5py.File(tmp_path / "t.h5", "a"):
        pass  # load left no handle open (HDF5 would refuse a writer otherwise)
    source = HDF5Array(tmp_path / "t.h5", "/x", values.shape, values.dtype)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[3:5], values[3:5])
    with dask.config.set(scheduler="threads", num_workers=4):
        np.testing.assert_array_equal(volume.data.rechunk((4, 16, 16)).compute(), values)


def test_missing_key_lists_datasets(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "m.h5", "w") as handle:
        handle.create_dataset("a", data=np.zeros((2, 2)))
        handle.create_dataset("g/b", data=np.zeros((2, 2)))
    with pytest.raises(FormatError, match=r"no dataset 'nope'.*available: /a, /g/b"):
        load_hdf5(tmp_path / "m.h5", "nope")
    with pytest.raises(FormatError, match=r"no dataset '/g'.*available: /a, /g/b"):
        load_hdf5(tmp_path / "m.h5", "/g")
    with pytest.raises(FormatError, match=r"holds 2 datasets.*available: /a, /g/b"):
        load_hdf5(tmp_path / "m.h5", None)


def test_not_hdf5_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.h5").write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        load_hdf5(tmp_path / "bad.h5", "x")


def test_truncated_hdf5_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "full.h5", "w") as handle:
        handle.create_dataset("x", data=np.arange(10000.0))
    full = (tmp_path / "full.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(full[: len(full) // 2])
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        load_hdf5(tmp_path / "cut.h5", "x")


def test_bad_datasets_are_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "b.h5", "w") as handle:
        handle.create_dataset("text", data=np.array([b"abc", b"def"]))
        handle.create_dataset("five", data=np.zeros((2, 2, 2, 2, 2)))
        bad = handle.create_dataset("bad_affine", data=np.zeros((2, 2, 2)))
        bad.attrs["affine"] = np.eye(3)
    with pytest.raises(FormatError, match=r"dataset /text in .*b.h5 holds dtype \|S3, not numbers"):
        load_hdf5(tmp_path / "b.h5", "text")
    with pytest.raises(InvalidDataError, match=r"shape \(2, 2, 2, 2, 2\): need 2D, 3D or 4D"):
        load_hdf5(tmp_path / "b.h5", "five")
    with pytest.raises(FormatError, match=r"'affine' attribute.*expected \(4, 4\)"):
        load_hdf5(tmp_path / "b.h5", "bad_affine")


def test_bad_chunks_option(tmp_path: Path) -> None:
    volume = Volume(np.zeros((2, 3, 4)), np.eye(4), ("i", "j", "k"))
    with pytest.raises(ValueError, match=r"chunks must be 3 positive integers, got \(2, 2\)"):
        save_hdf5(volume, tmp_path / "x.h5", None, SaveOptions(chunks=(2, 2)))


# ------------------------------------------------------------- references to other files


def _ramp(shape: tuple[int, ...] = (4, 3, 2)) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _vds(path: Path, source: Path, shape: tuple[int, ...] = (4, 3, 2)) -> None:
    layout = h5py.VirtualLayout(shape=shape, dtype="f4")
    layout[...] = h5py.VirtualSource(str(source), "d", shape=shape)
    with h5py.File(path, "w") as handle:
        handle.create_virtual_dataset("d", layout, fillvalue=-1.0)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the input's folder: files there are not the user's input."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


def test_external_raw_storage_is_refused_unless_allowed(tmp_path: Path, outside: Path) -> None:
    raw = outside / "raw.bin"
    _ramp().tofile(raw)
    with h5py.File(tmp_path / "in" / "ext.h5", "w") as handle:
        handle.create_dataset("d", shape=(4, 3, 2), dtype="<f4", external=[(str(raw), 0, 96)])
    spec = f"{tmp_path / 'in' / 'ext.h5'}:/d"
    with pytest.raises(FormatError, match=f"dataset /d in .*ext.h5 stores its voxels in another file \\({raw}\\)"):
        load(spec)
    with pytest.raises(FormatError, match="another file"):
        files_read(spec)
    np.testing.assert_array_equal(load(spec, allow_external=True).numpy(), _ramp())
    assert files_read(spec, allow_external=True) == ((tmp_path / "in" / "ext.h5").resolve(), raw.resolve())


def test_external_link_is_refused_before_it_is_followed(tmp_path: Path, outside: Path) -> None:
    with h5py.File(outside / "other.h5", "w") as handle:
        handle["g/d"] = _ramp()
    with h5py.File(tmp_path / "in" / "link.h5", "w") as handle:
        handle["d"] = h5py.ExternalLink(str(outside / "other.h5"), "/g/d")
        handle["g"] = h5py.ExternalLink(str(outside / "other.h5"), "/g")
        handle["soft"] = h5py.SoftLink("/g/d")
        handle["passwd"] = h5py.ExternalLink("/etc/passwd", "/x")
    path = tmp_path / "in" / "link.h5"
    for key in ("d", "/g/d", "soft"):
        with pytest.raises(FormatError, match=f"is an external link to {outside / 'other.h5'}:"):
            load(f"{path}:{key}")
    with pytest.raises(FormatError, match="external link to /etc/passwd:/x"):
        load(f"{path}:passwd")
    volume = load(f"{path}:/g/d", allow_external=True)
    np.testing.assert_array_equal(volume.numpy(), _ramp())
    assert files_read(f"{path}:soft", allow_external=True) == (path.resolve(), (outside / "other.h5").resolve())


def test_virtual_dataset_with_sources_outside_or_missing_is_refused(tmp_path: Path, outside: Path) -> None:
    with h5py.File(outside / "src.h5", "w") as handle:
        handle["d"] = _ramp()
    _vds(tmp_path / "in" / "vds.h5", outside / "src.h5")
    _vds(tmp_path / "in" / "gap.h5", tmp_path / "in" / "missing.h5")
    with pytest.raises(FormatError, match=f"reads source file {outside / 'src.h5'}, outside the input's folder"):
        load(f"{tmp_path / 'in' / 'vds.h5'}:/d")
    with pytest.raises(FormatError, match="maps source file '.*missing.h5', which does not exist .*fill value"):
        load(f"{tmp_path / 'in' / 'gap.h5'}:/d")
    np.testing.assert_array_equal(load(f"{tmp_path / 'in' / 'vds.h5'}:/d", allow_external=True).numpy(), _ramp())
    np.testing.assert_array_equal(load(f"{tmp_path / 'in' / 'gap.h5'}:/d", allow_external=True).numpy(), -1.0)


def test_virtual_dataset_with_sources_beside_it_is_read(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "src.h5", "w") as handle:
        handle["d"] = _ramp()
    _vds(tmp_path / "vds.h5", Path("src.h5"))  # relative: beside the VDS file
    spec = f"{tmp_path / 'vds.h5'}:/d"
    np.testing.assert_array_equal(load(spec).numpy(), _ramp())
    assert files_read(spec) == ((tmp_path / "vds.h5").resolve(), (tmp_path / "src.h5").resolve())


def test_a_source_beside_it_may_not_hide_external_storage(tmp_path: Path, outside: Path) -> None:
    _ramp().tofile(outside / "raw.bin")
    with h5py.File(tmp_path / "in" / "src.h5", "w") as handle:
        handle.create_dataset("d", shape=(4, 3, 2), dtype="<f4", external=[(str(outside / "raw.bin"), 0, 96)])
    _vds(tmp_path / "in" / "vds.h5", tmp_path / "in" / "src.h5")
    with pytest.raises(FormatError, match="dataset /d in .*src.h5 stores its voxels in another file"):
        load(f"{tmp_path / 'in' / 'vds.h5'}:/d")


# ------------------------------------------------------------------ shapes and dtypes


def test_null_and_scalar_datasets_are_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle.create_dataset("null", data=h5py.Empty("f4"))
        handle.create_dataset("scalar", data=np.float32(1.5))
    with pytest.raises(FormatError, match=r"dataset /null in .*v.h5 has a null dataspace \(h5py.Empty\)"):
        load(f"{tmp_path / 'v.h5'}:/null")
    with pytest.raises(InvalidDataError, match=r"dataset /scalar in .*v.h5 has shape \(\): need 2D, 3D or 4D"):
        load(f"{tmp_path / 'v.h5'}:/scalar")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_ramp().astype(np.complex64), r"complex data \(complex64\) in dataset /d .*take the magnitude first"),
        (np.full((4, 3, 2), b"ab", dtype="S2"), r"holds dtype \|S2, not numbers"),
        (np.zeros((4, 3, 2), dtype=[("a", "f4"), ("b", "f4")]), r"holds dtype .*'a'.*not numbers"),
        (np.zeros((4, 3, 2), dtype="V4"), r"holds dtype \|V4, not numbers"),
    ],
    ids=["complex", "string", "compound", "void"],
)
def test_non_real_dtypes_are_refused_at_load(tmp_path: Path, data: np.ndarray, message: str) -> None:
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle.create_dataset("d", data=data)
    with pytest.raises(FormatError, match=message):
        load(f"{tmp_path / 'v.h5'}:/d")


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(">f4", np.float32), ("<f2", np.float16), (">i2", np.int16), ("bool", np.uint8)],
)
def test_big_endian_float16_and_bool_are_read_natively(tmp_path: Path, stored: str, expected: type) -> None:
    values = (_ramp() % 3).astype(stored)
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle.create_dataset("d", data=values)
    volume = load(f"{tmp_path / 'v.h5'}:/d")
    assert volume.dtype == np.dtype(expected) and volume.dtype.isnative
    read = volume.numpy()
    assert read.dtype == np.dtype(expected)
    np.testing.assert_array_equal(read, (_ramp() % 3).astype(stored).astype(expected))


def test_absurd_declared_shape_is_refused_at_once(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle.create_dataset("d", shape=(10**6,) * 3, dtype="f4", chunks=(64, 64, 64))
    with pytest.raises(FormatError, match=r"declares shape \(1000000, 1000000, 1000000\) = 1e\+18 voxels"):
        load(f"{tmp_path / 'v.h5'}:/d")


def test_malformed_volsr_attributes_are_format_errors(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle.create_dataset("d", data=_ramp()).attrs["affine"] = "not numbers"
    with pytest.raises(FormatError, match="'affine' attribute of /d in .*v.h5 is not numeric"):
        load(f"{tmp_path / 'v.h5'}:/d")


# ------------------------------------------------------------------------ output keys


@pytest.mark.parametrize(
    ("key", "message"),
    [("/", "names the root group"), ("//", "has an empty component"), ("/a/../d", "has a '..' component"),
     ("a//b", "has an empty component"), ("/a/./b", "has a '.' component"), ("/a/", "has an empty component")],
)  # fmt: skip
def test_unusable_output_keys_are_refused_before_work(tmp_path: Path, key: str, message: str) -> None:
    with pytest.raises(FormatError, match=f"HDF5 output key '{re.escape(key)}' for .*o.h5 {message}"):
        check_output(f"{tmp_path / 'o.h5'}:{key}")
    with pytest.raises(FormatError, match=message):
        save(Volume(_ramp(), np.eye(4), ("i", "j", "k")), f"{tmp_path / 'o.h5'}:{key}")
    assert list(tmp_path.iterdir()) == []


def test_empty_output_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="empty key after ':'"):
        check_output(f"{tmp_path / 'o.h5'}:")


def test_a_full_disk_is_an_oserror_before_hdf5_writes_and_leaves_nothing(tmp_path, monkeypatch):
    # libhdf5 crashes the process when it closes a file after a failed write (seen: exit
    # 139 on a full tmpfs), so the room is checked before every block.
    import collections
    import errno

    from volsr.io import hdf5 as hdf5_module

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(hdf5_module.shutil, "disk_usage", lambda _: usage(2**30, 2**30, 2**20))
    volume = Volume(np.ones((32, 32, 32), np.float32), np.eye(4), ("i", "j", "k"))
    with pytest.raises(OSError, match="No space left on device") as error:
        io.save(volume, tmp_path / "o.h5")
    assert error.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_real_full_disk_ends_in_one_line_not_a_crash(tmp_path):
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here")
    try:
        source = tmp_path / "v.nii"
        io.save(Volume(np.random.default_rng(0).random((96, 96, 96), dtype=np.float32), np.eye(4),
                       ("i", "j", "k")), source)  # fmt: skip
        run = subprocess.run([sys.executable, "-m", "volsr.cli", "convert", str(source), str(mount / "o.h5")],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 1, (run.returncode, run.stderr)  # a system error, not a segfault (-11)
        assert run.stderr.count("\n") == 1 and "No space left on device" in run.stderr
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)
