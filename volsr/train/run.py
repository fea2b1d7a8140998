"""One ``volsr train CONFIG`` for every modality: the config's data source picks the pipeline.

A config names its data source in ``data``: ``volumes`` (MRI volumes, :mod:`volsr.train.config`
and :func:`volsr.train.build.run_training`) or ``cubes`` (hyperspectral cubes,
:mod:`volsr.train.hsi`). :func:`check_config` validates a config and builds its network and
data source (one batch drawn) without training: what ``volsr train CONFIG --check`` prints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from volsr.train.config import TrainConfig, config_from_dict
from volsr.train.config_files import read_config

__all__ = ["data_source", "load_any_config", "check_config", "train"]


def data_source(mapping: dict[str, Any]) -> str:
    """``"volumes"`` or ``"cubes"``: what a (merged) config trains on.

    Parameters
    ----------
    mapping : dict
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
    data = mapping.get("data") or {}
    found = [key for key in ("volumes", "cubes") if key in data]
    if len(found) != 1:
        raise ValueError(f"a config's data section names its source: 'volumes' (MRI) or 'cubes' (hyperspectral), "
                         f"got {sorted(data) or 'none'}")  # fmt: skip
    return found[0]


def load_any_config(path: str | Path) -> Any:
    """The validated config of either pipeline (``extends`` merged).

    Parameters
    ----------
    path : str or Path
        A YAML config.

    Returns
    -------
    TrainConfig or HSITrainConfig
        By :func:`data_source`.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`volsr.train.config_files.read_config` and the schema checks.

    Examples
    --------
    >>> load_any_config("missing.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: config file 'missing.yaml' not found
    """
    mapping = read_config(path)
    if data_source(mapping) == "cubes":
        from volsr.train.hsi import load_hsi_config

        return load_hsi_config(mapping)
    return config_from_dict(mapping)


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
    config = load_any_config(path)
    if isinstance(config, TrainConfig):
        from volsr.train.build import build_batches, build_critic, build_model

        model = build_model(config.model, seed=config.run.seed)
        if config.gan is not None:
            build_critic(config.model, seed=config.run.seed)
        batches, names = build_batches(dataclasses.replace(config.data, workers=0), seed=config.run.seed)
        source, arch = f"{len(names)} volumes", config.model.arch
    else:
        from volsr.models.attn1d2d import Attn1D2D
        from volsr.train.hsi import build_hsi_dataset

        model = Attn1D2D(**dataclasses.asdict(config.model))
        dataset = build_hsi_dataset(config)
        batches, source, arch = dataset.batches, f"{len(dataset.pairs)} cube grids", "attn1d2d"
    batch = next(iter(batches(0)))
    if not (torch.isfinite(batch["lr"]).all() and torch.isfinite(batch["hr"]).all()):
        raise ValueError(f"{path}: the first batch holds non-finite values")
    init = config.run.init_from
    start = "" if init is None else f"; starts from {init} ({'present' if Path(init).exists() else 'not there yet'})"
    parameters = sum(p.numel() for p in model.parameters())
    return (f"{path}: ok: {arch} ({parameters:,} parameters), {source}, batch lr {tuple(batch['lr'].shape)} -> hr "
            f"{tuple(batch['hr'].shape)}, {config.optim.steps} steps into {config.run.output_dir}{start}")


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
        The run's report (``status``, ``step``, ``export``, ``validation``, ...).

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
    config = load_any_config(path)
    if isinstance(config, TrainConfig):
        from volsr.train.build import run_training

        return run_training(config, resume=resume, max_steps=max_steps, device=device)
    from volsr.train.hsi import run_hsi_training

    where = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if where.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # one layer shape per band count: cuDNN picks once
    return run_hsi_training(config, resume=resume, max_steps=max_steps, device=where)
