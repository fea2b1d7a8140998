"""Tests of the HSI data pipeline (volsr/data/hsi.py): protocol LR, alignment, augmentation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from volsr.data.hsi import HSIPatchDataset, load_cube, make_pair
from volsr.degrade import bicubic_downsample, gaussian_decimate
from volsr.geometry import output_coordinates

DATA = Path(os.environ.get("VOLSR_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _write(folder: Path, name: str, cube: np.ndarray) -> str:
    path = folder / f"{name}.mat"
    scipy.io.savemat(path, {"cube": cube})
    return f"{path}:cube"


def _transforms(a: np.ndarray) -> list[np.ndarray]:
    rotated = [np.rot90(a, k, axes=(0, 1)) for k in range(4)]
    return rotated + [r[::-1] for r in rotated]


def test_load_cube_divides_by_the_maximum(tmp_path):
    cube = np.random.default_rng(0).random((8, 9, 5)) * 700.0
    loaded, peak = load_cube(_write(tmp_path, "c", cube))
    assert peak == pytest.approx(cube.max())
    np.testing.assert_allclose(loaded, cube / cube.max(), rtol=1e-6)
    assert loaded.dtype == np.float32 and loaded.max() == 1.0


@pytest.mark.skipif(not (DATA / "hsi").is_dir(), reason=f"shared HSI data not found at {DATA}")
def test_real_cube_loads_normalised():
    cube, peak = load_cube(str(DATA / "hsi/gatorsense/paviaU_subimg.mat"))
    assert cube.shape == (50, 50, 103) and cube.max() == 1.0 and peak == 6614.0


@pytest.mark.parametrize(("degradation", "reference"), [("bicubic", bicubic_downsample),
                                                        ("gaussian", gaussian_decimate)])
def test_make_pair_follows_the_protocol(degradation, reference):
    cube = np.random.default_rng(1).random((21, 18, 4)).astype(np.float32)
    pair = make_pair(cube, scale=4, degradation=degradation)
    np.testing.assert_array_equal(pair.lr, reference(cube, factors=4, axes=(0, 1)))
    assert pair.lr.shape == (5, 4, 4)
    np.testing.assert_array_equal(pair.hr, cube[:20, :16])
    with pytest.raises(ValueError, match="degradation must be one of"):
        make_pair(cube, scale=2, degradation="box")


def test_constant_spectrum_survives_both_degradations():
    spectrum = np.linspace(0.1, 1.0, 30, dtype=np.float32)
    cube = np.broadcast_to(spectrum, (12, 12, 30))
    for degradation in ("bicubic", "gaussian"):
        lr = make_pair(cube, scale=3, degradation=degradation).lr
        np.testing.assert_allclose(lr, np.broadcast_to(spectrum, lr.shape), atol=1e-6)


def test_patches_are_aligned_crops_under_the_same_flip_or_rotation(tmp_path):
    cube = np.random.default_rng(2).random((24, 28, 6))
    spec = _write(tmp_path, "c", cube)
    ds = HSIPatchDataset([spec], scale=2, lr_patch=4, batch_size=3, band_window_probability=0.0,
                         reverse_probability=0.0, seed=3)
    pair = ds.pairs[0]
    batch = ds.batch(5)
    assert batch["lr"].shape == (3, 6, 4, 4) and batch["hr"].shape == (3, 6, 8, 8)
    np.testing.assert_array_equal(batch["positions"][0], output_coordinates(4, 8))
    for lr, hr in zip(batch["lr"].numpy(), batch["hr"].numpy(), strict=True):
        lr, hr = lr.transpose(1, 2, 0), hr.transpose(1, 2, 0)
        found = any(
            np.array_equal(lr, t_lr) and np.array_equal(hr, t_hr)
            for r in range(pair.lr.shape[0] - 3) for c in range(pair.lr.shape[1] - 3)
            for t_lr, t_hr in zip(_transforms(pair.lr[r : r + 4, c : c + 4]),
                                  _transforms(pair.hr[2 * r : 2 * r + 8, 2 * c : 2 * c + 8]),
                                  strict=True)
        )
        assert found


def test_batches_are_deterministic_and_mix_band_counts_by_windows(tmp_path):
    rng = np.random.default_rng(4)
    specs = [_write(tmp_path, "a", rng.random((16, 16, 31))),
             _write(tmp_path, "b", rng.random((16, 16, 50)))]
    ds = HSIPatchDataset(specs, scale=2, lr_patch=4, batch_size=4, band_window_probability=1.0,
                         min_bands=8, seed=0)
    counts = {ds.batch(i)["lr"].shape[1] for i in range(20)}
    assert all(8 <= n <= 50 for n in counts) and len(counts) > 3
    first, again = ds.batch(7), next(ds.batches(7))
    assert np.array_equal(first["lr"], again["lr"]) and np.array_equal(first["hr"], again["hr"])
    whole = HSIPatchDataset(specs, scale=2, lr_patch=4, batch_size=2, band_window_probability=0.0)
    assert {whole.batch(i)["lr"].shape[1] for i in range(20)} == {31, 50}
    capped = HSIPatchDataset(specs, scale=2, lr_patch=4, batch_size=4, band_window_probability=1.0,
                             min_bands=8, max_bands=12, seed=0)
    assert {capped.batch(i)["lr"].shape[1] for i in range(40)} == set(range(8, 13))
    with pytest.raises(ValueError, match="max_bands must be None or an integer >= min_bands"):
        HSIPatchDataset(specs, scale=2, lr_patch=4, batch_size=1, min_bands=8, max_bands=4)


def test_grid_phases_degrade_the_cube_on_shifted_lr_grids(tmp_path):
    rows = np.arange(40.0)[:, None, None] * np.ones((40, 36, 3))
    ds = HSIPatchDataset([_write(tmp_path, "ramp", rows / 40)], scale=4, lr_patch=4, batch_size=1,
                         grid_phases=2)
    assert len(ds.pairs) == 4  # HR offsets (0, 0), (0, 2), (2, 0), (2, 2)
    base, down = ds.pairs[0], ds.pairs[2]
    # A linear ramp is reproduced by the (normalised, symmetric) cubic kernel away from the
    # borders: LR pixel k of a grid starting 2 HR rows later sits 2 rows further on.
    step = base.hr[1, 0, 0] - base.hr[0, 0, 0]  # one HR row of the ramp (as loaded)
    np.testing.assert_allclose(down.lr[2:7] - base.lr[2:7], 2 * step, atol=1e-5)
    np.testing.assert_array_equal(down.hr, base.hr[2 : 2 + down.hr.shape[0]])
    # The shifted HR crops are views of one loaded cube, not grid_phases**2 copies of it.
    assert all(np.shares_memory(base.hr, pair.hr) for pair in ds.pairs[1:])
    with pytest.raises(ValueError, match=r"grid_phases must be an integer in \[1, scale=4\]"):
        HSIPatchDataset([_write(tmp_path, "ramp", rows / 40)], scale=4, lr_patch=4, batch_size=1,
                        grid_phases=5)


def test_band_reversal(tmp_path):
    cube = np.random.default_rng(5).random((8, 8, 7))
    kwargs = dict(scale=2, lr_patch=4, batch_size=1, augment=False, band_window_probability=0.0)
    plain = HSIPatchDataset([_write(tmp_path, "c", cube)], reverse_probability=0.0, **kwargs)
    flipped = HSIPatchDataset([_write(tmp_path, "c", cube)], reverse_probability=1.0, **kwargs)
    # Same seed and index: the same crop, bands reversed.
    np.testing.assert_array_equal(flipped.batch(0)["hr"].numpy(), plain.batch(0)["hr"].numpy()[:, ::-1])


def test_small_cubes_are_skipped_and_options_checked(tmp_path):
    small = _write(tmp_path, "s", np.ones((6, 6, 3)))
    with pytest.warns(UserWarning, match="skipping"), pytest.raises(ValueError, match="no cube"):
        HSIPatchDataset([small], scale=2, lr_patch=4, batch_size=1)
    with pytest.raises(ValueError, match="reverse_probability must be in"):
        HSIPatchDataset([small], scale=2, lr_patch=2, batch_size=1, reverse_probability=2.0)
