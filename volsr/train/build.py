"""The volumes' data source: a validated :class:`~volsr.train.config.TrainConfig` into objects.

Where a volume config meets construction (:func:`volume_pipeline`; the cubes' is
:mod:`volsr.train.cubes`): the trainer receives a model, a batch source and settings; the
networks know nothing of YAML. ``volsr train`` runs the pipeline
(:func:`volsr.train.run.run_training`). Under ``torchrun`` (``WORLD_SIZE > 1``) each process joins the
process group (gloo on CPU, nccl on CUDA), takes ``batch_size / WORLD_SIZE`` patches per
step from its own seeded stream, and only rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from volsr.datasets import icbm152_t1_path, shared_data_root
from volsr.models.mdcsrn import MDCSRN, MDCSRNUpsampler, PatchDiscriminator3D
from volsr.models.meta_srgan import MetaSRGAN
from volsr.models.registry import ModelCard
from volsr.models.weights import save_weights
from volsr.train.checkpoint import network_tensors
from volsr.train.config import DataConfig, ModelConfig, TrainConfig
from volsr.train.config_files import plain
from volsr.train.pipeline import Pipeline
from volsr.train.trainer import BatchSource, Trainer
from volsr.train.validation import VolumeValidator

__all__ = [
    "batch_stream",
    "resolve_data_paths",
    "seeded",
    "build_model",
    "build_critic",
    "load_initial_weights",
    "build_batches",
    "setup_distributed",
    "export_weights",
    "volume_pipeline",
]

T = TypeVar("T")


def resolve_data_paths(pattern: str) -> list[Path]:
    """Files matching a glob pattern; ``"icbm152"`` names the template inside nilearn.

    Parameters
    ----------
    pattern : str
        Absolute pattern, or relative to :func:`volsr.datasets.shared_data_root`.

    Returns
    -------
    list of Path
        Sorted matches.

    Raises
    ------
    FileNotFoundError
        If nothing matches.

    Examples
    --------
    >>> resolve_data_paths("no/such/*.nii.gz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no file matches 'no/such/*.nii.gz' (looked in ...)
    """
    if pattern == "icbm152":
        return [icbm152_t1_path()]
    full = pattern if os.path.isabs(pattern) else str(shared_data_root() / pattern)
    found = sorted(Path(p) for p in glob.glob(full))
    if not found:
        raise FileNotFoundError(f"no file matches {pattern!r} (looked in {full})")
    return found


def _card(config: ModelConfig, halo: int, name: str) -> ModelCard:
    return ModelCard(name=name, kind="network", grid="hr", halo=halo, scales="real",
                     scale_range=config.scale_range, modality="mri",
                     description="mDCSRN (training run)", input_scaling="p99.9")


def _network_options(config: ModelConfig) -> dict[str, Any]:
    return {"blocks": config.blocks, "units": config.units, "growth": config.growth,
            "base": config.base, "norm": config.norm}


def _meta_options(config: ModelConfig) -> dict[str, Any]:
    return {"base": config.base, "blocks": config.blocks, "layers": config.units,
            "growth": config.growth, "taps": config.taps, "hidden": config.hidden}


def seeded(seed: int, make: Callable[[], T]) -> T:
    """``make()`` with torch's global generator seeded by ``seed``, and restored afterwards.

    Parameters
    ----------
    seed : int
        The initialisation seed.
    make : callable
        Builds a module (its initialisation draws from the global generator).

    Returns
    -------
    object
        What ``make`` returns.

    Examples
    --------
    >>> bool(torch.equal(seeded(0, lambda: torch.rand(2)), seeded(0, lambda: torch.rand(2))))
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _build_meta(config: ModelConfig, seed: int, name: str) -> MetaSRGAN:
    model = seeded(seed, lambda: MetaSRGAN(**_meta_options(config)))
    model.card = ModelCard(name=name, kind="network", grid="lr", halo=model.halo, scales="real",
                           scale_range=config.scale_range, modality="mri",
                           description="Meta-SRGAN (training run)", input_scaling="p99.9")
    return model


def build_model(
    config: ModelConfig, *, seed: int, name: str = "mdcsrn.run"
) -> MDCSRNUpsampler | MetaSRGAN:
    """The generator with its card, initialised reproducibly from ``seed``.

    Parameters
    ----------
    config : ModelConfig
        Architecture settings.
    seed : int
        Initialisation seed (the global RNG is forked, seeded, and restored).
    name : str
        Card name.

    Returns
    -------
    MDCSRNUpsampler or MetaSRGAN
        With ``card`` set: for ``arch: mdcsrn`` grid ``"hr"``, halo = receptive radius; for
        ``arch: meta_srgan`` (blocks = residual dense blocks, units = layers per block)
        grid ``"lr"``, halo :attr:`MetaSRGAN.halo`.

    Raises
    ------
    ValueError
        If the architecture settings are invalid.

    Examples
    --------
    >>> model = build_model(ModelConfig(blocks=1, units=1), seed=0)
    >>> model.card.halo, model.card.grid
    (2, 'hr')
    >>> build_model(ModelConfig(arch="meta_srgan", blocks=1, units=1), seed=0).card.grid
    'lr'
    """
    if config.arch == "meta_srgan":
        return _build_meta(config, seed, "meta_srgan.run" if name == "mdcsrn.run" else name)
    model = MDCSRNUpsampler(seeded(seed, lambda: MDCSRN(**_network_options(config))))
    model.card = _card(config, model.halo, name)
    return model


def build_critic(config: ModelConfig, *, seed: int) -> PatchDiscriminator3D:
    """The WGAN-GP critic, initialised reproducibly from ``seed``.

    Parameters
    ----------
    config : ModelConfig
        ``critic_base`` and ``critic_levels``.
    seed : int
        Initialisation seed.

    Returns
    -------
    PatchDiscriminator3D

    Raises
    ------
    ValueError
        If the settings are invalid.

    Examples
    --------
    >>> build_critic(ModelConfig(critic_base=2, critic_levels=1), seed=0)(
    ...     torch.zeros(2, 1, 4, 4, 4)).shape
    torch.Size([2])
    """
    return seeded(seed + 1, lambda: PatchDiscriminator3D(base=config.critic_base, levels=config.critic_levels))


def _ignore_stop_signals(worker: int) -> None:
    # Schedulers (and `kill` of a process group) send SIGTERM to every process: a worker
    # that dies of it crashes the trainer before its checkpoint. Workers ignore the stop
    # signals; the trainer catches them, saves, and shuts the workers down itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _IndexedBatches(IterableDataset):
    """Batches ``start, start + 1, ...``; batch ``i`` is drawn from ``rng([seed, rank, i])``.

    Indexing each batch's random generator by its position makes the stream independent of
    how it is split over DataLoader workers (worker ``w`` of ``W`` makes ``start + w``,
    ``start + w + W``, ... and the DataLoader returns them round-robin, i.e. in order) and
    lets a resumed run continue it exactly.
    """

    def __init__(self, sampler: Any, *, batch_size: int, seed: int, rank: int, start: int):
        super().__init__()
        self.sampler, self.batch_size = sampler, batch_size
        self.seed, self.rank, self.start = seed, rank, start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        index = self.start + worker
        while True:
            rng = np.random.default_rng([self.seed, self.rank, index])
            yield self.sampler.sample_batch(rng, batch_size=self.batch_size)
            index += workers


def build_batches(
    config: DataConfig, *, seed: int, rank: int = 0, world: int = 1
) -> tuple[BatchSource, list[str]]:
    """The batch source of one process and the training file names.

    Parameters
    ----------
    config : DataConfig
        Sampler settings; ``batch_size`` is split evenly over the ``world`` processes.
    seed : int
        Stream seed (each rank draws its own stream).
    rank, world : int
        This process's rank and the number of processes.

    Returns
    -------
    batches : BatchSource
        ``batches(start)`` iterates batches ``start, start + 1, ...`` (through a
        DataLoader with ``config.workers`` workers).
    datasets : list of str
        The training volumes' paths relative to the shared data folder (or absolute).

    Raises
    ------
    ValueError
        If ``batch_size`` is not divisible by ``world``.
    FileNotFoundError
        If a volume pattern matches nothing.

    Examples
    --------
    >>> build_batches(DataConfig(volumes=("x",), batch_size=3), seed=0, world=2)
    Traceback (most recent call last):
    ...
    ValueError: data.batch_size = 3 must be divisible by the number of processes (2)
    """
    from volsr.data import PatchSampler, SamplerOptions

    if config.batch_size % world:
        raise ValueError(f"data.batch_size = {config.batch_size} must be divisible by the "
                         f"number of processes ({world})")
    paths = [p for pattern in config.volumes for p in resolve_data_paths(pattern)]
    # The YAML names its sampler options as the sampler does, but for three (patch, slice axes, MiB).
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(SamplerOptions) if hasattr(config, f.name)}
    options = SamplerOptions(**shared, patch_shape=config.patch, axes=config.slice_axes,
                             cache_bytes=config.cache_mb * 2**20)
    sampler = PatchSampler([str(p) for p in paths], options)
    batches = batch_stream(sampler, batch_size=config.batch_size // world, seed=seed, rank=rank,
                           workers=config.workers)  # fmt: skip
    root = shared_data_root()
    names = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths]
    return batches, names


def batch_stream(sampler: Any, *, batch_size: int, seed: int, rank: int = 0, workers: int = 0) -> BatchSource:
    """The deterministic batch stream of a sampler (batch ``i`` from ``rng([seed, rank, i])``).

    Parameters
    ----------
    sampler : PatchSampler
        Anything with ``sample_batch(rng, batch_size=...)``.
    batch_size : int
        Items per batch of this process.
    seed, rank : int
        Stream seed and this process's rank.
    workers : int
        DataLoader worker processes (0: draw in this process).

    Returns
    -------
    BatchSource
        ``batches(start)`` iterates batches ``start, start + 1, ...``.

    Examples
    --------
    >>> from volsr.data import PatchSampler, SamplerOptions
    >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
    >>> tuple(next(batch_stream(s, batch_size=2, seed=0)(0))["hr"].shape)
    (2, 1, 8, 8, 8)
    """

    def batches(start: int) -> Iterator[Mapping[str, Any]]:
        dataset = _IndexedBatches(sampler, batch_size=batch_size, seed=seed, rank=rank, start=start)
        loader = DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False,
                            pin_memory=torch.cuda.is_available(), worker_init_fn=_ignore_stop_signals)
        return iter(loader)

    return batches


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        gloo on CPU, nccl on CUDA (one GPU per process: ``cuda:LOCAL_RANK``).

    Returns
    -------
    rank, world_size : int
    device : torch.device
        This process's device.

    Raises
    ------
    ValueError
        If ``device`` is not ``"cpu"`` or ``"cuda"``, or CUDA is requested but missing.

    Examples
    --------
    >>> setup_distributed("cpu")  # without torchrun
    (0, 1, device(type='cpu'))
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    where = torch.device(f"cuda:{local}") if device == "cuda" else torch.device("cpu")
    if world <= 1:
        return 0, 1, where
    if device == "cuda":
        torch.cuda.set_device(where)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), where


def _card_name(name: str, arch: str = "mdcsrn") -> str:
    """Registry name of weights exported as ``name`` (``<arch>_<tag>`` -> ``<arch>.<tag>``)."""
    return f"{arch}.{name[len(arch) + 1:] if name.startswith(arch + '_') else name}"


def _save_network(
    network: MDCSRN | MetaSRGAN, config: TrainConfig, path: Path, *, metadata: Mapping[str, Any]
) -> Path:
    """The one export format: :func:`save_weights` of the bare network plus its card facts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    low, high = config.data.factor_range
    if isinstance(network, MetaSRGAN):
        options = _meta_options(config.model)
        description = (f"Meta-SRGAN{'' if config.gan else ' (L1)'} trained by volsr "
                       f"(any per-axis factor, thick slices {low:g}-{high:g})")
    else:
        options = _network_options(config.model)
        description = (f"mDCSRN{'-GAN' if config.gan else ''} trained by volsr "
                       f"(thick-slice factors {low:g}-{high:g})")
    card = {"name": _card_name(path.stem, config.model.arch), "description": description,
            "scale_range": list(config.model.scale_range)}
    return save_weights(network.cpu(), path, config=options, card=card, metadata=metadata)


def export_weights(trainer: Trainer, config: TrainConfig) -> Path:
    """Write the trained (EMA) network as ``<output_dir>/export/<name>.safetensors`` + JSON.

    The format is :func:`volsr.models.weights.save_weights`'s, so copying both files into
    ``volsr/models/weights`` ships the model (registered as ``mdcsrn.<tag>`` for a run
    named ``mdcsrn_<tag>``, ``meta_srgan.<tag>`` for ``meta_srgan_<tag>``);
    :func:`volsr.train.export.export_checkpoint` does that from any checkpoint, during the run.

    Parameters
    ----------
    trainer : Trainer
        A trainer whose model is an :class:`~volsr.models.mdcsrn.MDCSRNUpsampler` (its
        network is saved) or a :class:`~volsr.models.meta_srgan.MetaSRGAN`.
    config : TrainConfig
        The run's configuration (recorded in the sidecar's metadata).

    Returns
    -------
    Path
        The safetensors file.

    Raises
    ------
    TypeError
        If the trainer's model is neither an MDCSRNUpsampler nor a MetaSRGAN.

    Examples
    --------
    See ``tests/train/test_build.py``.
    """
    model = trainer.inference_model()
    if isinstance(model, MDCSRNUpsampler):
        model = model.network
    elif not isinstance(model, MetaSRGAN):
        raise TypeError(f"can export an MDCSRNUpsampler or a MetaSRGAN, got {type(model).__name__}")
    metadata = {"step": trainer.step, "ema": trainer.ema is not None,
                "datasets": trainer.record.get("datasets", []),
                "validation": trainer.history[-1] if trainer.history else None,
                "training_config": plain(config)}
    path = Path(config.run.output_dir) / "export" / f"{config.run.name}.safetensors"
    return _save_network(model, config, path, metadata=metadata)


def _build_validator(config: TrainConfig, device: torch.device) -> VolumeValidator | None:
    if config.validation is None:
        return None
    specs = [(spec, p) for spec in config.validation.volumes for p in resolve_data_paths(spec)]
    return VolumeValidator.from_paths(
        [p for _, p in specs], factor=config.validation.factor, axis=config.validation.axis,
        crop=config.validation.crop, device=str(device),
        names=[spec if spec == "icbm152" else p.name.split(".")[0] for spec, p in specs],
    )


def load_initial_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint's generator weights (EMA when present) into ``model``, in place.

    Parameters
    ----------
    model : torch.nn.Module
        The generator :func:`build_model` made (same architecture as the checkpoint's).
    path : str or path
        A trainer checkpoint ``.safetensors`` (with its ``.json`` partner), or exported /
        shipped weights (``volsr/models/weights/*.safetensors`` with their JSON sidecar).

    Raises
    ------
    ValueError
        If the checkpoint's generator does not match ``model``.
    FileNotFoundError
        If the checkpoint is missing.

    Examples
    --------
    See ``tests/train/test_build.py``.
    """
    try:
        model.load_state_dict(network_tensors(path))
    except RuntimeError as error:
        raise ValueError(f"run.init_from {path} does not match the configured model: "
                         f"{str(error).splitlines()[0]}") from None


def volume_pipeline(config: TrainConfig, *, rank: int = 0, world: int = 1, device: str | torch.device = "cpu",
                    validate: bool = True) -> Pipeline:  # fmt: skip
    """The network (and critic), patch stream, validator and export of a volume config.

    Parameters
    ----------
    config : TrainConfig
        The experiment.
    rank, world : int
        This process and the process count (each draws ``batch_size / world`` patches).
    device : str or torch.device
        Where validation runs.
    validate : bool
        Build the validator on rank 0 (False: ``volsr train --check``, which trains nothing).

    Returns
    -------
    Pipeline

    Raises
    ------
    FileNotFoundError
        If a training or validation volume is missing.
    ValueError
        If the architecture or data settings are invalid.

    Examples
    --------
    See ``tests/train/test_build.py``.
    """
    model = build_model(config.model, seed=config.run.seed)
    critic = build_critic(config.model, seed=config.run.seed) if config.gan else None
    batches, datasets = build_batches(config.data, seed=config.run.seed, rank=rank, world=world)
    validator = _build_validator(config, torch.device(device)) if validate and rank == 0 else None
    return Pipeline(model=model, batches=batches, datasets=datasets, validator=validator,
                    export=lambda trainer: export_weights(trainer, config), critic=critic)
