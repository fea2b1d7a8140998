"""Training the 1D-2D attention network on hyperspectral cubes (reuses the generic trainer).

One YAML file per experiment (``configs/hsi/attn1d2d/x4/d48.yaml``) with sections ``run`` and
``optim`` (the generic :class:`~volsr.train.config.RunConfig` and
:class:`~volsr.train.config.OptimConfig`: AdamW, warmup + cosine, EMA, clipping), ``model``
(:class:`~volsr.models.attn1d2d.Attn1D2D` arguments), ``data``
(:class:`~volsr.data.hsi.HSIPatchDataset` arguments), ``loss`` (the generic
:class:`~volsr.train.config.LossConfig`, a weighted sum: ``{l1: 1, sam: 0.3}``) and
``validation`` (held-out cubes, scored through the engine by the one validation protocol:
:class:`~volsr.train.validation.VolumeValidator`). The trainer is the generic
:class:`~volsr.train.trainer.Trainer` (no subclass), so checkpoints (safetensors +
JSON, no pickle), exact resume and signal handling are the generic ones. Run::

    volsr train configs/hsi/attn1d2d/x4/d48.yaml [--resume] [--max-steps N] [--threads T]

(``python -m volsr.train.hsi CONFIG`` still runs it, the older spelling.)

The exported weights go to ``<output_dir>/export/<run name>.safetensors`` (+ ``.json``), in
the format :func:`volsr.models.weights.save_weights` writes; copying both into
``volsr/models/weights`` ships them as ``card.name`` (``attn1d2d.x4`` ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from volsr.data.hsi import HSIPatchDataset, load_cube, lr_peak, make_pair
from volsr.datasets import shared_data_root
from volsr.errors import OutputExistsError
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.registry import ModelCard
from volsr.models.weights import save_weights
from volsr.train.build import load_initial_weights
from volsr.train.config import LossConfig, OptimConfig, RunConfig, _section, check_loss
from volsr.train.config_files import plain, read_config
from volsr.train.trainer import Trainer
from volsr.train.validation import VolumeValidator, cube_case

__all__ = [
    "build_hsi_dataset",
    "HSIModelConfig",
    "HSIDataConfig",
    "HSIValidationConfig",
    "HSITrainConfig",
    "load_hsi_config",
    "resolve_cubes",
    "run_hsi_training",
    "main",
]


@dataclasses.dataclass(frozen=True)
class HSIModelConfig:
    """:class:`~volsr.models.attn1d2d.Attn1D2D` arguments (see there)."""

    scale: int = 4
    features: int = 16
    stages: int = 3
    attention_kernel: int = 5
    init_residual_scale: float = 0.0


@dataclasses.dataclass(frozen=True)
class HSIDataConfig:
    """:class:`~volsr.data.hsi.HSIPatchDataset` arguments; ``cubes`` are specs relative to
    the shared data folder (``$VOLSR_DATA``, else ``../shared/data``) unless absolute."""

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
class HSIValidationConfig:
    """Held-out cubes (specs as in :class:`HSIDataConfig`) and the validation cadence."""

    cubes: tuple[str, ...]
    every: int = 500


@dataclasses.dataclass(frozen=True)
class HSITrainConfig:
    """A whole HSI experiment (one YAML file)."""

    run: RunConfig
    data: HSIDataConfig
    optim: OptimConfig
    model: HSIModelConfig = HSIModelConfig()
    loss: LossConfig = LossConfig()
    validation: HSIValidationConfig | None = None


def load_hsi_config(source: str | Path | Mapping[str, Any]) -> HSITrainConfig:
    """Validate a YAML file (or a parsed mapping) into an :class:`HSITrainConfig`.

    Parameters
    ----------
    source : str, Path or mapping
        Path of the YAML file, or its parsed content.

    Returns
    -------
    HSITrainConfig

    Raises
    ------
    ValueError
        On an unknown or missing key or a value of the wrong type (named in the message).
    FileNotFoundError
        If the file does not exist.

    Examples
    --------
    >>> cfg = load_hsi_config({"run": {"name": "t", "output_dir": "runs/t"},
    ...                        "data": {"cubes": ["hsi/abu/abu-urban-1.mat:data"]},
    ...                        "optim": {"steps": 10}, "loss": {"sam": 0.3}})
    >>> cfg.model.scale, cfg.loss.l1, cfg.loss.sam
    (4, 1.0, 0.3)
    """
    mapping = source
    if not isinstance(source, Mapping):
        mapping = read_config(source)  # extends merged
    config = _section(HSITrainConfig, mapping, "")
    check_loss(config.loss, None, source="cubes")
    return config


def resolve_cubes(specs: Sequence[str]) -> list[str]:
    """Specs with relative paths taken from the shared data folder.

    Parameters
    ----------
    specs : sequence of str
        ``path[:key]`` specs.

    Returns
    -------
    list of str

    Examples
    --------
    >>> resolve_cubes(["/abs/cube.mat:data"])
    ['/abs/cube.mat:data']
    """
    root = shared_data_root()
    return [spec if Path(spec).is_absolute() else str(root / spec) for spec in specs]


def _hsi_card(model: Attn1D2D, name: str) -> ModelCard:
    return ModelCard(name=name, kind="network", grid="lr", halo=model.halo, scales="integer",
                     scale_range=(float(model.scale),) * 2, modality="hsi",
                     description="1D-2D attention network (training run)")


def _export(trainer: Trainer, config: HSITrainConfig) -> Path:
    model = trainer.inference_model().cpu()
    folder = Path(config.run.output_dir) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    scale = config.model.scale
    card = {"name": f"attn1d2d.x{scale}", "scale_range": [float(scale), float(scale)],
            "description": f"1D-2D attention network x{scale}, any band count (volsr re-impl.)",
            "input_peak": lr_peak(resolve_cubes(config.data.cubes), scale=scale,
                                  degradation=config.data.degradation)}
    metadata = {"step": trainer.step, "validation": trainer.history[-1] if trainer.history
                else None, "training_config": plain(config)}
    return save_weights(model, folder / f"{config.run.name}.safetensors",
                        config=plain(config.model), card=card, metadata=metadata)


def build_hsi_dataset(config: HSITrainConfig) -> HSIPatchDataset:
    """The training patch stream of ``config`` (its cubes loaded and degraded).

    Parameters
    ----------
    config : HSITrainConfig
        The experiment (its ``data``, the model's scale and the run's seed).

    Returns
    -------
    HSIPatchDataset

    Raises
    ------
    FileNotFoundError
        If a cube is missing.
    ValueError
        If the data options are invalid (:class:`volsr.data.hsi.HSIPatchDataset`).

    Examples
    --------
    See ``tests/train/test_configs.py``.
    """
    data = dataclasses.asdict(config.data)
    specs = resolve_cubes(data.pop("cubes"))
    return HSIPatchDataset(specs, scale=config.model.scale, seed=config.run.seed, **data)


def run_hsi_training(config: HSITrainConfig, *, resume: bool = False,
                     max_steps: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Build the model, data, validator and trainer from ``config``; train; export.

    Parameters
    ----------
    config : HSITrainConfig
        The experiment.
    resume : bool
        Continue from the newest checkpoint (refused without it if checkpoints exist).
    max_steps : int, optional
        Stop at this step; the schedule still spans ``optim.steps``.
    device : str
        Torch device.

    Returns
    -------
    dict
        ``status``, ``step``, ``export`` (path), ``validation`` (last metrics or None),
        ``seconds``.

    Raises
    ------
    OutputExistsError
        If the run folder has checkpoints and ``resume`` is false.

    Examples
    --------
    See ``tests/train/test_hsi_training.py``.
    """
    started = time.perf_counter()
    checkpoints = Path(config.run.output_dir) / "checkpoints"
    if not resume and any(checkpoints.glob("step_*.json")):
        raise OutputExistsError(f"{checkpoints} already holds checkpoints: pass --resume")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)  # restored on exit: nothing global changes
        model = Attn1D2D(**dataclasses.asdict(config.model))
    if config.run.init_from is not None and not resume:  # an earlier stage's (EMA) weights
        load_initial_weights(model, config.run.init_from)
    model.card = _hsi_card(model, f"attn1d2d.{config.run.name}")
    dataset = build_hsi_dataset(config)
    validator = None
    if config.validation is not None:
        validator = VolumeValidator([cube_case(make_pair(load_cube(spec)[0], scale=config.model.scale, name=spec,
                                                         degradation=config.data.degradation))
                                     for spec in resolve_cubes(config.validation.cubes)], device=device)
    trainer = Trainer(
        model, dataset.batches, loss=config.loss, run=config.run,
        optim=config.optim,
        validator=validator, device=device,
        validate_every=config.validation.every if config.validation else 1,
        record={"config": plain(config), "datasets": [p.name for p in dataset.pairs]},
    )
    if resume:
        trainer.resume()
    status = trainer.fit(max_steps=max_steps)
    exported = _export(trainer, config)
    return {"status": status, "step": trainer.step, "export": str(exported),
            "validation": trainer.history[-1] if trainer.history else None,
            "seconds": time.perf_counter() - started}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m volsr.train.hsi CONFIG [--resume] [--max-steps N] [--threads T]``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status (0).

    Raises
    ------
    SystemExit
        On bad arguments (argparse).

    Examples
    --------
    ``python -m volsr.train.hsi CONFIG``; see ``tests/train/test_run.py`` for ``volsr train``.
    """
    parser = argparse.ArgumentParser(prog="python -m volsr.train.hsi", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # one layer shape per band count: cuDNN picks once
    result = run_hsi_training(load_hsi_config(args.config), resume=args.resume,
                              max_steps=args.max_steps, device=args.device)
    print(yaml.safe_dump(plain(result), sort_keys=False))  # noqa: T201 (CLI report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
