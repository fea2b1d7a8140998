"""Shipped data locations: the pinned ICBM152 template and the shared data folder."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import nibabel as nib
import pytest

from volsr import datasets
from volsr.datasets import ICBM152_T1_SHA256, icbm152_t1_path, shared_data_root
from volsr.errors import FormatError

needs_nilearn = pytest.mark.skipif(
    importlib.util.find_spec("nilearn") is None, reason="nilearn (ships ICBM152) not installed"
)


@needs_nilearn
def test_icbm152_exists_and_checksum_verifies() -> None:
    path = icbm152_t1_path()
    assert path.is_file()
    assert path.name == "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ICBM152_T1_SHA256
    image = nib.load(path)
    assert image.shape == (197, 233, 189)
    assert image.header.get_zooms() == (1.0, 1.0, 1.0)


@needs_nilearn
def test_checksum_mismatch_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "ICBM152_T1_SHA256", "0" * 64)
    with pytest.raises(FormatError, match="checksum mismatch"):
        icbm152_t1_path()
    assert icbm152_t1_path(verify=False).is_file()


def test_missing_nilearn_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FormatError, match="ships with nilearn"):
        icbm152_t1_path()


def test_shared_data_root_honours_volsr_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VOLSR_DATA", str(tmp_path))
    assert shared_data_root() == tmp_path
    default = Path(datasets.__file__).resolve().parents[2] / "shared" / "data"
    monkeypatch.delenv("VOLSR_DATA")
    assert shared_data_root() == default
    monkeypatch.setenv("VOLSR_DATA", "")
    assert shared_data_root() == default
