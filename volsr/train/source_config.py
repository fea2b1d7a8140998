"""The sections of a training config that depend on its data source: network, data, validation.

Volumes (MRI): :class:`ModelConfig`, :class:`DataConfig`, :class:`ValidationConfig`; cubes
(hyperspectral): :class:`CubeModelConfig`, :class:`CubeDataConfig`,
:class:`CubeValidationConfig`. :mod:`volsr.train.config` assembles them with the shared
sections (run, optimiser, loss, critic) into a whole experiment; both modules' classes are
importable from there.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

__all__ = [
    "ModelConfig",
    "DataConfig",
    "ValidationConfig",
    "CubeModelConfig",
    "CubeDataConfig",
    "CubeValidationConfig",
    "SOURCE_CHECKS",
]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The generator (and, for a GAN, the critic): :mod:`volsr.models.mdcsrn`.

    Parameters
    ----------
    arch : {"mdcsrn", "meta_srgan"}
        Network architecture: :class:`~volsr.models.mdcsrn.MDCSRN` (on the cubic HR grid)
        or :class:`~volsr.models.meta_srgan.MetaSRGAN` (on the LR grid, any factor).
    blocks, units : int
        Dense blocks and units per block (published mDCSRN: 4 and 4; Meta-SRGAN: residual
        dense blocks and conv layers per block).
    growth : int
        Maps added by each unit, k (published: 16).
    base : int
        Maps after the first conv and after each compressor, 2k (published: 32).
    norm : {"none", "layer", "batch"}
        Normalisation before each unit (see :class:`~volsr.models.mdcsrn.MDCSRN`; mDCSRN only).
    taps, hidden : int
        Meta-SRGAN only: LR voxels per axis of the predicted filter (even) and the width of
        the weight-prediction MLPs.
    scale_range : (2,) float
        Per-axis factors the trained model is declared to support (its card's
        ``scale_range``); match the training factor range.
    critic_base : int
        Maps of the critic's first level (GAN runs only).
    critic_levels : int
        Levels of the critic (each halves the resolution; GAN runs only).
    """

    arch: Literal["mdcsrn", "meta_srgan"] = "mdcsrn"
    blocks: int = 4
    units: int = 4
    growth: int = 16
    base: int = 32
    norm: Literal["none", "layer", "batch"] = "none"
    scale_range: tuple[float, float] = (1.0, 5.0)
    taps: int = 4
    hidden: int = 64
    critic_base: int = 32
    critic_levels: int = 3


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training patches: the YAML face of :class:`volsr.data.SamplerOptions` plus the stream's settings.

    Every field that :class:`~volsr.data.SamplerOptions` also has (``factor_range``,
    ``integer_factors``, ``thickness_ratio_range``, ``profiles``, ``snr_db_range``,
    ``noisy_target``, ``isotropic_probability``, ``isotropic_factor_range``, ``lr_halo``,
    ``p_foreground``, ``zoom_range``, ``permute_axes``, ``flip_axes``, ``scale_range``,
    ``shift_range``, ``bias_field_range``) has its name, default and meaning there; this schema
    checks them with the YAML key in its messages (``data.factor_range``), and the trainer passes
    them on by name (:func:`volsr.train.build.build_batches`).

    Parameters
    ----------
    volumes : tuple of str
        Glob patterns of training volumes; relative patterns are taken from the shared
        data folder (``$VOLSR_DATA``, else ``../shared/data``).
    patch : (3,) int
        HR patch shape in voxels (the sampler's ``patch_shape``).
    slice_axes : tuple of int
        Spatial axes the slice axis is drawn from (the sampler's ``axes``).
    cache_mb : int
        Block cache size per process, MiB (the sampler's ``cache_bytes``).
    batch_size : int
        Patches per step over all processes (each of N DDP processes takes 1/N; every
        batch shares one slice factor and slice axis).
    workers : int
        DataLoader worker processes (0: load in the training process).
    """

    volumes: tuple[str, ...]
    patch: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 4
    factor_range: tuple[float, float] = (2.0, 5.0)
    integer_factors: bool = False
    slice_axes: tuple[int, ...] = (0, 1, 2)
    thickness_ratio_range: tuple[float, float] = (1.0, 1.0)
    profiles: tuple[Literal["gaussian", "box"], ...] = ("gaussian",)
    snr_db_range: tuple[float, float] | None = None
    noisy_target: bool = False
    isotropic_probability: float = 0.0
    isotropic_factor_range: tuple[float, float] | None = None
    lr_halo: int = 1
    p_foreground: float = 0.9
    zoom_range: tuple[float, float] | None = None
    permute_axes: bool = False
    flip_axes: tuple[int, ...] = ()
    scale_range: tuple[float, float] | None = None
    shift_range: tuple[float, float] | None = None
    bias_field_range: tuple[float, float] | None = None
    cache_mb: int = 512
    workers: int = 0


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Periodic validation on whole volumes through :func:`volsr.engine.upsample`.

    Each volume is normalised by its 99.9th percentile and clipped to [0, 1], thick-sliced
    along ``axis`` by ``factor`` with a Gaussian profile (FWHM = slice spacing), and
    upsampled back; PSNR and SSIM (data range 1) compare with the HR volume.

    Parameters
    ----------
    volumes : tuple of str
        ``"icbm152"`` (the template inside nilearn) or paths; relative paths are taken
        from the shared data folder.
    every : int
        Steps between validations (>= 1); also run at the end.
    factor : float
        Thick-slice factor (>= 1).
    axis : int
        Slice axis (0, 1 or 2).
    crop : (3,) int or None
        Centre crop of each HR volume (voxels) to keep validation cheap (None: whole).
    """

    volumes: tuple[str, ...] = ("icbm152", "mri/validation/chris_t1.nii.gz")
    every: int = 1000
    factor: float = 4.0
    axis: int = 2
    crop: tuple[int, int, int] | None = None


@dataclasses.dataclass(frozen=True)
class CubeModelConfig:
    """The cubes' network, :class:`~volsr.models.attn1d2d.Attn1D2D` (its arguments, see there).

    Parameters
    ----------
    arch : {"attn1d2d"}
        The architecture (the one cube network).
    scale : int
        Spatial factor (rows and columns).
    features, stages, attention_kernel : int
        Width, 1D-2D stages, band-attention kernel.
    init_residual_scale : float
        Starting weight of the learned residual over bicubic (0: starts as bicubic).
    """

    arch: Literal["attn1d2d"] = "attn1d2d"
    scale: int = 4
    features: int = 16
    stages: int = 3
    attention_kernel: int = 5
    init_residual_scale: float = 0.0


@dataclasses.dataclass(frozen=True)
class CubeDataConfig:
    """Training patches from cubes: the arguments of :class:`volsr.data.hsi.HSIPatchDataset`.

    Parameters
    ----------
    cubes : tuple of str
        ``path[:key]`` specs, relative to the shared data folder (``$VOLSR_DATA``, else
        ``../shared/data``) unless absolute.
    lr_patch, batch_size : int
        LR patch side (pixels) and patches per step.
    degradation : {"bicubic", "gaussian"}
        LR model (bicubic: MATLAB ``imresize``, antialiased: the protocol).
    augment : bool
        Random flips and 90-degree rotations.
    band_window_probability : float
        Share of batches cut to one random contiguous band window of ``min_bands`` to
        ``max_bands`` bands (None: the cubes' fewest).
    min_bands : int
    max_bands : int or None
    reverse_probability : float
        Share of batches with the band order reversed.
    grid_phases : int
        LR grids per axis (each cube degraded at that many HR offsets).
    """

    cubes: tuple[str, ...]
    lr_patch: int = 16
    batch_size: int = 4
    degradation: Literal["bicubic", "gaussian"] = "bicubic"
    augment: bool = True
    band_window_probability: float = 0.5
    min_bands: int = 24
    max_bands: int | None = None
    reverse_probability: float = 0.5
    grid_phases: int = 1


@dataclasses.dataclass(frozen=True)
class CubeValidationConfig:
    """Held-out cubes (specs as :class:`CubeDataConfig`'s), scored every ``every`` steps."""

    cubes: tuple[str, ...]
    every: int = 500


#: Range checks of these sections: ``"Section.field" -> (predicate, wording)``.
SOURCE_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "DataConfig.patch": (lambda v: all(n >= 1 for n in v), "positive sizes"),
    "DataConfig.batch_size": (lambda v: v >= 1, ">= 1"),
    "DataConfig.factor_range": (lambda v: 1 <= v[0] <= v[1], "1 <= low <= high"),
    "DataConfig.thickness_ratio_range": (lambda v: 0 < v[0] <= v[1], "0 < low <= high"),
    "DataConfig.slice_axes": (lambda v: len(v) > 0 and set(v) <= {0, 1, 2}, "axes in 0, 1, 2"),
    "DataConfig.profiles": (lambda v: len(v) > 0, "a non-empty list"),
    "DataConfig.snr_db_range": (lambda v: v[0] <= v[1], "low <= high"),
    "DataConfig.isotropic_probability": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "DataConfig.isotropic_factor_range": (lambda v: 1 <= v[0] <= v[1], "1 <= low <= high"),
    "DataConfig.lr_halo": (lambda v: v >= 0, ">= 0"),
    "DataConfig.p_foreground": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "DataConfig.zoom_range": (lambda v: 0 < v[0] <= v[1], "0 < low <= high"),
    "DataConfig.flip_axes": (lambda v: set(v) <= {0, 1, 2}, "axes in 0, 1, 2"),
    "DataConfig.scale_range": (lambda v: v[0] <= v[1], "low <= high"),
    "DataConfig.shift_range": (lambda v: v[0] <= v[1], "low <= high"),
    "DataConfig.bias_field_range": (lambda v: v[0] <= v[1], "low <= high"),
    "DataConfig.cache_mb": (lambda v: v >= 1, ">= 1"),
    "DataConfig.workers": (lambda v: v >= 0, ">= 0"),
    "ModelConfig.blocks": (lambda v: v >= 1, ">= 1"),
    "ModelConfig.units": (lambda v: v >= 1, ">= 1"),
    "ModelConfig.growth": (lambda v: v >= 1, ">= 1"),
    "ModelConfig.base": (lambda v: v >= 1, ">= 1"),
    "ModelConfig.taps": (lambda v: v >= 2 and v % 2 == 0, "an even integer >= 2"),
    "ModelConfig.hidden": (lambda v: v >= 1, ">= 1"),
    "ModelConfig.critic_base": (lambda v: v >= 1, ">= 1"),
    "ModelConfig.critic_levels": (lambda v: v >= 1, ">= 1"),
    "ModelConfig.scale_range": (lambda v: 0 < v[0] <= v[1], "0 < low <= high"),
    "ValidationConfig.every": (lambda v: v >= 1, ">= 1"),
    "ValidationConfig.factor": (lambda v: v >= 1, ">= 1"),
    "ValidationConfig.axis": (lambda v: v in (0, 1, 2), "0, 1 or 2"),
    "ValidationConfig.crop": (lambda v: v is None or all(n >= 1 for n in v), "positive sizes"),
    "CubeModelConfig.scale": (lambda v: v >= 2, ">= 2"),
    "CubeDataConfig.batch_size": (lambda v: v >= 1, ">= 1"),
    "CubeValidationConfig.every": (lambda v: v >= 1, ">= 1"),
}
