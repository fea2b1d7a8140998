"""What a data source hands the one training run: network, batches, validator, export.

``volsr train`` runs every config the same way (:func:`volsr.train.run.run_training`): it asks
the config's data source for a :class:`Pipeline` (volumes: :func:`volsr.train.build.volume_pipeline`;
cubes: :func:`volsr.train.cubes.cube_pipeline`), starts the network from ``run.init_from``,
trains it with the one :class:`~volsr.train.trainer.Trainer` on the config's loss, and calls
the pipeline's export. Everything that differs between modalities lives in the pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from volsr.train.trainer import BatchSource, Trainer, Validator

__all__ = ["Pipeline"]


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The constructed pieces of one training run.

    Parameters
    ----------
    model : torch.nn.Module
        The generator, freshly initialised (seeded), with a ``card`` for validation.
    batches : BatchSource
        The training stream (this process's share under ``torchrun``).
    datasets : sequence of str
        What the stream draws from (recorded in checkpoints and exports).
    validator : callable or None
        Scores the model on held-out data (None: validation off, or not this process's).
    export : callable
        ``export(trainer) -> Path``: writes the trained weights (safetensors + JSON sidecar).
    critic : torch.nn.Module or None
        The WGAN critic, for configs with a ``gan`` section.
    """

    model: nn.Module
    batches: BatchSource
    datasets: Sequence[str]
    validator: Validator | None
    export: Callable[[Trainer], Path]
    critic: nn.Module | None = None
