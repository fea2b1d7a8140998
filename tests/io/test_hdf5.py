"""HDF5 reader/writer, checked against h5py reads of the same files."""

from __future__ import annotations

import pickle
from pathlib import Path

import dask
import h5py
import numpy as np
import pytest

from volsr.errors import FormatError, InvalidDataError
from volsr.io import load, save
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
    with pytest.raises(FormatError, match="not numeric"):
        load_hdf5(tmp_path / "b.h5", "text")
    with pytest.raises(InvalidDataError, match=r"shape \(2, 2, 2, 2, 2\): need 2D, 3D or 4D"):
        load_hdf5(tmp_path / "b.h5", "five")
    with pytest.raises(FormatError, match=r"'affine' attribute.*expected \(4, 4\)"):
        load_hdf5(tmp_path / "b.h5", "bad_affine")


def test_bad_chunks_option(tmp_path: Path) -> None:
    volume = Volume(np.zeros((2, 3, 4)), np.eye(4), ("i", "j", "k"))
    with pytest.raises(ValueError, match=r"chunks must be 3 positive integers, got \(2, 2\)"):
        save_hdf5(volume, tmp_path / "x.h5", None, SaveOptions(chunks=(2, 2)))
