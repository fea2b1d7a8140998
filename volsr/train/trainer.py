"""The training loop: constructed objects in, checkpoints, logs and trained weights out.

:class:`Trainer` receives a model, a batch source and the validated settings; it never
reads configuration files (the builder in :mod:`volsr.train.build` does). One step is
``n_critic`` critic updates (WGAN-GP phase only), then one generator update on the
config's weighted sum (``{l1: 1, wgan: 1e-3}``, ``{l1: 1, sam: 0.3}``: :class:`LossConfig`);
every update draws a fresh batch.

Exact resume: the learning rate is a pure function of the step, the batch source is
indexed by the number of batches already drawn, and every piece of state that changes
(weights, EMA, optimiser moments, the penalty's random generator, counters, history) is in
the checkpoint, so ``k`` steps, a checkpoint, and ``n - k`` more steps reproduce ``n``
steps bit for bit (on the same device and software).

Distributed data parallel: when ``torch.distributed`` is initialised with more than one
process, the generator runs inside :class:`~torch.nn.parallel.DistributedDataParallel`
(gradients averaged during backward) and the critic's gradients are averaged explicitly
(its gradient penalty differentiates through the critic twice, which DDP's reducer does
not support); only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from volsr.train.checkpoint import (
    flatten_optimizer_state,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_generator,
    save_checkpoint,
    unflatten_optimizer_state,
)
from volsr.train.config import GanConfig, LossConfig, OptimConfig, RunConfig
from volsr.train.losses import ADVERSARIAL_TERM, TERMS, weighted_loss, wgan_losses

__all__ = ["BatchSource", "Validator", "cosine_lr", "Trainer"]

#: ``batches(start)`` yields batches ``start, start + 1, ...`` of a deterministic stream:
#: dicts with ``"lr"`` (B, 1, *lr_patch), ``"hr"`` (B, 1, *patch) tensors and
#: ``"positions"`` (one 1-D array per spatial axis, in LR voxel coordinates).
BatchSource = Callable[[int], Iterator[Mapping[str, Any]]]
#: ``validator(model)`` returns flat metrics (``"<volume>/psnr"`` ...) and ``"score"``
#: (higher is better; selects the ``best`` checkpoint).
Validator = Callable[[nn.Module], dict[str, float]]

#: ``train.csv``'s columns: the loss, each of its terms unweighted (blank when not computed).
_TRAIN_FIELDS = ("step", "lr", "loss", *TERMS, ADVERSARIAL_TERM, "critic", "penalty", "grad_norm", "step_seconds")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def cosine_lr(step: int, *, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup, then a cosine decay to ``min_lr_ratio``.

    ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, then
    ``r + (1 - r) (1 + cos(pi t)) / 2`` with ``t = (step - warmup) / (steps - warmup)``
    clipped to [0, 1] and ``r = min_lr_ratio``.

    Parameters
    ----------
    step : int
        Zero-based index of the update about to be made.
    steps : int
        Schedule length (>= 1).
    warmup_steps : int
        Warmup length (>= 0).
    min_lr_ratio : float
        Final multiplier, in [0, 1].

    Returns
    -------
    float
        The multiplier of the peak learning rate.

    Raises
    ------
    ValueError
        If ``steps < 1`` or ``warmup_steps < 0``.

    Examples
    --------
    >>> [round(cosine_lr(s, steps=4, warmup_steps=2, min_lr_ratio=0.0), 3) for s in range(5)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if steps < 1 or warmup_steps < 0:
        raise ValueError(f"need steps >= 1 and warmup_steps >= 0, got {steps}, {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(max((step - warmup_steps) / max(steps - warmup_steps, 1), 0.0), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _CsvLog:
    """Append-only CSV with a fixed header; a resume drops rows after the resumed step."""

    def __init__(self, path: Path, fields: tuple[str, ...], *, after: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if after is not None and path.is_file():
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= after]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore").writerow(row)


class Trainer:
    """Train a super-resolution generator (optionally against a WGAN-GP critic).

    Parameters
    ----------
    model : torch.nn.Module
        The generator: ``model(lr, positions)`` returns ``(B, 1, *patch)``; it needs a
        ``card`` (:class:`~volsr.models.registry.ModelCard`) for validation through the
        engine. Moved to ``device``.
    batches : BatchSource
        Deterministic batch stream indexed by the number of batches drawn (per process).
    run : RunConfig
        Output folder, seed, checkpoint/log cadence, progress bar.
    optim : OptimConfig
        AdamW, schedule, clipping, AMP and EMA settings.
    critic : torch.nn.Module, optional
        WGAN critic ``critic(hr) -> (B,)`` or ``(B, 1)`` scores; required with ``gan``.
    gan : GanConfig, optional
        The critic's WGAN-GP settings; None: no critic.
    validator : Validator, optional
        Called on rank 0 with the (EMA) model every ``validate_every`` steps and at the end.
    validate_every : int
        Steps between validations (>= 1).
    device : str or torch.device
        Where training runs.
    record : mapping, optional
        JSON-able facts stored in every checkpoint (e.g. ``{"config": ..., "datasets": ...}``).
    loss : LossConfig, optional
        The generator's loss, a weighted sum (None: L1 alone): its non-adversarial terms
        by :func:`volsr.train.losses.weighted_loss` on float32 outputs, plus ``loss.wgan``
        times the critic's generator term from ``gan.start_step`` on.

    Raises
    ------
    ValueError
        If exactly one of ``critic`` and ``gan`` is given, ``gan`` and ``loss.wgan > 0``
        disagree, the loss has no positive term, or ``validate_every < 1``.

    Examples
    --------
    >>> cosine_lr(0, steps=10, warmup_steps=0, min_lr_ratio=0.0)  # see tests for a full run
    1.0
    """

    def __init__(
        self,
        model: nn.Module,
        batches: BatchSource,
        *,
        run: RunConfig, optim: OptimConfig,
        critic: nn.Module | None = None,
        gan: GanConfig | None = None,
        validator: Validator | None = None,
        validate_every: int = 1000,
        device: str | torch.device = "cpu",
        record: Mapping[str, Any] | None = None,
        loss: LossConfig | None = None,
    ) -> None:
        if (critic is None) != (gan is None):
            raise ValueError("critic and gan must be given together (both or neither)")
        loss = LossConfig() if loss is None else loss
        if (gan is None) != (loss.wgan == 0):
            raise ValueError(f"gan and loss.wgan > 0 must be given together, got loss.wgan {loss.wgan:g}")
        if validate_every < 1:
            raise ValueError(f"validate_every must be >= 1, got {validate_every}")
        self.device = torch.device(device)
        self.model, self.batches, self.run, self.optim = model.to(self.device), batches, run, optim
        self.critic, self.gan = (critic.to(self.device) if critic is not None else None), gan
        self.validator, self.validate_every = validator, validate_every
        self.loss, self.pixel_loss = loss, weighted_loss(dataclasses.asdict(loss))
        self.record = dict(record or {})
        self.rank, self.world = _world()
        self.run_dir = Path(run.output_dir)
        self.step, self.batches_seen, self.history, self.best = 0, 0, [], None
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
        )
        self.critic_optimizer = None
        if critic is not None:
            self.critic_optimizer = torch.optim.AdamW(
                critic.parameters(), lr=gan.lr, betas=gan.betas, weight_decay=0.0
            )
        self.ema = None
        if optim.ema_decay is not None:
            self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.penalty_rng = torch.Generator(self.device).manual_seed(run.seed)
        self.net = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._stop_requested = False

    # ----------------------------------------------------------------- steps
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.optim.amp and self.device.type == "cuda":
            # bfloat16 keeps float32's exponent range: no loss scaler (and its state) needed.
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_device(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        lr = torch.as_tensor(batch["lr"]).to(self.device, torch.float32, non_blocking=True)
        hr = torch.as_tensor(batch["hr"]).to(self.device, torch.float32, non_blocking=True)
        return lr, batch["positions"], hr

    def generator_loss(
        self, batch: Mapping[str, Any], *, adversarial: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward one batch through the generator and return its loss (not yet backward).

        Parameters
        ----------
        batch : mapping
            ``"lr"``, ``"positions"``, ``"hr"`` (see :data:`BatchSource`).
        adversarial : bool
            Add ``loss.wgan`` times the critic's generator term.

        Returns
        -------
        loss : torch.Tensor
            Scalar (mean over this process's batch).
        parts : dict of str to float
            Each computed term, unweighted, by name (``"wgan"`` with ``adversarial``).

        Raises
        ------
        ValueError
            If the output shape differs from ``hr``'s.

        Examples
        --------
        See ``tests/train/test_trainer.py`` for a full run.
        """
        lr, positions, hr = self._to_device(batch)
        with self._autocast():
            sr = self.net(lr, positions)
            if sr.shape != hr.shape:
                raise ValueError(f"model output {tuple(sr.shape)} differs from hr {tuple(hr.shape)}")
            # The WGAN generator term, -mean D(G(x)) (wgan_losses's ``generator``).
            adv = -self.critic(sr).float().mean() if adversarial else None
        loss, parts = self.pixel_loss(sr.float(), hr)  # float32, outside autocast
        if adv is not None:
            loss = loss + self.loss.wgan * adv
            parts[ADVERSARIAL_TERM] = float(adv.detach())
        return loss, parts

    def _generator_step(self, batch: Mapping[str, Any], *, adversarial: bool) -> dict[str, float]:
        if self.critic is not None:
            self.critic.requires_grad_(False)
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = self.generator_loss(batch, adversarial=adversarial)
        loss.backward()
        clip = self.optim.grad_clip
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else math.inf)
        self.optimizer.step()
        if self.critic is not None:
            self.critic.requires_grad_(True)
        return {**parts, "loss": float(loss.detach()), "grad_norm": float(norm)}

    def _critic_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        lr, positions, hr = self._to_device(batch)
        with torch.no_grad(), self._autocast():
            fake = self.model(lr, positions).float()
        self.critic_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            terms = wgan_losses(self.critic, hr, fake, generator=self.penalty_rng,
                                penalty_weight=self.gan.gp_weight)
        terms.critic.backward()
        if self.world > 1:
            for p in self.critic.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        self.critic_optimizer.step()
        return {"critic": float(terms.critic.detach()), "penalty": float(terms.penalty)}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # TF's num_updates warm-up: without it 0.999**500 = 61 % of the init lingers at step 500.
        decay = min(self.optim.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        for key, value in self.model.state_dict().items():
            if value.is_floating_point():
                self.ema[key].lerp_(value, 1.0 - decay)
            else:
                self.ema[key].copy_(value)

    def _train_step(self, draw: Callable[[], Mapping[str, Any]]) -> dict[str, float]:
        optim = self.optim
        rate = optim.lr * cosine_lr(self.step, steps=optim.steps, warmup_steps=optim.warmup_steps,
                                    min_lr_ratio=optim.min_lr_ratio)  # fmt: skip
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.model.train()
        row: dict[str, float] = {"lr": rate}
        adversarial = self.gan is not None and self.step >= self.gan.start_step
        if adversarial:
            self.critic.train()
            for _ in range(self.gan.n_critic):
                row.update(self._critic_step(draw()))
        row.update(self._generator_step(draw(), adversarial=adversarial))
        if self.ema is not None:
            self._update_ema()
        self.step += 1
        return row

    def fit(self, *, max_steps: int | None = None) -> str:
        """Train until the schedule ends, ``max_steps`` is reached, or a stop signal arrives.

        SIGINT and SIGTERM (when called from the main thread) finish the current step,
        write a checkpoint and return. A checkpoint is also written at the end.

        Parameters
        ----------
        max_steps : int, optional
            Stop at this step count (the schedule still spans ``optim.steps``).

        Returns
        -------
        str
            ``"finished"`` (schedule done), ``"paused"`` (``max_steps`` reached) or
            ``"interrupted"`` (signal).

        Raises
        ------
        ValueError
            If ``max_steps < 1``.

        Examples
        --------
        See ``tests/train/test_trainer.py`` for a full run.
        """
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        stop = min(self.optim.steps, max_steps or self.optim.steps)
        logs = self._open_logs()
        stream = self.batches(self.batches_seen)

        def draw() -> Mapping[str, Any]:
            self.batches_seen += 1
            return next(stream)

        bar = self._progress(stop)
        with self._signals():
            while self.step < stop and not self._stopping():
                started = time.perf_counter()
                row = self._train_step(draw)
                row.update(step=self.step, step_seconds=time.perf_counter() - started)
                self._after_step(row, logs, bar, final=self.step == stop)
        if bar is not None:
            bar.close()
        status = "interrupted" if self._stop_requested else (
            "finished" if self.step >= self.optim.steps else "paused")
        if status == "interrupted":
            self.save()
        return status

    def _after_step(self, row: dict, logs: dict, bar: Any, *, final: bool) -> None:
        if self.rank == 0 and (self.step % self.run.log_every == 0 or final):
            logs["train"].write(row)
            if logs.get("tensorboard") is not None:
                for key in _TRAIN_FIELDS[1:]:
                    if key in row:
                        logs["tensorboard"].add_scalar(f"train/{key}", row[key], self.step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}", refresh=False)
        validated = self.step % self.validate_every == 0 or final
        if validated:
            self._validate(logs)  # every rank: rank 0 scores, the others wait at a barrier
        scored = validated and self.validator is not None  # checkpoint the new history
        if self.step % self.run.checkpoint_every == 0 or final or scored:
            self.save()

    def _stopping(self) -> bool:
        if self.world == 1:
            return self._stop_requested
        flag = torch.tensor([float(self._stop_requested)], device=self._comm_device())
        dist.all_reduce(flag)
        self._stop_requested = bool(flag.item() > 0)
        return self._stop_requested

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            self._stop_requested = True

        previous = {s: signal.signal(s, request_stop) for s in _STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _progress(self, stop: int) -> Any:
        if not self.run.progress or self.rank != 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=stop, initial=self.step, desc=self.run.name, unit="step",
                    file=sys.stderr, dynamic_ncols=True)

    def _open_logs(self) -> dict[str, Any]:
        if self.rank != 0:
            return {}
        after = self.step
        logs: dict[str, Any] = {
            "train": _CsvLog(self.run_dir / "train.csv", _TRAIN_FIELDS, after=after),
            "validation": _CsvLog(self.run_dir / "validation.csv", ("step", "metric", "value"),
                                  after=after),
        }
        try:  # TensorBoard only when installed: it is not a dependency.
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logs["tensorboard"] = None
        else:
            logs["tensorboard"] = SummaryWriter(str(self.run_dir / "tensorboard"))
        return logs

    # ------------------------------------------------------------ validation
    def inference_model(self) -> nn.Module:
        """The model to validate and export: a copy holding the EMA weights, if kept.

        Returns
        -------
        torch.nn.Module
            ``self.model`` itself without EMA, else a deep copy with the EMA state loaded.

        Examples
        --------
        See ``tests/train/test_trainer.py`` for a full run.
        """
        if self.ema is None:
            return self.model
        shadow = copy.deepcopy(self.model)
        shadow.load_state_dict(self.ema)
        return shadow

    def _validate(self, logs: dict) -> None:
        if self.rank == 0 and self.validator is not None:
            metrics = {k: float(v) for k, v in self.validator(self.inference_model()).items()}
            self.history.append({"step": self.step, **metrics})
            for key, value in metrics.items():
                logs["validation"].write({"step": self.step, "metric": key, "value": value})
                if logs.get("tensorboard") is not None:
                    logs["tensorboard"].add_scalar(f"validation/{key}", value, self.step)
            score = metrics.get("score")
            if score is not None and (self.best is None or score > self.best["score"]):
                self.best = {"step": self.step, "score": score}
                save_checkpoint(self.checkpoint_dir, "best", tensors=self._tensors(),
                                meta=self._meta())
        if self.world > 1:
            dist.barrier()

    # ------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        """``<output_dir>/checkpoints``."""
        return self.run_dir / "checkpoints"

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        flat, _ = flatten_optimizer_state(self.optimizer.state_dict(), prefix="optim")
        tensors.update(flat)
        if self.critic is not None:
            tensors.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
            flat, _ = flatten_optimizer_state(self.critic_optimizer.state_dict(),
                                              prefix="critic_optim")
            tensors.update(flat)
        return tensors

    def _meta(self) -> dict[str, Any]:
        meta = {
            "format": "volsr-checkpoint", "version": 1, "step": self.step,
            "batches_seen": self.batches_seen, "world_size": self.world,
            "rng": {"penalty": self.penalty_rng.get_state().tolist()},
            "optim": flatten_optimizer_state(self.optimizer.state_dict(), prefix="optim")[1],
            "history": self.history, "best": self.best, **self.record,
        }
        if self.critic is not None:
            meta["critic_optim"] = flatten_optimizer_state(
                self.critic_optimizer.state_dict(), prefix="critic_optim")[1]
        return meta

    def save(self) -> Path | None:
        """Write ``checkpoints/step_NNNNNNNNN`` (rank 0 only) and prune old ones.

        Returns
        -------
        Path or None
            The checkpoint's JSON file (None on other ranks).

        Raises
        ------
        OSError
            From the file system.

        Examples
        --------
        See ``tests/train/test_trainer.py`` for a full run.
        """
        if self.rank != 0:
            return None
        path = save_checkpoint(self.checkpoint_dir, f"step_{self.step:09d}",
                               tensors=self._tensors(), meta=self._meta())
        prune_checkpoints(self.checkpoint_dir, keep_last=self.run.keep_last)
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Load a checkpoint (default: the newest in ``checkpoints/``) to continue exactly.

        Parameters
        ----------
        path : str or Path, optional
            A checkpoint's ``.json`` file.

        Returns
        -------
        int
            The step reached (0 when there is no checkpoint to resume).

        Raises
        ------
        ValueError
            If the checkpoint does not match this model (missing or extra tensors).

        Examples
        --------
        See ``tests/train/test_trainer.py`` for a full run.
        """
        if path is None:
            found = list_checkpoints(self.checkpoint_dir)
            if not found:
                return 0
            path = found[-1]
        tensors, meta = load_checkpoint(path)
        self._load_modules(tensors, meta)
        self.step, self.batches_seen = int(meta["step"]), int(meta["batches_seen"])
        restore_generator(self.penalty_rng, meta["rng"]["penalty"], fallback_seed=self.run.seed + self.step)
        self.history, self.best = list(meta["history"]), meta["best"]
        return self.step

    def _load_modules(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        try:
            self.model.load_state_dict(part("model."))
            self.optimizer.load_state_dict(
                unflatten_optimizer_state(tensors, meta["optim"], prefix="optim"))
            if self.ema is not None:
                ema = part("ema.")
                self.ema = {k: ema[k].to(self.device) for k in self.ema}
            if self.critic is not None:
                self.critic.load_state_dict(part("critic."))
                self.critic_optimizer.load_state_dict(unflatten_optimizer_state(
                    tensors, meta["critic_optim"], prefix="critic_optim"))
        except (RuntimeError, KeyError) as error:
            raise ValueError(f"checkpoint does not match this run's model: {error}") from None
