"""One ``volsr train CONFIG`` for every modality: the config's data source picks the pipeline.

A config names its data source in ``data``: ``volumes`` (MRI volumes,
:func:`volsr.train.build.volume_pipeline`) or ``cubes`` (hyperspectral cubes,
:func:`volsr.train.cubes.cube_pipeline`). :func:`run_training` runs either the same way: the
pipeline's network, started from ``run.init_from``, trained by the one
:class:`~volsr.train.trainer.Trainer` on the config's loss (a weighted sum), validated by the
one protocol, exported by the pipeline. :func:`check_config` validates a config and builds its
network and data source (one batch drawn) without training: what ``volsr train CONFIG --check``
prints.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from volsr.errors import OutputExistsError
from volsr.train.build import load_initial_weights, setup_distributed
from volsr.train.config import CubeTrainConfig, TrainConfig, load_config
from volsr.train.config_files import plain
from volsr.train.pipeline import Pipeline
from volsr.train.trainer import Trainer

__all__ = ["pipeline", "check_config", "run_training", "train"]


def pipeline(config: TrainConfig | CubeTrainConfig, *, rank: int = 0, world: int = 1,
             device: str | torch.device = "cpu", validate: bool = True) -> Pipeline:  # fmt: skip
    """The :class:`Pipeline` of ``config``'s data source.

    Parameters
    ----------
    config : TrainConfig or CubeTrainConfig
        A validated config (:func:`volsr.train.config.load_config`).
    rank, world : int
        This process and the process count under ``torchrun``.
    device : str or torch.device
        Where validation runs.
    validate : bool
        Build the validator.

    Returns
    -------
    Pipeline

    Raises
    ------
    ValueError
        If cubes are asked to train on several processes (their stream is not split), or a
        constructor refuses a value.
    FileNotFoundError
        If a training or held-out volume / cube is missing.

    Examples
    --------
    See ``tests/train/test_run.py``.
    """
    if isinstance(config, CubeTrainConfig):
        if world > 1:
            raise ValueError("cubes train in one process: run volsr train without torchrun")
        from volsr.train.cubes import cube_pipeline

        return cube_pipeline(config, device=device, validate=validate)
    from volsr.train.build import volume_pipeline

    return volume_pipeline(config, rank=rank, world=world, device=device, validate=validate)


def check_config(path: str | Path) -> str:
    """Validate a config, build its network and data source, draw one batch; train nothing.

    Parameters
    ----------
    path : str or Path
        A YAML config.

    Returns
    -------
    str
        One line: the network (parameters), the data source and the batch's shapes, and
        whether ``run.init_from`` exists yet (a run folder the previous stage writes).

    Raises
    ------
    FileNotFoundError
        If the config, a file it extends, or a training volume / cube is missing.
    ValueError
        If the config or a constructor refuses a value.

    Examples
    --------
    See ``tests/train/test_run.py``.
    """
    config = load_config(path)
    if isinstance(config, TrainConfig) and config.data.workers:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, workers=0))
    parts = pipeline(config, validate=False)
    batch = next(iter(parts.batches(0)))
    if not (torch.isfinite(batch["lr"]).all() and torch.isfinite(batch["hr"]).all()):
        raise ValueError(f"{path}: the first batch holds non-finite values")
    init = config.run.init_from
    start = "" if init is None else f"; starts from {init} ({'present' if Path(init).exists() else 'not there yet'})"
    parameters = sum(p.numel() for p in parts.model.parameters())
    source = f"{len(parts.datasets)} {'volumes' if isinstance(config, TrainConfig) else 'cube grids'}"
    return (f"{path}: ok: {config.model.arch} ({parameters:,} parameters), {source}, batch lr "
            f"{tuple(batch['lr'].shape)} -> hr {tuple(batch['hr'].shape)}, {config.optim.steps} steps into "
            f"{config.run.output_dir}{start}")


def run_training(config: TrainConfig | CubeTrainConfig, *, resume: bool = False, max_steps: int | None = None,
                 device: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Build the config's pipeline, train, and export the weights (``volsr train``).

    Parameters
    ----------
    config : TrainConfig or CubeTrainConfig
        The experiment.
    resume : bool
        Continue from the newest checkpoint in ``<output_dir>/checkpoints`` (starts afresh
        when there is none). Without it, a run folder that already has checkpoints is
        refused.
    max_steps : int, optional
        Stop at this step (the schedule still spans ``optim.steps``; resume later).
    device : {"cpu", "cuda"}, optional
        Default: CUDA when available.

    Returns
    -------
    dict
        ``status``, ``step``, ``run_dir``, ``export`` (path or None on ranks > 0),
        ``validation`` (the last metrics or None), ``seconds``.

    Raises
    ------
    OutputExistsError
        If the run folder has checkpoints and ``resume`` is false.
    FileNotFoundError
        If a training or validation volume / cube is missing.

    Examples
    --------
    See ``tests/train/test_build.py`` and ``tests/train/test_hsi_training.py``.
    """
    started = time.perf_counter()
    checkpoints = Path(config.run.output_dir) / "checkpoints"
    if not resume and any(checkpoints.glob("step_*.json")):
        raise OutputExistsError(
            f"{checkpoints} already holds checkpoints: pass --resume to continue the run, "
            f"or choose another run.output_dir")
    rank, world, where = setup_distributed(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if where.type == "cuda" and isinstance(config, CubeTrainConfig):
        torch.backends.cudnn.benchmark = True  # one layer shape per band count: cuDNN picks once
    try:
        parts = pipeline(config, rank=rank, world=world, device=where)
        if config.run.init_from is not None and not resume:  # an earlier stage's (EMA) weights
            load_initial_weights(parts.model, config.run.init_from)
        every = config.validation.every if config.validation else config.run.checkpoint_every
        trainer = Trainer(
            parts.model, parts.batches, run=config.run, optim=config.optim, critic=parts.critic,
            gan=config.gan if isinstance(config, TrainConfig) else None, loss=config.loss, validator=parts.validator, validate_every=every,
            device=where, record={"config": plain(config), "datasets": list(parts.datasets)},
        )  # fmt: skip
        if resume:
            trainer.resume()
        status = trainer.fit(max_steps=max_steps)
        exported = parts.export(trainer) if rank == 0 else None
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return {"status": status, "step": trainer.step, "run_dir": config.run.output_dir,
            "export": None if exported is None else str(exported),
            "validation": trainer.history[-1] if trainer.history else None,
            "seconds": time.perf_counter() - started}


def train(path: str | Path, *, resume: bool = False, max_steps: int | None = None,
          device: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Train the config's network on its data source and export it.

    Parameters
    ----------
    path : str or Path
        A YAML config.
    resume : bool
        Continue from the newest checkpoint of its run folder.
    max_steps : int, optional
        Stop at this step (the schedule still spans ``optim.steps``).
    device : str, optional
        Torch device; default CUDA when available.

    Returns
    -------
    dict
        The run's report (:func:`run_training`).

    Raises
    ------
    OutputExistsError
        If the run folder holds checkpoints and ``resume`` is false.
    FileNotFoundError, ValueError
        As :func:`check_config`.

    Examples
    --------
    See ``tests/train/test_run.py``.
    """
    return run_training(load_config(path), resume=resume, max_steps=max_steps, device=device)
