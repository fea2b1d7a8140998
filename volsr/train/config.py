"""The YAML schema of a training run: frozen dataclasses, one per section.

One YAML file per experiment (``configs/{mri,hsi}/<arch>/*.yaml``) maps onto
:class:`TrainConfig`. A file may start from another (``extends: base.yaml``, relative to the
file): it holds only what it changes, merged section by section over its base
(:func:`volsr.train.config_files.read_config`), so a lineage reads top-down. Loading uses ``yaml.safe_load`` (no
Python objects from YAML), rejects unknown keys naming the key
and the allowed ones, checks every value's type and range, and fills omitted keys with
the defaults documented on each dataclass. The trainer never sees this schema: the builder
(:mod:`volsr.train.build`) turns it into constructed objects.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from volsr.train.config_files import read_config

__all__ = [
    "RunConfig",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "LossConfig",
    "GanConfig",
    "ValidationConfig",
    "TrainConfig",
    "check_loss",
    "config_from_dict",
    "load_config",
]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run writes and how it logs.

    Parameters
    ----------
    name : str
        Run name; the exported weights are ``<output_dir>/export/<name>.safetensors``.
    output_dir : str
        Run folder (checkpoints, logs, export); relative paths are taken from the folder
        the command runs in.
    seed : int
        Seeds the model initialisation, the data stream and the GAN penalty's random
        mixing weights (every generator is explicit; nothing seeds torch globally).
    checkpoint_every : int
        Steps between periodic checkpoints (>= 1).
    keep_last : int
        Periodic checkpoints kept (>= 1); ``best`` is kept besides them.
    log_every : int
        Steps between rows of ``train.csv`` (>= 1).
    progress : bool
        Show a tqdm progress bar (rank 0 only).
    init_from : str or None
        A checkpoint of an earlier run (``runs/<run>/checkpoints/best.safetensors``) whose
        generator weights (its EMA weights when it has them) start this run, with a fresh
        optimiser and schedule (fine-tuning on other data); ignored on ``--resume``, where the
        run's own checkpoint holds the weights. The architecture must match.
    """

    name: str
    output_dir: str
    seed: int = 0
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    progress: bool = True
    init_from: str | None = None


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
    """Training patches: the arguments of :class:`volsr.data.sampler.PatchSampler`.

    Parameters
    ----------
    volumes : tuple of str
        Glob patterns of training volumes; relative patterns are taken from the shared
        data folder (``$VOLSR_DATA``, else ``../shared/data``).
    patch : (3,) int
        HR patch shape in voxels.
    batch_size : int
        Patches per step over all processes (each of N DDP processes takes 1/N; every
        batch shares one slice factor and slice axis).
    factor_range : (2,) float
        Thick-slice factor (slice spacing / HR voxel size), drawn uniformly per batch.
    integer_factors : bool
        Draw integer factors only.
    slice_axes : tuple of int
        Spatial axes the slice axis is drawn from.
    thickness_ratio_range : (2,) float
        Slice thickness / slice spacing (1: contiguous slices, < 1: gaps, > 1: overlap).
    profiles : tuple of {"gaussian", "box"}
        Slice profiles drawn from.
    snr_db_range : (2,) float or None
        Rician noise SNR in dB (foreground mean / sigma) drawn per patch (None: clean).
    noisy_target : bool
        The target patch carries the same noise as the LR input's source voxels (as a noisy
        reference scan does) instead of being clean.
    isotropic_probability : float
        Probability in [0, 1] that a batch is degraded alike along all three axes (isotropic
        low resolution, for arbitrary-scale models) instead of along one slice axis.
    isotropic_factor_range : (2,) float or None
        Factor range of those batches (None: ``factor_range``).
    lr_halo : int
        Extra LR slices on each side of the tile (context for the interpolation).
    p_foreground : float
        Probability in [0, 1] of centring a patch on foreground.
    zoom_range : (2,) float or None
        Isotropic resampling to ``zoom`` times the voxel size (None: native spacing only).
    permute_axes : bool
        Randomly permute the three axes.
    flip_axes : tuple of int
        Axes flipped with probability 1/2 each.
    scale_range, shift_range : (2,) float or None
        MONAI random intensity scale / shift ranges (None: off).
    bias_field_range : (2,) float or None
        MONAI random bias-field coefficient range (None: off).
    cache_mb : int
        Block cache size per process (MiB).
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
class OptimConfig:
    """Generator optimisation: AdamW with a cosine schedule after a linear warmup.

    Parameters
    ----------
    steps : int
        Length of the schedule (the run stops there; ``--max-steps`` stops earlier without
        changing the schedule, so a resumed run continues the same curve).
    lr : float
        Peak learning rate (> 0).
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr``, in [0, 1].
    warmup_steps : int
        Linear warmup from ``lr / warmup_steps`` to ``lr`` (>= 0).
    weight_decay : float
        AdamW decoupled weight decay (>= 0).
    betas : (2,) float
        AdamW moment coefficients, each in [0, 1).
    grad_clip : float or None
        Maximum global gradient norm of the generator (None: no clipping).
    amp : bool
        Mixed precision (bfloat16 autocast) on CUDA; ignored on CPU.
    ema_decay : float or None
        Keep an exponential moving average of the weights with this decay in (0, 1),
        validated and exported instead of the raw weights (None: no EMA).
    """

    steps: int
    lr: float = 1e-4
    min_lr_ratio: float = 0.01
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    amp: bool = True
    ema_decay: float | None = None


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The generator's loss: a weighted sum of the terms of :data:`volsr.train.losses.TERMS`.

    ``loss = l1 * L1 + mse * MSE + charbonnier * Charbonnier + sam * SAM (radians)
    + spectral_gradient * L1(band differences) + wgan * (-mean critic(G(x)))``; a term of
    weight 0 is not computed. The spectral terms need cubes (bands); ``wgan`` needs volumes
    and a ``gan:`` section (the critic's settings), and a ``gan:`` section needs ``wgan > 0``.

    Parameters
    ----------
    l1, mse, charbonnier : float
        Pixel terms (>= 0); Charbonnier with eps 1e-3.
    sam : float
        Mean spectral angle in radians (>= 0; cubes only).
    spectral_gradient : float
        L1 of the first differences along the bands (>= 0; cubes only).
    wgan : float
        The critic's generator term (>= 0; 1e-3 as in mDCSRN-GAN), from ``gan.start_step`` on.
    """

    l1: float = 1.0
    mse: float = 0.0
    charbonnier: float = 0.0
    sam: float = 0.0
    spectral_gradient: float = 0.0
    wgan: float = 0.0


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """WGAN-GP phase (mDCSRN-GAN): the critic's settings (its term's weight is ``loss.wgan``).

    Parameters
    ----------
    start_step : int
        Generator steps trained without the adversarial term before the critic joins (a
        pretrained generator keeps the critic from chasing noise).
    n_critic : int
        Critic steps per generator step, each on a fresh batch (>= 1).
    gp_weight : float
        Gradient-penalty weight (10 as in WGAN-GP).
    lr : float
        Critic learning rate (AdamW, constant).
    betas : (2,) float
        Critic AdamW moment coefficients.
    """

    start_step: int = 0
    n_critic: int = 5
    gp_weight: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)


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
class TrainConfig:
    """A whole experiment.

    Parameters
    ----------
    run : RunConfig
    model : ModelConfig
    data : DataConfig
    optim : OptimConfig
    loss : LossConfig
        The weighted sum the generator minimises (default: L1 alone).
    gan : GanConfig or None
        The critic's settings, with ``loss.wgan > 0``; None (or omitted): no critic.
    validation : ValidationConfig or None
        None disables validation.
    """

    run: RunConfig
    data: DataConfig
    optim: OptimConfig
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    gan: GanConfig | None = None
    validation: ValidationConfig | None = ValidationConfig()


#: Range checks: field -> (predicate, wording). Keys are "Section.field".
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "RunConfig.checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "RunConfig.keep_last": (lambda v: v >= 1, ">= 1"),
    "RunConfig.log_every": (lambda v: v >= 1, ">= 1"),
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
    "OptimConfig.steps": (lambda v: v >= 1, ">= 1"),
    "OptimConfig.lr": (lambda v: v > 0, "> 0"),
    "OptimConfig.min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "OptimConfig.warmup_steps": (lambda v: v >= 0, ">= 0"),
    "OptimConfig.weight_decay": (lambda v: v >= 0, ">= 0"),
    "OptimConfig.betas": (lambda v: all(0 <= b < 1 for b in v), "each in [0, 1)"),
    "OptimConfig.grad_clip": (lambda v: v is None or v > 0, "> 0 or null"),
    "OptimConfig.ema_decay": (lambda v: v is None or 0 < v < 1, "in (0, 1) or null"),
    "GanConfig.start_step": (lambda v: v >= 0, ">= 0"),
    "LossConfig.l1": (lambda v: v >= 0, ">= 0"),
    "LossConfig.mse": (lambda v: v >= 0, ">= 0"),
    "LossConfig.charbonnier": (lambda v: v >= 0, ">= 0"),
    "LossConfig.sam": (lambda v: v >= 0, ">= 0"),
    "LossConfig.spectral_gradient": (lambda v: v >= 0, ">= 0"),
    "LossConfig.wgan": (lambda v: v >= 0, ">= 0"),
    "GanConfig.n_critic": (lambda v: v >= 1, ">= 1"),
    "GanConfig.gp_weight": (lambda v: v >= 0, ">= 0"),
    "GanConfig.lr": (lambda v: v > 0, "> 0"),
    "GanConfig.betas": (lambda v: all(0 <= b < 1 for b in v), "each in [0, 1)"),
    "ValidationConfig.every": (lambda v: v >= 1, ">= 1"),
    "ValidationConfig.factor": (lambda v: v >= 1, ">= 1"),
    "ValidationConfig.axis": (lambda v: v in (0, 1, 2), "0, 1 or 2"),
    "ValidationConfig.crop": (lambda v: v is None or all(n >= 1 for n in v), "positive sizes"),
}


def _fail(where: str, expected: str, value: Any) -> typing.NoReturn:
    raise ValueError(f"config key {where!r} must be {expected}, got {value!r}")


def _scalar(kind: type, value: Any, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            _fail(where, "true or false", value)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, "an integer", value)
        return value
    if kind is float:
        # YAML 1.1 reads "1e-4" as a string: accept numeric strings for floats only.
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            _fail(where, "a number", value)
        if not math.isfinite(number):
            _fail(where, "a finite number", value)
        return number
    if kind is str:
        if not isinstance(value, str) or not value:
            _fail(where, "a non-empty string", value)
        return value
    raise TypeError(f"unsupported schema type {kind!r} at {where!r}")


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            _fail(where, f"a value of type {hint}", value)
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if origin is Literal:
        if value not in args:
            _fail(where, f"one of {list(args)}", value)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(where, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            _fail(where, f"a list of {len(args)} values", value)
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(hint):
        return _section(hint, value, where)
    return _scalar(hint, value, where)


def _section(cls: type, mapping: Any, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        _fail(where, "a mapping of keys to values", mapping)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in mapping:
        if key not in fields:
            name = f"{where}.{key}" if where else str(key)
            raise ValueError(f"unknown config key {name!r} (allowed here: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in mapping:
            if field.default is dataclasses.MISSING:
                raise ValueError(f"config key {path!r} is required")
            continue
        values[name] = _convert(hints[name], mapping[name], path)
        check = _CHECKS.get(f"{cls.__name__}.{name}")
        if check is not None and values[name] is not None and not check[0](values[name]):
            _fail(path, check[1], mapping[name])
    return cls(**values)


#: ``loss:`` terms that need bands (cubes), and the one that needs a critic (volumes).
SPECTRAL_TERMS = ("sam", "spectral_gradient")


def check_loss(loss: LossConfig, gan: GanConfig | None, *, source: Literal["volumes", "cubes"]) -> None:
    """Refuse a loss its run cannot compute: what no single section's check sees.

    Parameters
    ----------
    loss : LossConfig
        The weights.
    gan : GanConfig or None
        The critic's settings.
    source : {"volumes", "cubes"}
        The data source (spectral terms need cubes; the 3-D critic needs volumes).

    Raises
    ------
    ValueError
        If no non-adversarial term has a positive weight, a spectral term is weighted on
        volumes, ``wgan`` on cubes, or ``loss.wgan > 0`` and the ``gan`` section disagree.

    Examples
    --------
    >>> check_loss(LossConfig(sam=0.3), None, source="volumes")
    Traceback (most recent call last):
    ...
    ValueError: config key 'loss.sam' weighs a spectral term: it needs cubes (set it to 0 for volumes)
    """
    weights = dataclasses.asdict(loss)
    if not any(weight > 0 for name, weight in weights.items() if name != "wgan"):
        raise ValueError(f"config key 'loss' needs a term besides 'wgan' of positive weight, got {weights}")
    if source == "volumes":
        for name in SPECTRAL_TERMS:
            if weights[name] > 0:
                raise ValueError(f"config key 'loss.{name}' weighs a spectral term: it needs cubes (set it to 0 for volumes)")
    elif loss.wgan > 0:
        raise ValueError("config key 'loss.wgan' needs volumes (the critic is 3-D): set it to 0 for cubes")
    if (loss.wgan > 0) != (gan is not None):
        raise ValueError("config key 'loss.wgan' > 0 and a 'gan' section (the critic's settings) go together, got "
                         f"wgan {loss.wgan:g} and gan {'set' if gan is not None else 'null'}")


def config_from_dict(mapping: Mapping[str, Any]) -> TrainConfig:
    """Validate a parsed YAML mapping into a :class:`TrainConfig`.

    Parameters
    ----------
    mapping : mapping
        Sections ``run``, ``data``, ``optim`` (required), ``model``, ``loss``, ``gan``,
        ``validation`` (optional; ``gan: null`` / ``validation: null`` switch them off).

    Returns
    -------
    TrainConfig

    Raises
    ------
    ValueError
        On an unknown key (named, with the allowed ones), a missing required key, a
        value of the wrong type or range (named, with the value received), or a loss the
        run cannot compute (:func:`check_loss`).

    Examples
    --------
    >>> cfg = config_from_dict({"run": {"name": "t", "output_dir": "runs/t"},
    ...                         "data": {"volumes": ["mri/templates/*.nii.gz"]},
    ...                         "optim": {"steps": 10, "lr": "1e-3"}})
    >>> cfg.optim.lr, cfg.gan, cfg.data.patch
    (0.001, None, (64, 64, 64))
    >>> config_from_dict({"run": {"nmae": "t"}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown config key 'run.nmae' (allowed here: name, output_dir, seed, ...)
    """
    config = _section(TrainConfig, mapping, "")
    check_loss(config.loss, config.gan, source="volumes")
    return config


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML experiment file (:func:`read_config`: ``extends`` merged) and validate it.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    TrainConfig

    Raises
    ------
    FileNotFoundError
        If the file, or a file it extends, does not exist.
    ValueError
        If it is not valid YAML or does not match the schema (see :func:`config_from_dict`).

    Examples
    --------
    >>> load_config("missing.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: config file 'missing.yaml' not found
    """
    return config_from_dict(read_config(path))

