"""Tests for volsr.data.transforms: the transforms reproduce the standalone degradations."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose

from volsr import degrade, noise
from volsr.data import (
    DEGRADE_PARAMS_KEY,
    RandThickSliced,
    ThickSliced,
    ThickSliceParams,
    apply_thick_slice,
)
from volsr.volume import Volume

DATA_ROOT = Path(
    os.environ.get("VOLSR_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)
MR_GD = DATA_ROOT / "mri" / "MR_Gd.nii.gz"


@pytest.fixture(scope="module")
def real_image() -> tuple[np.ndarray, np.ndarray]:
    """A (1, X, Y, Z) crop of a real T1 volume (MR_Gd, Lindner et al. 2018) and its affine."""
    if not MR_GD.exists():
        pytest.skip(f"real MRI volume not found at {MR_GD} (set VOLSR_DATA)")
    nib = pytest.importorskip("nibabel")
    crop = nib.load(MR_GD).slicer[40:120, 50:130, 40:100]
    return np.asarray(crop.dataobj, dtype=np.float32)[None], crop.affine


def _standalone(hr: np.ndarray, params: ThickSliceParams) -> np.ndarray:
    lr = degrade.thick_slice(
        hr, axis=params.axis + 1, factor=params.factor, thickness=params.thickness, profile=params.profile
    )
    return lr if params.noise is None else noise.rician_noise(lr, params.noise)


def test_thick_sliced_equals_standalone_functions(real_image: tuple[np.ndarray, np.ndarray]) -> None:
    hr, _ = real_image
    drawn = noise.NoiseParams(snr_db=25.0, sigma=noise.sigma_for_snr(hr, 25.0), seed=3)
    params = ThickSliceParams(axis=2, factor=3.3, thickness=2.5, profile="box", noise=drawn)
    out = ThickSliced("hr", params=params)({"hr": hr, "id": "s1"})
    assert out["hr"] is hr and out["id"] == "s1"
    np.testing.assert_array_equal(out["lr"], _standalone(hr, params))
    assert ThickSliceParams.from_dict(out[DEGRADE_PARAMS_KEY]) == params


def test_rand_thick_sliced_output_is_reproducible_from_logged_params(
    real_image: tuple[np.ndarray, np.ndarray],
) -> None:
    hr, _ = real_image
    transform = RandThickSliced(
        "hr",
        factor_range=(2.0, 5.0),
        axes=(0, 1, 2),
        thickness_ratio_range=(0.7, 1.3),
        profiles=("gaussian", "box"),
        snr_db_range=(15.0, 35.0),
    )
    transform.set_random_state(seed=123)
    for _ in range(3):
        out = transform({"hr": hr})
        params = ThickSliceParams.from_dict(out[DEGRADE_PARAMS_KEY])
        assert params == transform.params
        np.testing.assert_array_equal(out["lr"], _standalone(hr, params))
        np.testing.assert_array_equal(out["lr"], ThickSliced("hr", params=params)({"hr": hr})["lr"])


def test_rand_thick_sliced_seeding_and_ranges() -> None:
    hr = np.random.default_rng(0).uniform(1, 2, size=(1, 16, 16, 16)).astype(np.float32)

    def draws(seed: int) -> list[ThickSliceParams]:
        t = RandThickSliced(
            "hr",
            factor_range=(1.5, 3.5),
            axes=(0, 2),
            thickness_ratio_range=(0.5, 1.5),
            profiles=("gaussian", "box"),
            snr_db_range=(10, 20),
        )
        t.set_random_state(seed=seed)
        return [ThickSliceParams.from_dict(t({"hr": hr})[DEGRADE_PARAMS_KEY]) for _ in range(40)]

    first, again, other = draws(7), draws(7), draws(8)
    assert first == again and first != other
    assert {p.axis for p in first} == {0, 2} and {p.profile for p in first} == {"gaussian", "box"}
    assert all(1.5 <= p.factor <= 3.5 and 0.5 <= p.thickness / p.factor <= 1.5 for p in first)
    assert all(10 <= p.noise.snr_db <= 20 for p in first)
    assert len({p.noise.seed for p in first}) == len(first)


def test_global_numpy_state_is_untouched() -> None:
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    t = RandThickSliced("hr", snr_db_range=(20, 30))
    t.set_random_state(seed=1)
    t({"hr": np.ones((1, 4, 4, 8), np.float32)})
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002


def test_meta_tensor_gets_lr_affine(real_image: tuple[np.ndarray, np.ndarray]) -> None:
    hr, affine = real_image
    image = MetaTensor(torch.from_numpy(hr), affine=torch.as_tensor(affine))
    params = ThickSliceParams(axis=1, factor=2.5, thickness=2.5)
    lr = apply_thick_slice(image, params)
    assert isinstance(lr, MetaTensor) and lr.dtype == torch.float32
    volume = degrade.thick_slice(Volume(hr[0], affine, ("i", "j", "k")), axis=1, factor=2.5)
    assert tuple(lr.shape[1:]) == volume.spatial_shape
    np.testing.assert_allclose(lr.affine.numpy(), volume.affine, atol=1e-12)
    np.testing.assert_allclose(lr.numpy()[0], volume.numpy(), rtol=1e-6)


def test_plain_tensor_in_compose_and_collate() -> None:
    hr = torch.rand(2, 8, 6, 9)
    chain = Compose([RandThickSliced(["hr"], factor_range=(3.0, 3.0), axes=(2,))])
    chain.set_random_state(seed=0)
    first, second = chain({"hr": hr}), chain({"hr": hr})
    assert isinstance(first["lr"], torch.Tensor) and tuple(first["lr"].shape) == (2, 8, 6, 3)
    batch = list_data_collate([first, second])
    assert tuple(batch["lr"].shape) == (2, 2, 8, 6, 3)
    assert batch[DEGRADE_PARAMS_KEY]["factor"].tolist() == [3.0, 3.0]
    assert math.isinf(first[DEGRADE_PARAMS_KEY]["snr_db"])


def test_identity_params_and_2d_images() -> None:
    hr = np.random.default_rng(1).uniform(size=(3, 10, 12))
    params = ThickSliceParams(axis=0, factor=1.0, thickness=1.0, profile="box")
    np.testing.assert_array_equal(ThickSliced("hr", params=params)({"hr": hr})["lr"], hr)


def test_errors() -> None:
    params = ThickSliceParams(axis=0, factor=2.0, thickness=2.0)
    with pytest.raises(ValueError, match="profile must be one of"):
        ThickSliceParams(axis=0, factor=2.0, thickness=2.0, profile="sinc")
    with pytest.raises(ValueError, match="factor must be finite and >= 1"):
        ThickSliceParams(axis=0, factor=0.5, thickness=2.0)
    with pytest.raises(ValueError, match="lr_keys needs one key per HR key"):
        ThickSliced(("a", "b"), params=params, lr_keys="lr")
    with pytest.raises(KeyError, match="'hr' is not in the data"):
        ThickSliced("hr", params=params)({"image": np.ones((1, 4, 4))})
    assert "lr" not in ThickSliced("hr", params=params, allow_missing_keys=True)({"x": 1})
    with pytest.raises(ValueError, match="spatial axis 3"):
        apply_thick_slice(np.ones((1, 4, 4, 4)), ThickSliceParams(axis=3, factor=2.0, thickness=2.0))
    with pytest.raises(ValueError, match="factor_range must be two finite values >= 1.0"):
        RandThickSliced("hr", factor_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="low <= high"):
        RandThickSliced("hr", snr_db_range=(30.0, 10.0))
    with pytest.raises(ValueError, match="profiles must be a non-empty subset"):
        RandThickSliced("hr", profiles=("lanczos",))
    with pytest.raises(ValueError, match="axes must be non-empty spatial axis indices"):
        RandThickSliced("hr", axes=())
