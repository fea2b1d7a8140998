"""The options of :class:`volsr.data.sampler.PatchSampler`: how training pairs are drawn.

One frozen dataclass, checked once when made, shared by the trainer's config
(:func:`volsr.train.build.build_batches`) and every caller that draws pairs.
"""

from __future__ import annotations

import dataclasses
import math

from volsr.data._options import (
    axis_subset,
    factor_range_option,
    optional_range,
    positive_ints,
    probability,
    profile_subset,
)

__all__ = ["SamplerOptions"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplerOptions:
    """How :class:`~volsr.data.sampler.PatchSampler` draws (LR tile, HR patch) pairs.

    Parameters
    ----------
    patch_shape : (3,) tuple of int
        HR patch shape (voxels), in patch axis order.
    factor_range : (2,) tuple of float
        Slice factor ``f`` (slice spacing / HR voxel size), uniform in ``[low, high]``,
        ``low >= 1``; one draw per batch.
    integer_factors : bool
        Draw ``f`` uniformly among the integers in ``factor_range`` instead.
    axes : sequence of int
        Patch axes that may be the slice axis (uniformly, one draw per batch).
    thickness_ratio_range : (2,) tuple of float
        Thickness / ``f``, uniform (> 0): below 1 leaves gaps, above 1 overlaps slices.
    profiles : sequence of {"gaussian", "box"}
        Slice profiles, chosen uniformly per item.
    snr_db_range : (2,) tuple of float, optional
        SNR (dB, :mod:`volsr.noise` convention on the normalised volume) of the Rician
        noise added to each HR voxel before slice averaging; None: no noise.
    noisy_target : bool
        With noise, the target ``"hr"`` carries the same noise field as the voxels the LR
        slices average (a real reference scan is noisy: the MSE-optimal estimate of it keeps
        the noise the LR slices carry, and the Rician floor of the background); False: the
        clean patch (the network also learns to denoise).
    isotropic_probability : float
        Probability in [0, 1] that a batch is degraded alike along all three axes (an
        isotropic low-resolution acquisition, for arbitrary-scale models) instead of along
        one slice axis.
    isotropic_factor_range : (2,) tuple of float, optional
        Factor range of those batches (default: ``factor_range``).
    lr_halo : int
        Extra LR slices on each side of the patch in the LR tile (>= 0).
    p_foreground : float
        Probability in [0, 1] that a patch centre is drawn from foreground cells.
    foreground_threshold : float
        Normalised intensity above which a voxel is foreground, in [0, 1).
    foreground_cell : int
        Foreground map cell edge (voxels, >= 1).
    zoom_range : (2,) tuple of float, optional
        Voxel size multiplier, uniform per item (e.g. ``(0.7, 1.3)``); None: no resampling.
    permute_axes : bool
        Permute the volume axes uniformly at random per item (the slice axis then falls
        on any anatomical axis).
    flip_axes : sequence of int
        Patch axes each reversed with probability 1/2 per item.
    scale_range, shift_range : (2,) tuple of float, optional
        Intensity ``x * s + t`` with ``s``, ``t`` uniform in these ranges (MONAI
        ``RandScaleIntensity`` / ``RandShiftIntensity``); None: off.
    bias_field_range : (2,) tuple of float, optional
        MONAI ``RandBiasField`` ``coeff_range`` (e.g. ``(0.0, 0.05)``); the multiplicative
        field spans the whole volume (drawn on a 17^3 grid over it, linearly interpolated at
        the patch); None: off.
    bias_field_degree : int
        Polynomial degree of the bias field (>= 1).
    percentile : float
        Intensity reference percentile in (0, 100].
    cache_bytes : int
        Bound of the block cache (bytes, per process).
    stats_voxels : int
        Most voxels read per volume for the statistics (strided beyond that).

    Raises
    ------
    ValueError
        If an option is out of range.

    Examples
    --------
    >>> SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 3)).isotropic_factor_range
    (2.0, 3.0)
    """

    patch_shape: tuple[int, int, int] = (64, 64, 64)
    factor_range: tuple[float, float] = (2.0, 5.0)
    integer_factors: bool = False
    axes: tuple[int, ...] = (0, 1, 2)
    thickness_ratio_range: tuple[float, float] = (1.0, 1.0)
    profiles: tuple[str, ...] = ("gaussian",)
    snr_db_range: tuple[float, float] | None = None
    noisy_target: bool = False
    isotropic_probability: float = 0.0
    isotropic_factor_range: tuple[float, float] | None = None
    lr_halo: int = 1
    p_foreground: float = 0.9
    foreground_threshold: float = 0.1
    foreground_cell: int = 8
    zoom_range: tuple[float, float] | None = None
    permute_axes: bool = False
    flip_axes: tuple[int, ...] = ()
    scale_range: tuple[float, float] | None = None
    shift_range: tuple[float, float] | None = None
    bias_field_range: tuple[float, float] | None = None
    bias_field_degree: int = 3
    percentile: float = 99.9
    cache_bytes: int = 512 * 2**20
    stats_voxels: int = 2**24

    def __post_init__(self) -> None:
        factor_range = factor_range_option(self.factor_range, integer=self.integer_factors)
        iso_range = factor_range if self.isotropic_factor_range is None else self.isotropic_factor_range
        checked = {
            "patch_shape": positive_ints(self.patch_shape, "patch_shape", 3, minimum=1),
            "factor_range": factor_range,
            "integer_factors": bool(self.integer_factors),
            "axes": axis_subset(self.axes, "axes", allow_empty=False),
            "flip_axes": axis_subset(self.flip_axes, "flip_axes", allow_empty=True),
            "thickness_ratio_range": optional_range(self.thickness_ratio_range, "thickness_ratio_range", 0.0),
            "profiles": profile_subset(self.profiles),
            "snr_db_range": optional_range(self.snr_db_range, "snr_db_range", -math.inf),
            "noisy_target": bool(self.noisy_target),
            "isotropic_probability": probability(self.isotropic_probability, "isotropic_probability"),
            "isotropic_factor_range": factor_range_option(iso_range, integer=self.integer_factors),
            "zoom_range": optional_range(self.zoom_range, "zoom_range", 0.0),
            "lr_halo": positive_ints((self.lr_halo,), "lr_halo", 1, minimum=0)[0],
            "p_foreground": probability(self.p_foreground, "p_foreground"),
            "permute_axes": bool(self.permute_axes),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
