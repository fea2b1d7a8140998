"""Self-supervised adaptation: fine-tune a network on pairs cut from the scan it will upsample.

A short training run whose data source is the input itself (:class:`volsr.data.self_pairs.
SelfPairSampler`: an in-plane axis thick-sliced by the scan's acquisition model and swapped
into the slice position) and whose step is the trainer's (:class:`volsr.train.Trainer`, L1,
AdamW, cosine schedule). A guard keeps a central slab of the scan out of training and scores
the network on pairs from that slab before and during training: the best-scoring weights are
kept if they beat the unadapted network by :attr:`AdaptOptions.min_gain_db`, else the
unadapted network is returned, and the report says so. The self-supervised training loss is
no guide here: it falls even when the adaptation hurts the real slice axis.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from volsr.acquisition import AcquisitionModel, acquisition_from_spacing
from volsr.data.self_pairs import SelfPairSampler, central_slab
from volsr.models.files import is_model_file, register_model_file
from volsr.models.registry import ModelCard, create_model
from volsr.train.build import batch_stream
from volsr.train.config import LossConfig, OptimConfig, RunConfig
from volsr.train.trainer import Trainer
from volsr.volume import Volume

__all__ = ["AdaptOptions", "AdaptReport", "adapt", "adapted_card", "adaptation_axis", "fine_tune", "DEFAULT_STEPS"]

#: Default fine-tune length: 3 minutes on 2 quiet CPU cores (0.8 s a step, bench/adapt.py); 400
#: steps gain about 0.05 dB more in 5.5 minutes (``--adapt-steps 400``).
DEFAULT_STEPS = 220
#: Share of the longer in-plane axis held out for the guard (at least one patch).
HOLDOUT_SHARE = 0.2


@dataclasses.dataclass(frozen=True)
class AdaptOptions:
    """How :func:`adapt` fine-tunes (defaults: measured on held-out brains, bench/adapt.py).

    Parameters
    ----------
    steps : int
        Optimiser steps (>= 1).
    seed : int
        Seeds the pairs (the same seed, input and machine give the same weights).
    batch_size : int
        Pairs per step (>= 1).
    patch : int
        Patch edge in voxels (>= 8; shrunk to the slice axis's length).
    learning_rate : float
        Peak AdamW learning rate (> 0), after a warmup of 5 % of the steps, cosine decay to
        10 % of it.
    checks : int
        Guard evaluations during the run (>= 1; the last at the final step).
    holdout_pairs : int
        Pairs from the held-out slab the guard scores (>= 1).
    min_gain_db : float
        PSNR gain on the held-out pairs needed to keep the adapted weights (dB).

    Raises
    ------
    ValueError
        If a value is out of range.

    Examples
    --------
    >>> AdaptOptions(steps=10).checks
    4
    """

    steps: int = DEFAULT_STEPS
    seed: int = 0
    batch_size: int = 4
    patch: int = 32
    learning_rate: float = 2e-4
    checks: int = 4
    holdout_pairs: int = 16
    min_gain_db: float = 0.02

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checks", "holdout_pairs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.patch < 8:
            raise ValueError(f"patch must be >= 8 voxels, got {self.patch}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not math.isfinite(self.min_gain_db):
            raise ValueError(f"min_gain_db must be finite, got {self.min_gain_db}")


@dataclasses.dataclass(frozen=True)
class AdaptReport:
    """What an adaptation did.

    Parameters
    ----------
    kept : bool
        The adapted weights were kept (False: the guard fell back to the unadapted network).
    steps : int
        Steps run.
    best_step : int
        Step of the best guard score (0: the unadapted network).
    baseline_psnr, best_psnr : float
        Guard PSNR (dB, data range 1) of the unadapted network and of the best weights.
    seconds : float
        Wall time of the adaptation (pairs, training, guard).
    slab : (3,) tuple of int
        The held-out slab ``(axis, start, stop)`` in input voxels.

    Examples
    --------
    >>> AdaptReport(True, 10, 10, 30.0, 30.5, 1.0, (0, 4, 12)).gain_db
    0.5
    """

    kept: bool
    steps: int
    best_step: int
    baseline_psnr: float
    best_psnr: float
    seconds: float
    slab: tuple[int, int, int]

    @property
    def gain_db(self) -> float:
        """Guard PSNR gain of the best weights over the unadapted network (dB)."""
        return self.best_psnr - self.baseline_psnr

    def describe(self) -> str:
        """One line for the log.

        Returns
        -------
        str

        Examples
        --------
        >>> AdaptReport(False, 10, 0, 30.0, 30.0, 2.0, (0, 4, 12)).describe()[:40]
        'adapt: 10 steps in 2 s; held-out pairs +'
        """
        verdict = (f"kept the weights of step {self.best_step}" if self.kept else
                   "did not help there: using the unadapted network")
        return (f"adapt: {self.steps} steps in {self.seconds:.0f} s; held-out pairs {self.gain_db:+.2f} dB "
                f"({self.baseline_psnr:.2f} -> {self.best_psnr:.2f} dB, slab {self.slab[1]}-{self.slab[2]} "
                f"of axis {self.slab[0]}): {verdict}")

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able facts (rounded)."""
        record = dataclasses.asdict(self)
        record.update(gain_db=round(self.gain_db, 4), seconds=round(self.seconds, 1), slab=list(self.slab),
                      baseline_psnr=round(self.baseline_psnr, 4), best_psnr=round(self.best_psnr, 4))
        return record


def adaptation_axis(factors: Sequence[float]) -> int:
    """The one axis an adaptation learns to upsample.

    Parameters
    ----------
    factors : sequence of float
        Per-axis upsampling factors of the run.

    Returns
    -------
    int
        The axis with a factor above 1.

    Raises
    ------
    ValueError
        Unless exactly one factor is above 1 and the others are 1 (the other axes are the
        scan's full-resolution examples).

    Examples
    --------
    >>> adaptation_axis((1, 1, 3.5))
    2
    """
    above = [d for d, f in enumerate(factors) if f > 1]
    if len(factors) != 3 or len(above) != 1 or any(f != 1 for d, f in enumerate(factors) if d not in above):
        shown = ",".join(f"{f:g}" for f in factors)
        raise ValueError(f"--adapt learns from the scan's full-resolution axes: it needs one axis upsampled and "
                         f"the others at scale 1, got --scale {shown}")
    return above[0]


def adapt(
    volume: Volume | np.ndarray,
    model: str | nn.Module,
    *,
    factors: Sequence[float],
    acquisition: AcquisitionModel | None = None,
    options: AdaptOptions | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> nn.Module:
    """Fine-tune ``model`` on pairs cut from ``volume``; fall back when the guard says no.

    Parameters
    ----------
    volume : Volume or (X, Y, Z) ndarray
        The thick-slice scan (lazy: only the patches it needs are read, plus one streamed
        pass for its P99.9). An array is taken with 1 mm voxels. For a hyperspectral
        network (card modality ``"hsi"``): the LR cube, ``(rows, cols, bands)`` as an array,
        adapted by :func:`volsr.train.adapt_cube.adapt_cube`.
    model : str or torch.nn.Module
        Registry name, ``PATH.safetensors``, or a module with a ``card`` (a trainable network
        taking ``(x, positions)``, as ``volsr train`` makes them). Not modified.
    factors : (3,) sequence of float
        The run's per-axis factors: one axis above 1 (:func:`adaptation_axis`); for a cube
        ``(2,)``, the card's scale on both spatial axes.
    acquisition : AcquisitionModel, optional
        The scan's slice profile and thickness (default: from its voxel spacing, contiguous
        Gaussian slices; :func:`volsr.acquisition.acquisition_for` reads flags and sidecars).
    options : AdaptOptions, optional
        Steps, seed, patch, rate, guard (default for a cube:
        :func:`volsr.train.adapt_cube.cube_options`).
    device : str or torch.device
        Where to train.
    progress : bool
        Show a progress bar (stderr).

    Returns
    -------
    torch.nn.Module
        A new module in eval mode with the base's ``card`` (its description says adapted)
        and ``adaptation``, the :class:`AdaptReport`; the unadapted weights if the guard fell back.

    Raises
    ------
    ValueError
        If the model is not a trainable network, the factors are not one upsampled axis,
        or the volume is too small for the pairs.

    Examples
    --------
    >>> adapt(np.zeros((8, 8, 8)), "cubic", factors=(1, 1, 2))
    Traceback (most recent call last):
    ...
    ValueError: --adapt fine-tunes a network; cubic is an interpolation
    """
    base = _base_module(model)
    if base.card.modality == "hsi":  # a cube: pairs by the SR protocol's bicubic, guarded on SAM too
        from volsr.train.adapt_cube import adapt_cube

        return adapt_cube(volume, base, factors=factors, options=options, device=device, progress=progress)
    options = options or AdaptOptions()
    axis = adaptation_axis(factors)
    if not isinstance(volume, Volume):
        volume = Volume(np.asarray(volume, np.float32), np.eye(4), ("i", "j", "k"))
    acquisition = acquisition or acquisition_from_spacing(tuple(float(s) for s in volume.spacing))
    started = time.perf_counter()
    shape = volume.spatial_shape
    patch = min(options.patch, shape[axis])
    held_axis = max((d for d in range(3) if d != axis), key=lambda d: shape[d])
    slab = central_slab(shape, held_axis, max(patch * 3 // 2, round(HOLDOUT_SHARE * shape[held_axis])))
    common = dict(slice_axis=axis, factor=float(factors[axis]), profile=acquisition.profile, patch=patch,
                  thickness_ratio=acquisition.thickness[axis] / acquisition.spacing[axis], slab=slab)
    training = SelfPairSampler(volume, inside=False, **common)
    guard = _Guard(SelfPairSampler(volume, inside=True, **common), options, device)
    net = copy.deepcopy(base).to(device).train()
    baseline = guard(net)["score"]
    steps = fine_tune(net, batch_stream(training, batch_size=options.batch_size, seed=options.seed), guard, options,
                      device=device, progress=progress)  # fmt: skip
    kept = guard.best is not None and guard.best[1] - baseline >= options.min_gain_db
    net.load_state_dict(guard.best[2] if kept else base.state_dict())
    net = net.cpu().eval()
    net.card = adapted_card(base.card, kept)
    net.adaptation = AdaptReport(
        kept=kept, steps=steps, best_step=guard.best[0] if kept else 0, baseline_psnr=baseline,
        best_psnr=guard.best[1] if kept else baseline, seconds=time.perf_counter() - started, slab=slab,
    )  # fmt: skip
    return net


def adapted_card(card: ModelCard, kept: bool) -> ModelCard:
    """The card of an adapted network: the base's rules, a description that says what happened.

    Parameters
    ----------
    card : ModelCard
        The base network's card.
    kept : bool
        Whether the adapted weights were kept (False: the guard fell back).

    Returns
    -------
    ModelCard

    Examples
    --------
    >>> from volsr.models import get_card
    >>> adapted_card(get_card("meta_srgan.t1"), True).description.endswith("(adapted to one scan)")
    True
    """
    return dataclasses.replace(card, description=card.description + (" (adapted to one scan)" if kept else ""))


def fine_tune(net: nn.Module, batches: Iterable[Mapping[str, Any]], guard: Any, options: AdaptOptions, *,
              device: str | torch.device, progress: bool, loss: LossConfig | None = None) -> int:
    """The adaptation's training run: ``net`` fine-tuned in place, ``guard`` scoring each check.

    One recipe for every modality: AdamW at ``options.learning_rate`` with a 5 % warmup and a
    cosine decay to 10 %, no EMA, no AMP, checkpoints only in a temporary folder;
    ``options.checks`` validations, each a call of ``guard(net)`` (which keeps the best
    weights it sees; ``guard.trainer`` is set to the trainer, so it knows the step).

    Parameters
    ----------
    net : torch.nn.Module
        Trainable, on ``device``.
    batches : iterable of dict
        The training batches (as :class:`~volsr.train.trainer.Trainer` takes them).
    guard : callable
        The validator; gets a ``trainer`` attribute.
    options : AdaptOptions
        Steps, rate, checks, seed.
    device : str or torch.device
        Where to train.
    progress : bool
        Show a progress bar.
    loss : LossConfig, optional
        The trainer's weighted sum (None: L1; cubes add the spectral angle).

    Returns
    -------
    int
        Steps done.

    Raises
    ------
    KeyboardInterrupt
        If Ctrl-C / SIGTERM stopped the training (the trainer turns it into a clean stop; the
        run must stop too, not go on with a half-adapted network).
    """
    with tempfile.TemporaryDirectory(prefix="volsr-adapt-") as scratch:
        run = Trainer(
            net, batches, loss=loss,
            run=RunConfig(name="adapt", output_dir=scratch, seed=options.seed, checkpoint_every=options.steps + 1,
                          keep_last=1, log_every=options.steps, progress=progress),
            optim=OptimConfig(steps=options.steps, lr=options.learning_rate, min_lr_ratio=0.1, amp=False,
                              warmup_steps=max(1, options.steps // 20), ema_decay=None),
            validator=guard, validate_every=max(1, options.steps // options.checks), device=device,
        )  # fmt: skip
        guard.trainer = run
        if run.fit() == "interrupted":
            raise KeyboardInterrupt
        return run.step


def _base_module(model: str | nn.Module) -> nn.Module:
    if isinstance(model, str):
        name = register_model_file(model).name if is_model_file(model) else model
        model = create_model(name)
    card = getattr(model, "card", None)
    if card is None:
        raise ValueError("--adapt needs a model with a card (volsr.models.ModelCard)")
    if card.kind != "network" or not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"--adapt fine-tunes a network; {card.name} is an interpolation")
    return model


class _Guard:
    """Scores a network on fixed pairs from the held-out slab; keeps the best weights seen."""

    def __init__(self, sampler: SelfPairSampler, options: AdaptOptions, device: str | torch.device) -> None:
        count = math.ceil(options.holdout_pairs / options.batch_size)
        self.batches = [sampler.sample_batch(np.random.default_rng([options.seed, 1, i]),
                                             batch_size=options.batch_size) for i in range(count)]  # fmt: skip
        self.device = torch.device(device)
        self.trainer: Trainer | None = None  # set once training runs: its scores are candidates
        self.best: tuple[int, float, dict[str, torch.Tensor]] | None = None

    @torch.no_grad()
    def __call__(self, net: nn.Module) -> Mapping[str, float]:
        was_training = net.training
        net.eval()
        squared, count = 0.0, 0
        for batch in self.batches:
            sr = net(batch["lr"].to(self.device), batch["positions"]).float().cpu()
            squared += float(((sr - batch["hr"]) ** 2).sum())
            count += batch["hr"].numel()
        net.train(was_training)
        mse = squared / count
        score = 10.0 * math.log10(1.0 / max(mse, 1e-12)) if math.isfinite(mse) else -math.inf  # diverged
        if self.trainer is not None and (self.best is None or score > self.best[1]):
            self.best = (self.trainer.step, score, {k: v.detach().clone() for k, v in net.state_dict().items()})
        return {"score": score, "psnr": score}
