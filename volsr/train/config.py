"""The YAML schema of a training run: frozen dataclasses, one per section.

One YAML file per experiment (``configs/{mri,hsi}/<arch>/*.yaml``). Its ``data`` section names
the data source, and the source picks the schema: ``volumes`` (MRI) :class:`TrainConfig`,
``cubes`` (hyperspectral) :class:`CubeTrainConfig`. Both share the run, optimiser and loss
sections (the loss a weighted sum, :class:`LossConfig`), defined here; each source's network,
data and validation sections are in :mod:`volsr.train.source_config` (importable from here).

A file may start from another (``extends: base.yaml``, relative to the file): it holds only
what it changes, merged section by section over its base
(:func:`volsr.train.config_files.read_config`), so a lineage reads top-down. Loading uses
``yaml.safe_load`` (no Python objects from YAML), rejects unknown keys naming the key and the
allowed ones, checks every value's type and range (:mod:`volsr.train.schema`), and fills
omitted keys with the defaults documented on each dataclass. The trainer never sees this
schema: the data source's pipeline (:mod:`volsr.train.build`, :mod:`volsr.train.cubes`)
turns it into constructed objects.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from volsr.train.config_files import read_config
from volsr.train.schema import section
from volsr.train.source_config import (
    SOURCE_CHECKS,
    CubeDataConfig,
    CubeModelConfig,
    CubeValidationConfig,
    DataConfig,
    ModelConfig,
    ValidationConfig,
)

__all__ = [
    "RunConfig",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "LossConfig",
    "GanConfig",
    "ValidationConfig",
    "TrainConfig",
    "CubeModelConfig",
    "CubeDataConfig",
    "CubeValidationConfig",
    "CubeTrainConfig",
    "data_source",
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


@dataclasses.dataclass(frozen=True)
class CubeTrainConfig:
    """A whole experiment on cubes (no critic: ``loss`` weighs pixel and spectral terms).

    Parameters
    ----------
    run : RunConfig
    data : CubeDataConfig
    optim : OptimConfig
    model : CubeModelConfig
    loss : LossConfig
    validation : CubeValidationConfig or None
    """

    run: RunConfig
    data: CubeDataConfig
    optim: OptimConfig
    model: CubeModelConfig = CubeModelConfig()
    loss: LossConfig = LossConfig()
    validation: CubeValidationConfig | None = None


#: Range checks: field -> (predicate, wording). Keys are "Section.field".
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "RunConfig.checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "RunConfig.keep_last": (lambda v: v >= 1, ">= 1"),
    "RunConfig.log_every": (lambda v: v >= 1, ">= 1"),
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
    **SOURCE_CHECKS,
}


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


def data_source(mapping: Mapping[str, Any]) -> Literal["volumes", "cubes"]:
    """``"volumes"`` or ``"cubes"``: what a (merged) config trains on, by its ``data`` section.

    Parameters
    ----------
    mapping : mapping
        A config as :func:`volsr.train.config_files.read_config` returns it.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``data`` names both or neither.

    Examples
    --------
    >>> data_source({"data": {"cubes": ["a.mat"]}})
    'cubes'
    """
    if "data" not in mapping:
        raise ValueError("config key 'data' is required: it names the data source, 'volumes' (MRI) or 'cubes' "
                         "(hyperspectral)")
    data = mapping.get("data") or {}
    found = [key for key in ("volumes", "cubes") if isinstance(data, Mapping) and key in data]
    if len(found) != 1:
        named = sorted(data) if isinstance(data, Mapping) and data else "none"
        raise ValueError(f"a config's data section names its source: 'volumes' (MRI) or 'cubes' (hyperspectral), "
                         f"got {named}")  # fmt: skip
    return found[0]


def config_from_dict(mapping: Mapping[str, Any]) -> TrainConfig | CubeTrainConfig:
    """Validate a parsed YAML mapping into the schema of its data source.

    Parameters
    ----------
    mapping : mapping
        Sections ``run``, ``data``, ``optim`` (required), ``model``, ``loss``, ``validation``
        and, for volumes, ``gan`` (optional; ``gan: null`` / ``validation: null`` switch them off).

    Returns
    -------
    TrainConfig or CubeTrainConfig
        By :func:`data_source`.

    Raises
    ------
    ValueError
        If ``data`` names no source or two, on an unknown key (named, with the allowed ones),
        a missing required key, a value of the wrong type or range (named, with the value
        received), or a loss the run cannot compute (:func:`check_loss`).

    Examples
    --------
    >>> cfg = config_from_dict({"run": {"name": "t", "output_dir": "runs/t"},
    ...                         "data": {"volumes": ["mri/templates/*.nii.gz"]},
    ...                         "optim": {"steps": 10, "lr": "1e-3"}})
    >>> cfg.optim.lr, cfg.gan, cfg.data.patch
    (0.001, None, (64, 64, 64))
    >>> cubes = config_from_dict({"run": {"name": "t", "output_dir": "runs/t"}, "optim": {"steps": 10},
    ...                           "data": {"cubes": ["hsi/a.mat:x"]}, "loss": {"sam": 0.3}})
    >>> cubes.model.arch, cubes.loss.l1, cubes.loss.sam
    ('attn1d2d', 1.0, 0.3)
    >>> config_from_dict({"run": {"nmae": "t"}, "data": {"volumes": ["a.nii"]}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown config key 'run.nmae' (allowed here: name, output_dir, seed, ...)
    """
    if data_source(mapping) == "cubes":
        cubes = section(CubeTrainConfig, mapping, "", _CHECKS)
        check_loss(cubes.loss, None, source="cubes")
        return cubes
    config = section(TrainConfig, mapping, "", _CHECKS)
    check_loss(config.loss, config.gan, source="volumes")
    return config


def load_config(path: str | Path) -> TrainConfig | CubeTrainConfig:
    """Read a YAML experiment file (:func:`read_config`: ``extends`` merged) and validate it.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    TrainConfig or CubeTrainConfig
        By the data source (:func:`config_from_dict`).

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

