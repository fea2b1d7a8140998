"""The cubes' data source: the 1D-2D attention network, its patch stream, validator and export.

A config whose ``data`` names ``cubes`` (:class:`~volsr.train.config.CubeTrainConfig`,
``configs/hsi/attn1d2d/...``) trains through the same ``volsr train`` as the MRI volumes
(:func:`volsr.train.run.run_training`): this module builds its :class:`Pipeline`. The patches
come from :class:`~volsr.data.hsi.HSIPatchDataset` (cut in the training process), the
held-out cubes are scored by the one validation protocol
(:class:`~volsr.train.validation.VolumeValidator`: MPSNR and SAM against bicubic, through the
engine), and the export writes ``<output_dir>/export/<run name>.safetensors`` (+ ``.json``),
in the format :func:`volsr.models.weights.save_weights` writes; copying both into
``volsr/models/weights`` ships them as ``card.name`` (``attn1d2d.x4`` ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from volsr.data.hsi import HSIPatchDataset, load_cube, lr_peak, make_pair
from volsr.datasets import shared_data_root
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.registry import ModelCard
from volsr.models.weights import save_weights
from volsr.train.build import seeded
from volsr.train.config import CubeModelConfig, CubeTrainConfig
from volsr.train.config_files import plain
from volsr.train.pipeline import Pipeline
from volsr.train.trainer import Trainer
from volsr.train.validation import VolumeValidator, cube_case

__all__ = ["resolve_cubes", "build_cube_model", "build_cube_dataset", "export_cube_weights", "cube_pipeline"]


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


def _network_arguments(config: CubeModelConfig) -> dict[str, Any]:
    """The network's constructor arguments (the section less its ``arch``): also its sidecar's config."""
    arguments = dataclasses.asdict(config)
    del arguments["arch"]
    return arguments


def build_cube_model(config: CubeModelConfig, *, seed: int, name: str = "attn1d2d.run") -> Attn1D2D:
    """A freshly initialised :class:`~volsr.models.attn1d2d.Attn1D2D` with a training card.

    Parameters
    ----------
    config : CubeModelConfig
        The network's section.
    seed : int
        Seeds the initialisation (torch's global generator is restored afterwards).
    name : str
        The card's name.

    Returns
    -------
    Attn1D2D

    Raises
    ------
    ValueError
        If the network refuses an argument.

    Examples
    --------
    >>> build_cube_model(CubeModelConfig(scale=2, features=4, stages=1), seed=0).card.scale_range
    (2.0, 2.0)
    """
    model = seeded(seed, lambda: Attn1D2D(**_network_arguments(config)))
    model.card = ModelCard(name=name, kind="network", grid="lr", halo=model.halo, scales="integer",
                           scale_range=(float(model.scale),) * 2, modality="hsi",
                           description="1D-2D attention network (training run)")
    return model


def build_cube_dataset(config: CubeTrainConfig) -> HSIPatchDataset:
    """The training patch stream of ``config`` (its cubes loaded and degraded).

    Parameters
    ----------
    config : CubeTrainConfig
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


def export_cube_weights(trainer: Trainer, config: CubeTrainConfig) -> Path:
    """Write the trained (EMA) network as ``<output_dir>/export/<run name>.safetensors`` + JSON.

    The card records the network's factor and ``input_peak`` (the training cubes' LR peak,
    :func:`volsr.data.hsi.lr_peak`: the engine's input rule).

    Parameters
    ----------
    trainer : Trainer
        After training.
    config : CubeTrainConfig
        The run's configuration (recorded in the sidecar's metadata).

    Returns
    -------
    Path
        The safetensors file.

    Examples
    --------
    See ``tests/train/test_hsi_training.py``.
    """
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
                        config=_network_arguments(config.model), card=card, metadata=metadata)


def cube_pipeline(config: CubeTrainConfig, *, device: str | torch.device, validate: bool = True) -> Pipeline:
    """The network, patch stream, held-out validator and export of a cube config.

    Parameters
    ----------
    config : CubeTrainConfig
        The experiment.
    device : str or torch.device
        Where validation runs.
    validate : bool
        Build the validator (False: ``volsr train --check``, which trains nothing).

    Returns
    -------
    Pipeline

    Raises
    ------
    FileNotFoundError
        If a training or held-out cube is missing.
    ValueError
        If the network or the data options are invalid.

    Examples
    --------
    See ``tests/train/test_hsi_training.py``.
    """
    model = build_cube_model(config.model, seed=config.run.seed, name=f"attn1d2d.{config.run.name}")
    dataset = build_cube_dataset(config)
    validator = None
    if validate and config.validation is not None:
        cases = [cube_case(make_pair(load_cube(spec)[0], scale=config.model.scale, name=spec,
                                     degradation=config.data.degradation))
                 for spec in resolve_cubes(config.validation.cubes)]
        validator = VolumeValidator(cases, device=str(device))
    return Pipeline(model=model, batches=dataset.batches, datasets=[p.name for p in dataset.pairs],
                    validator=validator, export=lambda trainer: export_cube_weights(trainer, config))
