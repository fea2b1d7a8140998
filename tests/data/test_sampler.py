"""Tests for volsr.data.sampler: lazy reads, valid origins, foreground bias, exact degradation."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch

from volsr.data import PatchParams, PatchSampler, SamplerOptions
from volsr.degrade import FWHM_PER_SIGMA, thick_slice
from volsr.engine import upsample
from volsr.geometry import downsampled_grid, output_coordinates
from volsr.intensity import percentile_normalise
from volsr.io import load, save
from volsr.resample import antialiased_cubic_matrix, apply_matrix
from volsr.volume import Volume

DATA_ROOT = Path(
    os.environ.get("VOLSR_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
)
MR_GD = DATA_ROOT / "mri" / "MR_Gd.nii.gz"
AXES = ("i", "j", "k")


class CountingArray:
    """A NumPy-like file proxy that logs every block handed out (by its start index)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim
        self.starts: list[tuple[int, ...]] = []

    def __getitem__(self, key):
        self.starts.append(tuple(k.start or 0 for k in key))
        return self.values[key]


def _smooth_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Positive random volume with structure at several scales (a synthetic 'head')."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, size=[max(2, n // 6) for n in shape])
    grids = np.meshgrid(*[np.linspace(0, c - 1, n) for c, n in zip(coarse.shape, shape)], indexing="ij")
    index = tuple(np.round(g).astype(int) for g in grids)
    return (100.0 * coarse[index] + 20.0 * rng.uniform(size=shape)).astype(np.float32)


@pytest.fixture(scope="module")
def real_crop() -> np.ndarray:
    """A (60, 60, 60) crop of a real T1 volume (MR_Gd, Lindner et al. 2018), float32."""
    if not MR_GD.exists():
        pytest.skip(f"real MRI volume not found at {MR_GD} (set VOLSR_DATA)")
    return np.asarray(load(MR_GD).numpy()[50:110, 60:120, 40:100], dtype=np.float32)


def test_reads_only_the_blocks_it_needs_and_caches_them() -> None:
    values = _smooth_volume((48, 40, 56))
    proxy = CountingArray(values)
    volume = Volume(da.from_array(proxy, chunks=(8, 8, 8)), np.eye(4), AXES)
    sampler = PatchSampler([volume], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 2.0), axes=(2,)))
    proxy.starts.clear()  # the statistics read the whole volume once, at construction
    params = PatchParams(volume=0, origin=(16, 8, 20), axis=2, factor=2.0, thickness=2.0)
    sampler.make_item(params)
    # Slices (1 halo each side) centred at 20 + (j - 1 + 1/2) 2 - 1/2, j = 0..5; a Gaussian
    # of FWHM 2 is cut at 4 sigma: HR voxels 16..31 along k, i.e. k-chunks 2 and 3 only.
    radius = 4 * 2.0 / FWHM_PER_SIGMA
    centres = 20 + (np.arange(6) - 1 + 0.5) * 2 - 0.5
    first, last = math.ceil(centres[0] - radius), math.floor(centres[-1] + radius)
    k_chunks = range(first // 8, last // 8 + 1)
    assert sorted(proxy.starts) == [(16, 8, 8 * c) for c in k_chunks]
    reads = len(proxy.starts)
    sampler.make_item(params)
    assert len(proxy.starts) == reads and sampler.cache.hits >= reads


def test_sampling_from_files_equals_sampling_from_memory(tmp_path: Path) -> None:
    values = _smooth_volume((30, 28, 36), seed=1)
    specs = []
    for name in ("v.nii.gz", "v.zarr", "v.h5:/group/v"):
        save(Volume(values, np.eye(4), AXES), tmp_path / name, chunks=(8, 8, 8))
        specs.append(str(tmp_path / name))
    options = SamplerOptions(patch_shape=(10, 8, 12), factor_range=(1.5, 3.5), snr_db_range=(15, 25))
    expected = PatchSampler([values] * 3, options).sample_batch(np.random.default_rng(5), batch_size=4)
    sampler = PatchSampler(specs, options)
    # Pickled without open handles (h5py files cannot be pickled); reopened on demand.
    restored = pickle.loads(pickle.dumps(sampler))
    got = restored.sample_batch(np.random.default_rng(5), batch_size=4)
    for key in ("lr", "hr"):
        torch.testing.assert_close(got[key], expected[key])
    assert set(got["params"]["volume"].tolist()) <= {0, 1, 2}


def test_origins_keep_every_sample_inside_the_volume() -> None:
    shape = (44, 40, 48)
    sampler = PatchSampler(
        [_smooth_volume(shape, seed=2)], SamplerOptions(patch_shape=(12, 10, 14), factor_range=(1.0, 4.5),
        thickness_ratio_range=(0.7, 1.4), profiles=("gaussian", "box"), lr_halo=1,
        zoom_range=(0.7, 1.3), permute_axes=True, flip_axes=(0, 1, 2), p_foreground=0.5),
    )  # fmt: skip
    rng = np.random.default_rng(3)
    for _ in range(300):
        factor, axis = sampler.draw_factor_axis(rng)
        p = sampler.draw_params(rng, factor=factor, axis=axis)
        frame = [shape[d] for d in p.permutation]
        zoomed = [max(1, math.floor(n / p.zoom + 0.5)) for n in frame]
        for d, (o, size) in enumerate(zip(p.origin, sampler.options.patch_shape)):
            assert 0 <= o and o + size <= zoomed[d]
        m = math.ceil(sampler.options.patch_shape[axis] / factor - 1e-9) + 2
        # The first halo slice starts at or after voxel 0, the last one ends by the last voxel.
        assert p.origin[axis] - factor >= -1e-9
        assert p.origin[axis] + (m - 1) * factor <= zoomed[axis] + 1e-9
    item = sampler.make_item(p)
    assert item["hr"].shape == (1, 12, 10, 14) and item["lr"].shape[1 + axis] == m
    with pytest.raises(ValueError, match="outside the valid ranges"):
        sampler.make_item(PatchParams(volume=0, origin=(0, 0, 0), axis=2, factor=2.0, thickness=2.0))
    with pytest.raises(ValueError, match="too small"):
        PatchSampler([np.ones((20, 20, 12))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 2.0)))


def test_foreground_bias_puts_every_centre_in_the_foreground() -> None:
    values = np.zeros((48, 48, 48), np.float32)
    values[28:44, 4:20, 12:32] = 1.0  # aligned to the 4-voxel cells
    sampler = PatchSampler(
        [values], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 3.0), p_foreground=1.0,
        foreground_cell=4, permute_axes=True, flip_axes=(0, 1, 2)),
    )  # fmt: skip
    rng = np.random.default_rng(4)
    for _ in range(200):
        factor, axis = sampler.draw_factor_axis(rng)
        p = sampler.draw_params(rng, factor=factor, axis=axis)
        voxel = [0, 0, 0]
        for d in range(3):
            c = p.origin[d] + 4
            voxel[p.permutation[d]] = 47 - c if p.flips[d] else c
        assert values[tuple(voxel)] == 1.0, (p, voxel)
    uniform = PatchSampler([values], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 2.0), p_foreground=0.0))
    hits = [
        values[tuple(np.add(uniform.draw_params(rng, factor=2.0, axis=2).origin, 4))]
        for _ in range(200)
    ]
    assert np.mean(hits) < 0.5


@pytest.mark.parametrize(
    ("factor", "axis", "profile", "ratio", "origin_lr"),
    [
        (2.0, 2, "gaussian", 1.0, 1),  # first valid origin: the first slice folds at voxel 0
        (3.0, 0, "box", 0.8, 4),  # slice gap
        (2.5, 1, "gaussian", 1.3, 7),  # non-integer factor, overlapping slices
        (4.0, 2, "box", 1.0, 7),  # last valid origin: the last slice folds at the end
    ],
)
@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_patch_lr_equals_whole_volume_thick_slice(
    source, factor, axis, profile, ratio, origin_lr, request
) -> None:
    values = request.getfixturevalue("real_crop") if source == "real" else _smooth_volume((60, 60, 60))
    sampler = PatchSampler(
        [values], SamplerOptions(patch_shape=(16, 16, 16), factor_range=(1.0, 5.0), lr_halo=1)
    )
    # Origin on the whole-volume lattice: HR voxel (origin_lr + 1) * factor starts a slice.
    origin = [20, 24, 30]
    origin[axis] = round((origin_lr + 1) * factor)
    params = PatchParams(
        volume=0, origin=tuple(origin), axis=axis, factor=factor, thickness=ratio * factor,
        profile=profile,
    )  # fmt: skip
    item = sampler.make_item(params)
    normalised, _ = percentile_normalise(values)  # whole-volume statistics
    whole = thick_slice(normalised, axis=axis, factor=factor, thickness=ratio * factor, profile=profile)
    m = item["lr"].shape[1 + axis]
    box = [slice(o, o + 16) for o in origin]
    box[axis] = slice(origin_lr, origin_lr + m)
    np.testing.assert_allclose(item["lr"][0].numpy(), whole[tuple(box)], rtol=1e-6, atol=1e-6)
    hr_box = tuple(slice(o, o + 16) for o in origin)
    np.testing.assert_array_equal(item["hr"][0].numpy(), normalised[hr_box])
    n_lr, n_cov = downsampled_grid(60, factor)
    assert n_cov == n_lr * factor and m <= n_lr - origin_lr
    contract = output_coordinates(n_lr, n_cov)[origin[axis] : origin[axis] + 16] - origin_lr
    np.testing.assert_allclose(item["positions"][axis], contract, atol=1e-12)
    np.testing.assert_array_equal(item["positions"][axis - 1], np.arange(16.0))


def test_noise_is_added_before_slice_averaging_and_the_target_stays_clean() -> None:
    sampler = PatchSampler(
        [np.ones((40, 40, 72), np.float32)], SamplerOptions(patch_shape=(32, 32, 32), factor_range=(4.0, 4.0),
        axes=(2,), profiles=("box",), snr_db_range=(20.0, 20.0), lr_halo=0),
    )  # fmt: skip
    batch = sampler.sample_batch(np.random.default_rng(6), batch_size=2)
    assert torch.all(batch["hr"] == 1.0)
    np.testing.assert_allclose(batch["params"]["noise_sigma"].numpy(), 0.1)
    # Each LR voxel averages 4 noisy HR voxels (Rician std ~ sigma at this SNR): std sigma / 2,
    # not sigma as for noise added to the LR image.
    assert abs(float(batch["lr"].std()) - 0.05) < 0.005


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_normalisation_uses_whole_volume_statistics(source, request) -> None:
    if source == "real":
        real_crop = request.getfixturevalue("real_crop")
    else:
        real_crop = _smooth_volume((60, 60, 60), seed=4)
        real_crop[:30] *= 0.5  # a darker part, where the patches below lie
    other = _smooth_volume((40, 40, 40), seed=7)
    small = PatchSampler([real_crop], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 2.0)))
    large = PatchSampler([other, real_crop], SamplerOptions(patch_shape=(24, 24, 24), factor_range=(3.0, 3.0)))
    a = small.make_item(PatchParams(volume=0, origin=(10, 12, 14), axis=2, factor=2.0, thickness=2.0))
    b = large.make_item(PatchParams(volume=1, origin=(6, 6, 6), axis=0, factor=3.0, thickness=3.0))
    patch = a["hr"][0].numpy()
    np.testing.assert_array_equal(patch, b["hr"][0].numpy()[4:12, 6:14, 8:16])
    expected = np.clip(real_crop / np.percentile(real_crop.astype(np.float64), 99.9), 0, 1)
    np.testing.assert_allclose(patch, expected[10:18, 12:20, 14:22], rtol=1e-6)
    assert patch.max() < 0.99  # a per-patch normalisation would reach 1


def test_same_seed_same_batches_and_other_seed_other_batches() -> None:
    def batches(seed: int) -> list[dict]:
        sampler = PatchSampler(
            [_smooth_volume((36, 36, 36), seed=s) for s in (0, 1)], SamplerOptions(patch_shape=(12, 12, 12),
            factor_range=(2.0, 4.0), integer_factors=True, snr_db_range=(20, 30),
            zoom_range=(0.8, 1.2), permute_axes=True, flip_axes=(0, 1),
            scale_range=(0.9, 1.1), shift_range=(-0.05, 0.05), bias_field_range=(0.0, 0.05)),
        )  # fmt: skip
        rng = np.random.default_rng(seed)
        return [sampler.sample_batch(rng, batch_size=3) for _ in range(3)]

    first, again, other = batches(11), batches(11), batches(12)
    for x, y in zip(first, again):
        torch.testing.assert_close(x["lr"], y["lr"], rtol=0, atol=0)
        assert all(torch.equal(x["params"][k], y["params"][k]) for k in x["params"])
    assert not all(torch.equal(x["hr"], y["hr"]) for x, y in zip(first, other))
    assert {float(b["params"]["factor"][0]) for b in first + other} <= {2.0, 3.0, 4.0}
    for batch in first:
        factors, axes = batch["params"]["factor"], batch["params"]["axis"]
        assert torch.all(factors == factors[0]) and torch.all(axes == axes[0])


def test_zoom_equals_whole_volume_resampling() -> None:
    values = _smooth_volume((40, 36, 44), seed=3)
    sampler = PatchSampler([values], SamplerOptions(patch_shape=(10, 10, 10), factor_range=(2.0, 2.0), axes=(2,)))
    normalised, _ = percentile_normalise(values)
    reference = Volume(normalised, np.eye(4), AXES)
    for zoom, origin in ((0.8, (12, 3, 20)), (1.25, (5, 7, 9))):
        item = sampler.make_item(
            PatchParams(volume=0, origin=origin, axis=2, factor=2.0, thickness=2.0, zoom=zoom)
        )
        if zoom < 1:  # Keys cubic upsampling: the engine's "bicubic" model on the whole volume
            whole = upsample(reference, scale=1 / zoom, model="bicubic").numpy()
        else:  # antialiased cubic downsampling of the whole volume, axis by axis
            whole = normalised
            for d, n in enumerate(values.shape):
                whole = apply_matrix(whole, antialiased_cubic_matrix(n, math.floor(n / zoom + 0.5)), d)
        whole = np.clip(whole, 0, 1)
        box = tuple(slice(o, o + 10) for o in origin)
        np.testing.assert_allclose(item["hr"][0].numpy(), whole[box], atol=2e-6)
        assert abs(values.shape[0] / whole.shape[0] - zoom) < 0.03  # voxel size x zoom


def test_intensity_augmentation_scales_target_and_input_alike() -> None:
    values = _smooth_volume((32, 32, 32), seed=5)
    plain = PatchSampler([values], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 2.0)))
    scaled = PatchSampler([values], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 2.0), scale_range=(2.0, 2.0)))
    biased = PatchSampler(
        [values], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2.0, 2.0), bias_field_range=(0.05, 0.05))
    )
    params = PatchParams(volume=0, origin=(8, 8, 8), axis=2, factor=2.0, thickness=2.0, augment_seed=1)
    a, b, c = (s.make_item(params) for s in (plain, scaled, biased))
    torch.testing.assert_close(b["hr"], 2 * a["hr"])
    torch.testing.assert_close(b["lr"], 2 * a["lr"])
    ratio = (c["hr"] / a["hr"]).numpy()[0]
    # Degree-3 Legendre field in 3-D: 20 coefficients of 0.05, |P| <= 1, so within exp(+-1).
    assert np.all((ratio > math.exp(-1)) & (ratio < math.exp(1))) and ratio.std() > 1e-3
    # One field over the whole 32^3 volume: smooth at the voxel scale, and the same field
    # wherever the patch is (shifted patch, same seed: equal ratios on the overlap).
    assert max(np.abs(np.diff(ratio, axis=d)).max() for d in range(3)) < 0.05
    shifted = dataclasses.replace(params, origin=(12, 8, 8))
    ratio2 = (biased.make_item(shifted)["hr"] / plain.make_item(shifted)["hr"]).numpy()[0]
    np.testing.assert_allclose(ratio2[:4], ratio[4:], rtol=1e-5)


def test_real_volume_through_the_nifti_reader() -> None:
    if not MR_GD.exists():
        pytest.skip(f"real MRI volume not found at {MR_GD} (set VOLSR_DATA)")
    sampler = PatchSampler(
        [str(MR_GD)], SamplerOptions(patch_shape=(32, 32, 32), factor_range=(2.0, 5.0), snr_db_range=(15, 30),
        zoom_range=(0.7, 1.3), permute_axes=True, flip_axes=(0, 1, 2), p_foreground=1.0),
    )  # fmt: skip
    batch = sampler.sample_batch(np.random.default_rng(8), batch_size=4)
    hr, lr = batch["hr"], batch["lr"]
    assert hr.shape == (4, 1, 32, 32, 32) and hr.dtype == torch.float32
    assert float(hr.min()) >= 0 and float(hr.max()) <= 1 and torch.isfinite(lr).all()
    assert float(hr.mean()) > 0.1  # foreground patches of a head, not air
    axis = int(batch["params"]["axis"][0])
    assert lr.shape[2 + axis] == math.ceil(32 / float(batch["params"]["factor"][0]) - 1e-9) + 2
    assert all(p.dtype == torch.float64 and p.ndim == 1 for p in batch["positions"])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"patch_shape": (8, 8)}, "patch_shape must be 3 integers"),
        ({"factor_range": (0.5, 2.0)}, "factor_range must be two finite values >= 1"),
        ({"factor_range": (2.2, 2.8), "integer_factors": True}, "holds no integer factor"),
        ({"axes": (3,)}, "axes must be distinct patch axes"),
        ({"profiles": ("sinc",)}, "profiles must be a non-empty subset"),
        ({"p_foreground": 1.5}, r"p_foreground must be in \[0, 1\]"),
        ({"lr_halo": -1}, "lr_halo must be an integer >= 0"),
        ({"zoom_range": (0.0, 1.0)}, "zoom_range must be two finite values > 0"),
    ],
)
def test_bad_options_are_rejected(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        PatchSampler([np.ones((30, 30, 30))], SamplerOptions(**{"patch_shape": (8, 8, 8), **options}))


def test_bad_calls_are_rejected() -> None:
    sampler = PatchSampler([np.ones((30, 30, 30))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
    with pytest.raises(TypeError, match="np.random.Generator"):
        sampler.draw_factor_axis(0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        sampler.sample_batch(np.random.default_rng(0), batch_size=0)
    with pytest.raises(ValueError, match="volume index 3"):
        sampler.make_item(PatchParams(volume=3, origin=(0, 0, 2), axis=2, factor=2.0, thickness=2.0))
    with pytest.raises(ValueError, match="volumes must name at least one"):
        PatchSampler([])


def test_noisy_target_carries_the_noise_the_lr_slices_average() -> None:
    ones = np.ones((40, 40, 72), np.float32)
    options = dict(patch_shape=(32, 32, 32), factor_range=(4.0, 4.0), axes=(2,),
                   profiles=("box",), snr_db_range=(20.0, 20.0), lr_halo=0)
    noisy = PatchSampler([ones], SamplerOptions(noisy_target=True, **options))
    clean = PatchSampler([ones], SamplerOptions(**options))
    drawn = noisy.draw_params(np.random.default_rng(3), factor=4.0, axis=2)
    params = dataclasses.replace(drawn, origin=(*drawn.origin[:2], 8))  # on the LR grid
    item, reference = noisy.make_item(params), clean.make_item(params)
    hr, lr = item["hr"][0].numpy().astype(np.float64), item["lr"][0].numpy()
    np.testing.assert_array_equal(lr, reference["lr"][0].numpy())  # same input either way
    assert torch.all(reference["hr"] == 1.0)
    # Rician noise of sigma 0.1 on 1.0: the target's spread is the noise's, not zero.
    assert abs(hr.std() - 0.1) < 0.01
    # Box slices of thickness 4 on the contract grid: LR voxel k is the mean of the 4 target
    # voxels it covers, so the target is the very field the input averaged.
    blocks = hr.reshape(32, 32, 8, 4).mean(axis=-1)
    np.testing.assert_allclose(lr, blocks, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("factor", "profile", "origin_lr"), [(2.0, "gaussian", 3), (2.5, "box", 5)])
def test_isotropic_patch_lr_equals_whole_volume_thick_slices_along_every_axis(factor, profile, origin_lr):
    values = _smooth_volume((60, 60, 60))
    sampler = PatchSampler([values], SamplerOptions(patch_shape=(12, 12, 12), factor_range=(1.0, 3.0), lr_halo=1))
    origin = (round((origin_lr + 1) * factor),) * 3  # on the whole-volume lattice of every axis
    params = PatchParams(volume=0, origin=origin, axis=0, factor=factor, thickness=factor,
                         profile=profile, isotropic=True)  # fmt: skip
    item = sampler.make_item(params)
    whole, _ = percentile_normalise(values)
    for axis in range(3):
        whole = thick_slice(whole, axis=axis, factor=factor, thickness=factor, profile=profile)
    lr = item["lr"][0].numpy()
    box = tuple(slice(origin_lr, origin_lr + m) for m in lr.shape)
    np.testing.assert_allclose(lr, whole[box], rtol=1e-6, atol=1e-6)
    n_lr, n_cov = downsampled_grid(60, factor)  # the geometry contract's LR grid
    expected = output_coordinates(n_lr, n_cov)[origin[0] : origin[0] + 12] - origin_lr
    assert all(np.allclose(p, expected, atol=1e-12) for p in item["positions"])
    assert item["params"]["isotropic"] == 1


def test_isotropic_batches_are_drawn_with_their_own_factor_range():
    sampler = PatchSampler([_smooth_volume((40, 40, 40))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(3.0, 4.0),
                           isotropic_probability=0.5, isotropic_factor_range=(1.5, 2.0)))  # fmt: skip
    rng = np.random.default_rng(2)
    batches = [sampler.sample_batch(rng, batch_size=2) for _ in range(24)]
    isotropic = [b for b in batches if b["params"]["isotropic"][0] == 1]
    assert 0 < len(isotropic) < len(batches)
    for batch in batches:
        factor = float(batch["params"]["factor"][0])
        sliced = math.ceil(8 / factor) + 2  # the slices covering the patch and one each side
        if batch["params"]["isotropic"][0] == 1:
            assert 1.5 <= factor <= 2.0 and list(batch["lr"].shape[2:]) == [sliced] * 3
        else:
            assert 3.0 <= factor <= 4.0 and sorted(batch["lr"].shape[2:]) == [sliced, 8, 8]
