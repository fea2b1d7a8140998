"""Tests for volsr.metrics against skimage, SPy (spectral) and analytic values."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import nibabel as nib
import nibabel.tests
import numpy as np
import pytest
import scipy.io
import skimage.data
import skimage.metrics as skm
import spectral

from volsr import metrics
from volsr.errors import InvalidDataError

DATA = Path(os.environ.get("VOLSR_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
PAVIA = DATA / "hsi" / "gatorsense" / "paviaU_subimg.mat"
SK_SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def _camera_pair(rng):
    """A 96x80 crop of skimage's cameraman in [0, 1] and a noisy, blurred-ish estimate."""
    ref = skimage.data.camera()[200:296, 220:300].astype(np.float64) / 255.0
    return ref, ref + 0.05 * rng.standard_normal(ref.shape)


def _anatomical_pair(rng):
    """nibabel's real anatomical.nii (33x41x25 MRI), min-max scaled, plus noise."""
    path = Path(nibabel.tests.__file__).parent / "data" / "anatomical.nii"
    ref = np.asarray(nib.load(path).dataobj, dtype=np.float64)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    return ref, ref + 0.03 * rng.standard_normal(ref.shape)


def _random_pair(rng, shape):
    ref = rng.random(shape)
    return ref, ref + 0.1 * rng.standard_normal(shape)


def _pairs():
    rng = np.random.default_rng(1)
    return {
        "random2d": _random_pair(rng, (40, 33)),
        "random3d": _random_pair(rng, (20, 17, 15)),
        "camera": _camera_pair(rng),
        "anatomical": _anatomical_pair(rng),
    }


PAIRS = _pairs()


@pytest.fixture(scope="module")
def pavia():
    """Real ROSIS Pavia University crop (50x50x103), normalised by its max, first 24 bands."""
    if not PAVIA.exists():
        pytest.skip(f"shared data not found at {PAVIA} (set VOLSR_DATA)")
    cube = scipy.io.loadmat(PAVIA)["paviaU_subimg"][:, :, :24].astype(np.float64)
    cube /= cube.max()
    rng = np.random.default_rng(7)
    return cube, np.clip(cube + 0.02 * rng.standard_normal(cube.shape), 0, None)


# ---------------------------------------------------------------- against skimage


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_psnr_rmse_match_skimage(name):
    """Provenance: skimage.metrics.peak_signal_noise_ratio / mean_squared_error (float64)."""
    ref, est = PAIRS[name]
    assert metrics.psnr(ref, est, data_range=1.0) == pytest.approx(
        skm.peak_signal_noise_ratio(ref, est, data_range=1.0), rel=1e-12)
    assert metrics.rmse(ref, est) == pytest.approx(np.sqrt(skm.mean_squared_error(ref, est)),
                                                   rel=1e-12)


@pytest.mark.parametrize("normalization", ["euclidean", "min-max", "mean"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_nrmse_matches_skimage(name, normalization):
    """Provenance: skimage.metrics.normalized_root_mse with the same normalization name."""
    ref, est = PAIRS[name]
    expected = skm.normalized_root_mse(ref, est, normalization=normalization)
    assert metrics.nrmse(ref, est, normalization=normalization) == pytest.approx(expected,
                                                                                 rel=1e-12)


@pytest.mark.parametrize("sigma", [1.5, 1.0])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_ssim_matches_skimage(name, sigma):
    """Provenance: skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False) on float64 input: Wang et al. (2004) Gaussian SSIM, 2-D and 3-D."""
    ref, est = PAIRS[name]
    kwargs = {**SK_SSIM, "sigma": sigma}
    expected = skm.structural_similarity(ref, est, data_range=1.0, **kwargs)
    assert metrics.ssim(ref, est, data_range=1.0, sigma=sigma) == pytest.approx(expected, abs=1e-6)


def test_float32_inputs_reduce_in_float64():
    """Provenance: skimage on the float64 upcast; float32 input must give the same Python float."""
    ref, est = PAIRS["camera"]
    r32, e32 = ref.astype(np.float32), est.astype(np.float32)
    value = metrics.psnr(r32, e32, data_range=1.0)
    assert type(value) is float
    assert value == pytest.approx(skm.peak_signal_noise_ratio(
        r32.astype(np.float64), e32.astype(np.float64), data_range=1.0), rel=1e-12)
    expected = skm.structural_similarity(r32.astype(np.float64), e32.astype(np.float64),
                                         data_range=1.0, **SK_SSIM)
    assert metrics.ssim(r32, e32, data_range=1.0) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- analytic volume cases


@pytest.mark.parametrize("d", [0.5, 0.1, 0.01, 1e-4])
def test_psnr_constant_offset(d):
    """Analytic: an offset d everywhere gives MSE = d**2, so PSNR = 10 log10(1/d**2) = -20 log10 d."""
    ref = np.random.default_rng(0).random((6, 7, 8))
    assert metrics.psnr(ref, ref + d, data_range=1.0) == pytest.approx(-20 * np.log10(d), rel=1e-9)


def test_identical_inputs():
    """Analytic: MSE = 0 gives PSNR = inf (documented), SSIM = 1, RMSE = NRMSE = 0."""
    ref = PAIRS["anatomical"][0]
    assert metrics.psnr(ref, ref, data_range=1.0) == float("inf")
    assert metrics.ssim(ref, ref, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    assert metrics.rmse(ref, ref) == 0.0
    assert metrics.nrmse(ref, ref) == 0.0


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("name", ["camera", "anatomical"])
def test_all_true_mask_equals_no_mask(name):
    """Invariant: a mask selecting every voxel must not change any metric."""
    ref, est = PAIRS[name]
    full = np.ones(ref.shape, dtype=bool)
    assert metrics.psnr(ref, est, data_range=1.0, mask=full) == metrics.psnr(ref, est, data_range=1.0)
    assert metrics.ssim(ref, est, data_range=1.0, mask=full) == metrics.ssim(ref, est, data_range=1.0)
    assert metrics.rmse(ref, est, mask=full) == metrics.rmse(ref, est)
    for norm in ("euclidean", "min-max", "mean"):
        assert metrics.nrmse(ref, est, normalization=norm, mask=full) == pytest.approx(
            metrics.nrmse(ref, est, normalization=norm), rel=1e-15)


def test_masked_metrics_equal_metrics_of_masked_voxels():
    """Oracle: inside a foreground mask, PSNR/RMSE/NRMSE equal skimage's values on ref[mask];
    SSIM equals the mean of skimage's full SSIM map over mask minus the 5-voxel border strip."""
    ref, est = PAIRS["anatomical"]
    mask = ref > 0.3
    assert 100 < mask.sum() < 0.9 * mask.size
    assert metrics.psnr(ref, est, data_range=1.0, mask=mask) == pytest.approx(
        skm.peak_signal_noise_ratio(ref[mask], est[mask], data_range=1.0), rel=1e-12)
    assert metrics.rmse(ref, est, mask=mask) == pytest.approx(
        np.sqrt(np.mean((ref[mask] - est[mask]) ** 2)), rel=1e-12)
    assert metrics.nrmse(ref, est, normalization="min-max", mask=mask) == pytest.approx(
        skm.normalized_root_mse(ref[mask], est[mask], normalization="min-max"), rel=1e-12)
    _, smap = skm.structural_similarity(ref, est, data_range=1.0, full=True, **SK_SSIM)
    inside = np.zeros_like(mask)
    inside[5:-5, 5:-5, 5:-5] = True
    expected = smap[mask & inside].mean()
    assert metrics.ssim(ref, est, data_range=1.0, mask=mask) == pytest.approx(expected, abs=1e-6)


def test_mask_errors():
    """User errors: non-boolean mask, wrong shape, empty mask, mask only in the SSIM border."""
    ref, est = PAIRS["random2d"]
    with pytest.raises(TypeError, match="mask must be a boolean"):
        metrics.psnr(ref, est, data_range=1.0, mask=np.ones(ref.shape))
    with pytest.raises(ValueError, match=r"mask shape \(3, 3\)"):
        metrics.rmse(ref, est, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="selects no voxel"):
        metrics.nrmse(ref, est, mask=np.zeros(ref.shape, bool))
    border = np.zeros(ref.shape, bool)
    border[0] = True
    with pytest.raises(ValueError, match="border"):
        metrics.ssim(ref, est, data_range=1.0, mask=border)


# ---------------------------------------------------------------- spectral metrics


def test_mpsnr_mssim_match_skimage_per_band(pavia):
    """Provenance: mean over bands of skimage PSNR (SSPSR's compare_mpsnr), and skimage SSIM with
    channel_axis=-1 (the mean of per-channel SSIM) on a real ROSIS Pavia crop."""
    ref, est = pavia
    per_band = [skm.peak_signal_noise_ratio(ref[..., b], est[..., b], data_range=1.0)
                for b in range(ref.shape[-1])]
    assert metrics.mpsnr(ref, est, data_range=1.0) == pytest.approx(np.mean(per_band), rel=1e-12)
    expected = skm.structural_similarity(ref, est, data_range=1.0, channel_axis=-1, **SK_SSIM)
    assert metrics.mssim(ref, est, data_range=1.0) == pytest.approx(expected, abs=1e-6)
    moved_ref, moved_est = np.moveaxis(ref, -1, 0), np.moveaxis(est, -1, 0)
    assert metrics.mssim(moved_ref, moved_est, data_range=1.0, channel_axis=0) == pytest.approx(
        expected, abs=1e-6)


def test_mpsnr_zero_mse_band_is_skipped():
    """Documented convention: a band with zero MSE is left out (warning); all bands perfect -> inf."""
    ref = np.random.default_rng(3).random((8, 8, 3))
    est = ref.copy()
    est[..., 1] += 0.1
    est[..., 2] += 0.01
    with pytest.warns(UserWarning, match="1 of 3 bands left out"):
        value = metrics.mpsnr(ref, est, data_range=1.0)
    assert value == pytest.approx(30.0)
    assert metrics.mpsnr(ref, ref, data_range=1.0) == float("inf")


def test_single_band_images():
    """Single-band case: channel_axis=None reduces MPSNR/MSSIM to PSNR/SSIM of the 2-D image."""
    ref, est = PAIRS["camera"]
    assert metrics.mpsnr(ref, est, data_range=1.0, channel_axis=None) == metrics.psnr(
        ref, est, data_range=1.0)
    assert metrics.mssim(ref, est, data_range=1.0, channel_axis=None) == metrics.ssim(
        ref, est, data_range=1.0)
    assert metrics.cc(ref, est, channel_axis=None) == pytest.approx(
        np.corrcoef(ref.ravel(), est.ravel())[0, 1], rel=1e-12)


def _spectra_at_angle(rng, degrees, shape=(6, 5), bands=7):
    """Per pixel: a random unit u, a unit v orthogonal to it, y = cos(t) u + sin(t) v."""
    u = rng.standard_normal((*shape, bands))
    v = rng.standard_normal((*shape, bands))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    v -= np.sum(u * v, axis=-1, keepdims=True) * u
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    t = np.radians(degrees)
    return u, np.cos(t) * u + np.sin(t) * v


@pytest.mark.parametrize("degrees", [30.0, 1.0, 90.0, 150.0])
def test_sam_known_angle(degrees):
    """Analytic: spectra built at a known angle (Gram-Schmidt) give that angle in degrees."""
    ref, est = _spectra_at_angle(np.random.default_rng(5), degrees)
    assert metrics.sam(ref, est) == pytest.approx(degrees, abs=1e-6)
    np.testing.assert_allclose(metrics.sam_map(ref, est), degrees, atol=1e-6)


def test_sam_scale_invariant_per_pixel():
    """Invariant: multiplying each pixel's spectrum by its own positive factor keeps every angle."""
    rng = np.random.default_rng(6)
    ref, est = _spectra_at_angle(rng, 20.0)
    est = est + 0.1 * rng.standard_normal(est.shape)
    factors = rng.uniform(0.01, 100.0, size=(*ref.shape[:-1], 1))
    np.testing.assert_allclose(metrics.sam_map(ref * factors, est),
                               metrics.sam_map(ref, est), atol=1e-6)
    assert metrics.sam(ref, est / factors) == pytest.approx(metrics.sam(ref, est), abs=1e-6)


def test_sam_map_matches_spectral_python(pavia):
    """Provenance: SPy's spectral.spectral_angles (radians) between every pixel of the real Pavia
    crop and one fixed spectrum; zero pixels are NaN and excluded from the mean."""
    ref, _ = pavia
    member = ref[10, 20]
    est = np.broadcast_to(member, ref.shape)
    expected = np.degrees(spectral.spectral_angles(ref, member[None, :])[..., 0])
    np.testing.assert_allclose(metrics.sam_map(ref, est), expected, atol=1e-5)
    holed = ref.copy()
    holed[:5] = 0.0
    angles = metrics.sam_map(holed, est)
    assert np.isnan(angles[:5]).all() and not np.isnan(angles[5:]).any()
    assert metrics.sam(holed, est) == pytest.approx(expected[5:].mean(), abs=1e-5)
    band_first = np.moveaxis(ref, -1, 0)
    np.testing.assert_allclose(metrics.sam_map(band_first, np.moveaxis(est, -1, 0), channel_axis=0),
                               expected, atol=1e-5)


def test_sam_undefined_cases():
    """Errors: every spectrum zero -> InvalidDataError; no band axis -> ValueError."""
    zeros = np.zeros((3, 3, 4))
    with pytest.raises(InvalidDataError, match="zero-norm"):
        metrics.sam(zeros, zeros + 1)
    with pytest.raises(ValueError, match="channel_axis"):
        metrics.sam(zeros + 1, zeros + 1, channel_axis=None)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_ergas_uniform_relative_error(scale):
    """Analytic (Wald's formula, hsi_anchors.md s. 5): est_b = ref_b +/- e * mu_b (a per-band
    offset of e times the band mean) gives RMSE_b = e * mu_b, so RMSE_b / mu_b = e in every
    band and ERGAS = 100 / r * sqrt(mean_b e**2) = 100 * e / r, whatever each band's texture.
    A multiplicative error (1 + e) gives the same only for constant bands, since then
    RMSE_b = e * sqrt(mean(x_b**2)) = e * mu_b."""
    rng = np.random.default_rng(8)
    ref = rng.uniform(0.1, 1.0, (10, 9, 6)) * rng.uniform(0.2, 5.0, 6)
    mu = ref.mean(axis=(0, 1))
    e = 0.03
    est = ref + e * mu * rng.choice([-1.0, 1.0], 6)
    assert metrics.ergas(ref, est, scale=scale) == pytest.approx(100 * e / scale, rel=1e-12)
    # Constant bands c_b with est = (1 + e) c_b: RMSE_b = e c_b = e mu_b, the same result.
    flat = np.ones((5, 4, 6)) * rng.uniform(0.1, 3.0, 6)
    assert metrics.ergas(flat, (1 + e) * flat, scale=scale) == pytest.approx(100 * e / scale,
                                                                             rel=1e-12)


def test_ergas_scales_as_inverse_r_and_zero_mean_bands(pavia):
    """Analytic: ERGAS is proportional to 1/r; a zero-mean reference band is left out (warning)."""
    ref, est = pavia
    e4 = metrics.ergas(ref, est, scale=4)
    assert metrics.ergas(ref, est, scale=2) == pytest.approx(2 * e4, rel=1e-12)
    assert metrics.ergas(ref, est, scale=2.5) == pytest.approx(1.6 * e4, rel=1e-12)
    zeroed = ref.copy()
    zeroed[..., 0] = 0.0
    with pytest.warns(UserWarning, match="zero reference mean"):
        value = metrics.ergas(zeroed, est, scale=4)
    assert value == pytest.approx(metrics.ergas(ref[..., 1:], est[..., 1:], scale=4), rel=1e-12)
    for bad in (None, 0, -2, float("nan"), "4"):
        with pytest.raises(ValueError, match="scale"):
            metrics.ergas(ref, est, scale=bad)


def test_cc_linear_transform_and_numpy(pavia):
    """Analytic: a positive linear map of each band gives CC = 1 (negative gives -1);
    provenance for noisy data: mean of np.corrcoef per band."""
    ref, est = pavia
    gains = np.linspace(0.5, 3.0, ref.shape[-1])
    assert metrics.cc(ref, gains * ref + 0.2) == pytest.approx(1.0, abs=1e-12)
    assert metrics.cc(ref, -gains * ref) == pytest.approx(-1.0, abs=1e-12)
    expected = np.mean([np.corrcoef(ref[..., b].ravel(), est[..., b].ravel())[0, 1]
                        for b in range(ref.shape[-1])])
    assert metrics.cc(ref, est) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- evaluate


def test_evaluate_volume_and_spectral(pavia):
    """Consistency: evaluate returns exactly the individual metric values, keyed by name."""
    ref, est = PAIRS["anatomical"]
    mask = ref > 0.3
    out = metrics.evaluate(ref, est, data_range=1.0, mask=mask)
    assert list(out) == ["psnr", "ssim", "nrmse", "psnr_foreground", "ssim_foreground",
                         "nrmse_foreground"]
    assert out["psnr_foreground"] == metrics.psnr(ref, est, data_range=1.0, mask=mask)
    assert out["ssim_foreground"] == metrics.ssim(ref, est, data_range=1.0, mask=mask)
    assert out["ssim"] == metrics.ssim(ref, est, data_range=1.0)
    cube, cube_est = pavia
    out = metrics.evaluate(cube, cube_est, data_range=1.0, spectral=True, scale=4)
    assert list(out) == ["mpsnr", "mssim", "sam", "ergas", "cc", "rmse"]
    assert out["ergas"] == metrics.ergas(cube, cube_est, scale=4)
    assert all(type(v) is float for v in out.values())
    assert "ergas" not in metrics.evaluate(cube, cube_est, data_range=1.0, spectral=True)
    with pytest.raises(ValueError, match="mask"):
        metrics.evaluate(cube, cube_est, data_range=1.0, spectral=True, mask=cube > 0)


# ---------------------------------------------------------------- R2 / argument checks


def _takes(name):
    return inspect.signature(getattr(metrics, name)).parameters


DATA_RANGE_FUNCS = [n for n in metrics.__all__ if "data_range" in _takes(n)]


def test_data_range_functions_found():
    """Guard: the R2 parametrisation below must cover the range-dependent metrics."""
    assert {"psnr", "ssim", "mpsnr", "mssim", "evaluate"} <= set(DATA_RANGE_FUNCS)


@pytest.mark.parametrize("name", DATA_RANGE_FUNCS)
def test_data_range_required(name):
    """STYLE.md R2: never infer data_range; float32 input without it or with None raises."""
    x = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    func = getattr(metrics, name)
    with pytest.raises(ValueError, match="data_range"):
        func(x, x)
    with pytest.raises(ValueError, match="data_range"):
        func(x, x, data_range=None)
    with pytest.raises(ValueError, match="data_range"):
        func(x, x, data_range=0.0)


@pytest.mark.parametrize("name", metrics.__all__)
def test_shape_mismatch_names_both_shapes(name):
    """STYLE.md R4: a shape mismatch is a ValueError that shows both shapes."""
    params = _takes(name)
    kwargs = {k: v for k, v in (("data_range", 1.0), ("scale", 4)) if k in params}
    a, b = np.ones((16, 16, 3)), np.ones((16, 15, 3))
    with pytest.raises(ValueError, match=r"\(16, 16, 3\).*\(16, 15, 3\)"):
        getattr(metrics, name)(a, b, **kwargs)


@pytest.mark.parametrize("name", metrics.__all__)
def test_signature_keyword_only(name):
    """STYLE.md R3: options after the two arrays are keyword-only; no **kwargs."""
    params = list(_takes(name).values())
    assert [p.name for p in params[:2]] == ["reference", "estimate"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:])


def test_other_argument_errors():
    """User errors name the parameter: unknown normalization, bad channel_axis, NaN input,
    image smaller than the SSIM window, 1-D SSIM, zero NRMSE denominator."""
    x = np.random.default_rng(0).random((12, 12, 3))
    with pytest.raises(ValueError, match="normalization must be one of"):
        metrics.nrmse(x, x, normalization="Euclidean")
    with pytest.raises(ValueError, match="channel_axis"):
        metrics.mpsnr(x, x, data_range=1.0, channel_axis=3)
    with pytest.raises(ValueError, match="channel_axis"):
        metrics.mssim(x, x, data_range=1.0, channel_axis=-4)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidDataError, match="estimate contains NaN"):
        metrics.rmse(x, bad)
    with pytest.raises(ValueError, match="11-voxel window"):
        metrics.ssim(x[:10, :, 0], x[:10, :, 0], data_range=1.0)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        metrics.ssim(x.ravel(), x.ravel(), data_range=1.0)
    with pytest.raises(ValueError, match="denominator 0"):
        metrics.nrmse(np.zeros(5), np.ones(5), normalization="mean")
