"""Self-supervised adaptation of hyperspectral networks: fine-tune on the cube to upsample.

:func:`volsr.train.adapt.adapt` hands a network whose card says ``modality="hsi"`` to
:func:`adapt_cube`. The pairs (:func:`volsr.data.cube_self_pairs.cube_self_pairs`) are the
input cube degraded again by the card's factor with the protocol's bicubic (input) and the
cube (target), scaled by the card's input rule as the engine scales real inputs; the step is
the HSI training's (the generic trainer with the loss ``{l1: 1, sam: 0.3}``, AdamW, cosine
schedule).

The guard holds out a block of the cube and scores the network before training and at each
check on two things: the held-out pair (MPSNR and SAM of the cube degraded again, upsampled,
against the cube; the self-ensemble included where the card declares one, as the engine
runs it), and the held-out block at the real scale, where no reference exists but the
protocol says what the output must give back: the output, degraded by the same bicubic,
against the block (MPSNR and SAM of the "re-degraded" output; one pass without the
self-ensemble, on at most :data:`CONSISTENCY_SIDE` pixels a side: the guard's main cost).
A check is a candidate only if the pair's SAM fell by :data:`PAIR_SAM_MARGIN` or more and
neither re-degraded score got worse; the candidate with the best pair MPSNR is kept if it
beats the unadapted network's by :attr:`~volsr.train.adapt.AdaptOptions.min_gain_db`;
otherwise the unadapted network is returned and the report says so.

Why so strict: neither score sees the real output's SAM well (bench/adapt_cube.py). Every
fine-tune measured raised the real output's MPSNR (+0.05 to +0.13 dB) and its SAM. On a CAVE
scene at x4 the pair's SAM fell 3 % while the real output's rose 1.5-3 % (the re-degraded
SAM rose 40-60 %: refused); on the San Diego plane crop at x2 the pair's SAM fell 0.2 % and
the re-degraded scores improved, while the real output's SAM rose 0.16 % (+0.13 dB).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import torch
from torch import nn

from volsr.data.cube_self_pairs import cube_self_pairs
from volsr.data.hsi import HSIPair, make_pair
from volsr.engine.normalise import input_scale
from volsr.engine.resolve import with_self_ensemble
from volsr.geometry import output_coordinates
from volsr.metrics import mpsnr, sam
from volsr.models.registry import ModelCard
from volsr.train.adapt import AdaptOptions, AdaptReport, adapted_card, fine_tune
from volsr.train.config import LossConfig
from volsr.train.trainer import Trainer
from volsr.volume import Volume

__all__ = ["CubeAdaptReport", "adapt_cube", "cube_options", "CUBE_STEPS", "MAX_SIDE"]

#: Default fine-tune length for cubes (see bench/adapt_cube.py).
CUBE_STEPS = 60
#: Default peak learning rate for cubes.
CUBE_LEARNING_RATE = 1e-4
#: Largest cube region (pixels per spatial axis, centred) the pairs are cut from: bounds memory.
MAX_SIDE = 256
#: Largest edge (input pixels, centred) of the held-out block run at the real scale: bounds its cost.
CONSISTENCY_SIDE = 48
#: Relative fall of the held-out pair's SAM a check needs (the real output's SAM rose where it fell 0.2 %).
PAIR_SAM_MARGIN = 0.01
#: The fine-tune's loss: L1 and the spectral angle (radians).
CUBE_LOSS = LossConfig(l1=1.0, sam=0.3)


def cube_options(*, steps: int | None = None, seed: int = 0) -> AdaptOptions:
    """The default :class:`~volsr.train.adapt.AdaptOptions` of a cube's adaptation.

    Parameters
    ----------
    steps : int, optional
        Optimiser steps (default :data:`CUBE_STEPS`).
    seed : int
        Seed of the pairs.

    Returns
    -------
    AdaptOptions
        ``patch`` is the largest target patch edge in cube pixels (the input's is ``patch // r``);
        ``holdout_pairs`` is unused (the guard scores the whole held-out block).

    Raises
    ------
    ValueError
        If ``steps`` is out of range.

    Examples
    --------
    >>> cube_options(steps=5).learning_rate
    0.0001
    """
    return AdaptOptions(steps=CUBE_STEPS if steps is None else steps, seed=seed, batch_size=4, patch=32,
                        learning_rate=CUBE_LEARNING_RATE, checks=4)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class CubeAdaptReport(AdaptReport):
    """What a cube's adaptation did: :class:`~volsr.train.adapt.AdaptReport` plus spectral angles.

    ``baseline_psnr`` and ``best_psnr`` are the held-out pair's MPSNR (dB; the SR protocol's:
    the cube over its maximum, data range 1, outputs clipped to [0, 1]); ``slab`` is the
    held-out block ``(axis, start, stop)`` in input pixels.

    Parameters
    ----------
    baseline_sam, best_sam : float
        The held-out pair's SAM (degrees) of the unadapted network and of the kept weights.
    baseline_consistency, best_consistency : (2,) tuple of float
        MPSNR (dB, the block over the cube's maximum) and SAM (degrees) of the output at the
        real scale on the held-out block, degraded again, against the block.
    checks : tuple of (5,) tuple of float
        Every check: step, pair MPSNR, pair SAM, re-degraded MPSNR and SAM.

    Examples
    --------
    >>> r = CubeAdaptReport(False, 10, 0, 30.0, 30.0, 2.0, (0, 48, 64), 1.5, 1.5, (50.0, 0.1), (50.0, 0.1))
    >>> r.describe()[:47]
    'adapt: 10 steps in 2 s; held-out block +0.00 dB'
    """

    baseline_sam: float
    best_sam: float
    baseline_consistency: tuple[float, float]
    best_consistency: tuple[float, float]
    checks: tuple[tuple[float, float, float, float, float], ...] = ()

    def describe(self) -> str:
        """One line for the log.

        Returns
        -------
        str

        Examples
        --------
        >>> r = CubeAdaptReport(True, 9, 6, 30.0, 30.1, 2.0, (1, 4, 8), 1.5, 1.4, (50.0, 0.1), (50.1, 0.1))
        >>> r.describe()[-40:]
        'columns 4-8): kept the weights of step 6'
        """
        verdict = f"kept the weights of step {self.best_step}"
        if not self.kept:
            top = max(self.checks, key=lambda c: c[1], default=None)
            seen = "" if top is None else (
                f" (best check: step {top[0]:.0f}, {top[1] - self.baseline_psnr:+.2f} dB, SAM "
                f"{top[2] - self.baseline_sam:+.3f} deg, re-degraded SAM {top[4] - self.baseline_consistency[1]:+.3f} deg)")
            verdict = f"did not help there{seen}: using the unadapted network"
        what = ("rows", "columns")[self.slab[0]]
        return (f"adapt: {self.steps} steps in {self.seconds:.0f} s; held-out block {self.gain_db:+.2f} dB, SAM "
                f"{self.baseline_sam:.3f} -> {self.best_sam:.3f} deg, re-degraded SAM "
                f"{self.baseline_consistency[1]:.3f} -> {self.best_consistency[1]:.3f} deg ({self.baseline_psnr:.2f} -> "
                f"{self.best_psnr:.2f} dB, {what} {self.slab[1]}-{self.slab[2]}): {verdict}")

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able facts (rounded)."""
        rounded = {k: round(getattr(self, k), 4) for k in ("baseline_sam", "best_sam")}
        for k in ("baseline_consistency", "best_consistency"):
            rounded[k] = [round(v, 4) for v in getattr(self, k)]
        return {**super().to_json(), **rounded, "checks": [[round(v, 4) for v in c] for c in self.checks]}


def adapt_cube(
    volume: Volume | np.ndarray,
    base: nn.Module,
    *,
    factors: Sequence[float],
    options: AdaptOptions | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> nn.Module:
    """Fine-tune the hyperspectral network ``base`` on pairs cut from ``volume``; guarded.

    Parameters
    ----------
    volume : Volume or (rows, cols, bands) ndarray
        The LR cube (two spatial axes and a band axis). Only a central region of at most
        :data:`MAX_SIDE` pixels per spatial axis is read.
    base : torch.nn.Module
        A trainable network with a card of modality ``"hsi"`` (``model(x, positions)``, as
        :class:`volsr.models.attn1d2d.Attn1D2D`). Not modified.
    factors : (2,) sequence of float
        The run's factors: the card's integer scale on both spatial axes.
    options : AdaptOptions, optional
        Default :func:`cube_options`.
    device : str or torch.device
        Where to train.
    progress : bool
        Show a progress bar (stderr).

    Returns
    -------
    torch.nn.Module
        A new module in eval mode with the base's card (its description says adapted) and
        ``adaptation``, a :class:`CubeAdaptReport`; the unadapted weights if the guard fell back.

    Raises
    ------
    ValueError
        If the input is not a cube, the factors are not the card's scale on both axes, or the
        cube is too small for the pairs (:func:`volsr.data.cube_self_pairs.holdout_split`).

    Examples
    --------
    >>> from volsr.models import create_model
    >>> adapt_cube(np.zeros((64, 64, 8)), create_model("attn1d2d.x4"), factors=(2, 2))
    Traceback (most recent call last):
    ...
    ValueError: --adapt of attn1d2d.x4 needs --scale 4,4 (its scale on both spatial axes), got --scale 2,2
    """
    options = options or cube_options()
    card = base.card
    scale = int(card.scale_range[0])
    if len(factors) != 2 or any(float(f) != scale for f in factors):
        shown = ",".join(f"{float(f):g}" for f in factors)
        raise ValueError(f"--adapt of {card.name} needs --scale {scale},{scale} (its scale on both spatial axes), "
                         f"got --scale {shown}")
    started = time.perf_counter()
    cube, real, offset = _read_cube(volume, card, scale)
    pairs = cube_self_pairs(cube, scale=scale, patch=options.patch, batch_size=options.batch_size, seed=options.seed)
    guard = _CubeGuard(pairs.held_out, _held_block(real, pairs.slab), units=(float(cube.max()), float(real.max())),
                       factors=(scale, scale), device=device)  # fmt: skip
    net = copy.deepcopy(base).to(device).train()
    guard(net)
    steps = fine_tune(net, pairs.training.batches, guard, options, device=device, progress=progress,
                      loss=CUBE_LOSS)
    first, best = guard.baseline, guard.best
    kept = best is not None and best[1][0] - first[0] >= options.min_gain_db
    net.load_state_dict(best[2] if kept else base.state_dict())
    net = net.cpu().eval()
    net.card = adapted_card(card, kept)
    chosen = best[1] if kept else first
    axis, start, stop = pairs.slab
    net.adaptation = CubeAdaptReport(
        kept=kept, steps=steps, best_step=best[0] if kept else 0, baseline_psnr=first[0], best_psnr=chosen[0],
        seconds=time.perf_counter() - started, slab=(axis, start + offset[axis], stop + offset[axis]),
        baseline_sam=first[1], best_sam=chosen[1], baseline_consistency=first[2:], best_consistency=chosen[2:],
        checks=tuple(guard.checks),
    )  # fmt: skip
    return net


def _read_cube(volume: Volume | np.ndarray, card: ModelCard, scale: int
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The cube (rows, cols, bands) in the units of its pairs and in the engine's, and its offset.

    The engine divides an input by the card's statistic of it (its maximum over ``input_peak``
    for the HSI networks, :func:`volsr.engine.normalise.input_scale`); the pairs' input is the
    cube degraded again, and the same rule is taken of that, so the pairs' inputs sit at the
    level of the real ones.
    """
    if not isinstance(volume, Volume):
        array = np.asarray(volume, np.float32)
        if array.ndim != 3:
            raise ValueError(f"--adapt of {card.name} needs a cube (rows, cols, bands), got shape {array.shape}")
        volume = Volume(array, np.eye(4), ("i", "j", "band"))
    if volume.band_axis is None or len(volume.spatial_axes) != 2:
        raise ValueError(f"--adapt of {card.name} needs a cube (two spatial axes and a band axis), got axes "
                         f"{volume.axes}")
    data = da.moveaxis(volume.data, volume.band_axis, -1).astype(np.float32)
    real = input_scale(card.input_scaling, data, peak=card.input_peak)  # the engine's: the whole input
    offset = tuple(max(0, (n - MAX_SIDE) // 2) for n in data.shape[:2])
    region = tuple(slice(o, o + min(n, MAX_SIDE)) for o, n in zip(offset, data.shape[:2], strict=True))
    cube = np.asarray(data[region].compute(), np.float32)
    lower = da.from_array(make_pair(cube, scale=scale).lr)
    pairs = input_scale(card.input_scaling, lower, peak=card.input_peak)
    return cube / np.float32(pairs), cube / np.float32(real), offset


def _held_block(cube: np.ndarray, slab: tuple[int, int, int]) -> np.ndarray:
    """The held-out block of ``cube``, cut to its central :data:`CONSISTENCY_SIDE` pixels per axis."""
    axis, start, stop = slab
    block = np.take(cube, np.arange(start, stop), axis=axis)
    box = tuple(slice(max(0, (n - CONSISTENCY_SIDE) // 2), max(0, (n - CONSISTENCY_SIDE) // 2) + CONSISTENCY_SIDE)
                for n in block.shape[:2])  # fmt: skip
    return block[box]


class _CubeGuard:
    """Scores a network on the held-out pair and block (module docstring); keeps the best candidate."""

    def __init__(self, pair: HSIPair, block: np.ndarray, *, units: tuple[float, float], factors: tuple[int, int],
                 device: str | torch.device) -> None:  # fmt: skip
        self.pair, self.block, self.units, self.factors = pair, block, units, factors
        self.device = torch.device(device)
        self.trainer: Trainer | None = None  # set once training runs: its scores are candidates
        self.baseline: tuple[float, float, float, float] = (-math.inf, math.inf, -math.inf, math.inf)
        self.checks: list[tuple[float, float, float, float, float]] = []
        self.best: tuple[int, tuple[float, float, float, float], dict[str, torch.Tensor]] | None = None

    def _upsample(self, net: nn.Module, cube: np.ndarray) -> np.ndarray:
        h, w, _ = cube.shape
        grid = (output_coordinates(h, h * self.factors[0]), output_coordinates(w, w * self.factors[1]))
        x = torch.from_numpy(cube.transpose(2, 0, 1).copy())[None].to(self.device)
        return np.nan_to_num(net(x, grid)[0].float().cpu().numpy().transpose(1, 2, 0), nan=0.0)  # NaN: diverged

    @torch.no_grad()
    def scores(self, net: nn.Module) -> tuple[float, float, float, float]:
        """Pair MPSNR (dB) and SAM (degrees), re-degraded MPSNR and SAM, of ``net``."""
        was_training = net.training
        net.eval()
        unit, real_unit = self.units
        y = np.clip(self._upsample(with_self_ensemble(net, self.factors, None), self.pair.lr) / unit, 0.0, 1.0)
        back = make_pair(self._upsample(net, self.block), scale=self.factors[0]).lr  # one pass: the cost
        net.train(was_training)
        reference = self.pair.hr / np.float32(unit)
        return (mpsnr(reference, y, data_range=1.0), sam(reference, y),
                mpsnr(self.block / real_unit, back / real_unit, data_range=1.0), sam(self.block, back))

    def __call__(self, net: nn.Module) -> Mapping[str, float]:
        scores = self.scores(net)
        if self.trainer is None:
            self.baseline = scores
        else:
            self.checks.append((float(self.trainer.step), *scores))
            first = self.baseline
            candidate = scores[1] <= first[1] * (1 - PAIR_SAM_MARGIN) and scores[2] >= first[2] and scores[3] <= first[3]
            if candidate and (self.best is None or scores[0] > self.best[1][0]):
                state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                self.best = (self.trainer.step, scores, state)
        names = ("mpsnr", "sam", "redegraded_mpsnr", "redegraded_sam")
        return {"score": scores[0], **dict(zip(names, scores, strict=True))}
