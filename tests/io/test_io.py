"""The package-level API of :mod:`volsr.io`: files_read, check_output, missing_chunks,
writable_dtype, and ``allow_external`` threaded to every format's loader."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from volsr.errors import FormatError, OutputExistsError
from volsr.io import FORMATS, check_output, files_read, load, missing_chunks, save, writable_dtype
from volsr.volume import Volume

SHAPE = (4, 3, 2)


def _vds_pair(folder: Path) -> tuple[str, Path]:
    with h5py.File(folder / "src.h5", "w") as handle:
        handle["d"] = np.ones(SHAPE, np.float32)
    layout = h5py.VirtualLayout(shape=SHAPE, dtype="f4")
    layout[...] = h5py.VirtualSource("src.h5", "d", shape=SHAPE)
    with h5py.File(folder / "vds.h5", "w") as handle:
        handle.create_virtual_dataset("d", layout)
    return f"{folder / 'vds.h5'}:/d", folder / "src.h5"


def test_output_may_not_replace_a_file_behind_a_virtual_dataset(tmp_path: Path) -> None:
    spec, source = _vds_pair(tmp_path)
    before = source.read_bytes()
    with pytest.raises(OutputExistsError, match=f"the output {source}:/sr would replace the input file "
                                                 f".*vds.h5:/d \\(it reads {source}\\)"):  # fmt: skip
        check_output(f"{source}:/sr", overwrite=True, inputs=[spec])
    assert source.read_bytes() == before
    check_output(f"{tmp_path / 'other.h5'}:/sr", inputs=[spec])


def test_output_may_not_replace_external_storage_the_run_reads(tmp_path: Path) -> None:
    raw = tmp_path / "raw.img"
    np.zeros(SHAPE, "<f4").tofile(raw)
    with h5py.File(tmp_path / "ext.h5", "w") as handle:
        handle.create_dataset("d", shape=SHAPE, dtype="<f4", external=[(str(raw), 0, 96)])
    spec = f"{tmp_path / 'ext.h5'}:/d"
    # Not allowed: the load refuses the input, so the output is judged by the input's own path.
    check_output(tmp_path / "raw.hdr", inputs=[spec])
    with pytest.raises(OutputExistsError, match="would replace the input file"):
        check_output(tmp_path / "ext.h5", overwrite=True, inputs=[spec])
    # Allowed: the external file is read, so it is protected too (an ENVI output's binary).
    with pytest.raises(OutputExistsError, match=f"it reads {raw}"):
        check_output(tmp_path / "raw.hdr", overwrite=True, inputs=[spec], allow_external=True)


def test_input_inside_an_output_store_is_protected(tmp_path: Path) -> None:
    (tmp_path / "o.zarr").mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), tmp_path / "o.zarr" / "in.nii")
    with pytest.raises(OutputExistsError, match="would replace the input file"):
        check_output(tmp_path / "o.zarr", overwrite=True, inputs=[tmp_path / "o.zarr" / "in.nii"])


def test_files_read_resolves_links_and_lists_each_file_once(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), tmp_path / "real.nii")
    (tmp_path / "alias.nii").symlink_to(tmp_path / "real.nii")
    assert files_read(tmp_path / "alias.nii") == ((tmp_path / "real.nii").resolve(),)
    spec, source = _vds_pair(tmp_path)
    assert files_read(spec) == ((tmp_path / "vds.h5").resolve(), source.resolve())
    with pytest.raises(FormatError, match="no such file"):
        files_read(tmp_path / "missing.nii")


def test_dtype_is_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"complex data \(complex64\) is not supported: take the magnitude"):
        check_output(tmp_path / "o.zarr", dtype=np.complex64)
    with pytest.raises(FormatError, match="cannot store dtype <U3"):
        check_output(tmp_path / "o.h5", dtype=np.dtype("U3"))
    assert check_output(tmp_path / "o.nii.gz", dtype=np.float16) == tmp_path / "o.nii.gz"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "dtype", "stored"),
    [("o.nii.gz", bool, np.uint8), ("o.nii", np.float16, np.float32), ("o.hdr", np.int8, np.int16),
     ("o.mat:x", np.float16, np.float32), ("o.mat:x", bool, bool), ("o.h5", ">f4", np.float32),
     ("o.zarr", bool, bool), ("o.zarr", np.float16, np.float16)],
)  # fmt: skip
def test_writable_dtype_per_format(name: str, dtype: object, stored: object) -> None:
    assert writable_dtype(name, np.dtype(dtype)) == np.dtype(stored)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_every_loader_takes_allow_external(tmp_path: Path, fmt) -> None:
    spec = f"{tmp_path / 'v'}{fmt.suffixes[0]}" + (":x" if fmt.takes_key else "")
    save(Volume(np.ones(SHAPE, np.float32), np.eye(4), ("i", "j", "k")), spec)
    for allow in (False, True):
        assert load(spec, allow_external=allow).shape == SHAPE


def test_missing_chunks_is_none_for_formats_without_chunks_on_disk(tmp_path: Path) -> None:
    path = save(Volume(np.ones(SHAPE, np.float32), np.eye(4), ("i", "j", "k")), tmp_path / "v.nii")
    assert missing_chunks(path) is None
    zarr_path = save(Volume(np.ones(SHAPE, np.float32), np.eye(4), ("i", "j", "k")), tmp_path / "v.zarr",
                     chunks=(2, 3, 2))  # fmt: skip
    assert missing_chunks(zarr_path) == (0, 2)
