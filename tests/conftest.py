"""Fixtures shared by several test files."""

from __future__ import annotations

import numpy as np
import pytest

from volsr.datasets import shared_data_root
from volsr.models import list_models
from volsr.volume import Volume

# The shipped networks register at the registry's first lookup; do it now, before a test
# swaps the registry or the weights folder for its own (monkeypatch), so that none of them
# is left out of (or registered into) a test's private copy.
list_models()


@pytest.fixture(scope="session")
def real_hr() -> Volume:
    """A crop of a real skull-stripped T1 volume (MR_Gd, Lindner et al. 2018), oblique affine."""
    path = shared_data_root() / "mri" / "MR_Gd.nii.gz"
    if not path.exists():
        pytest.skip(f"real MRI volume not found at {path} (set VOLSR_DATA)")
    nib = pytest.importorskip("nibabel")
    crop = nib.load(path).slicer[60:108, 70:110, 50:94]
    return Volume(np.asarray(crop.dataobj, dtype=np.float32), crop.affine, ("i", "j", "k"))
