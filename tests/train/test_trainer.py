"""Tests of volsr.train.trainer with a deterministic stand-in model and batch stream.

Expectations are independent of the trainer: exact equality between a straight run and a
resumed one, PyTorch's own single-process gradients for DDP, the analytic cosine schedule.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import queue as queue_module
import signal

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from volsr.geometry import output_coordinates
from volsr.models.interpolation import SeparableInterpolation
from volsr.models.registry import ModelCard
from volsr.train.checkpoint import list_checkpoints, load_checkpoint
from volsr.train.config import GanConfig, LossConfig, OptimConfig, RunConfig
from volsr.train.trainer import Trainer, cosine_lr

CARD = ModelCard(name="tiny", kind="network", grid="hr", halo=1, scales="real",
                 scale_range=(1.0, 4.0), modality="mri", description="test stand-in")


class TinyUpsampler(nn.Module):
    """Linear interpolation then a 3x3x3 residual conv (a minimal mDCSRN stand-in)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.interpolate = SeparableInterpolation(method="linear")
        self.conv = nn.Conv3d(1, 1, 3, padding=1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(0.1 * torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.zero_()
        self.card = CARD

    def forward(self, x, positions):
        hr = self.interpolate(x, positions)
        return hr + self.conv(hr)


class TinyCritic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.conv.weight.copy_(0.1 * torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.zero_()

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(1, 2, 3, 4))


def make_batch(index: int, batch: int = 2, rows: slice = slice(None)) -> dict:
    generator = torch.Generator().manual_seed(1000 + index)
    hr = torch.rand(batch, 1, 8, 8, 8, generator=generator)[rows]
    lr = hr.reshape(*hr.shape[:4], 4, 2).mean(-1)
    positions = (np.arange(8.0), np.arange(8.0), output_coordinates(4, 8))
    return {"lr": lr, "hr": hr, "positions": positions}


def batches(start: int):
    return (make_batch(i) for i in itertools.count(start))


def make_trainer(tmp_path, *, gan: bool = False, ema: float | None = 0.9, every: int = 2,
                 steps: int = 4, stream=batches) -> Trainer:
    run = RunConfig(name="tiny", output_dir=str(tmp_path), seed=3, checkpoint_every=every,
                    keep_last=2, log_every=1, progress=False)
    optim = OptimConfig(steps=steps, lr=1e-2, warmup_steps=1, grad_clip=0.5, ema_decay=ema)
    return Trainer(TinyUpsampler(), stream, run=run, optim=optim,
                   critic=TinyCritic() if gan else None,
                   gan=GanConfig(n_critic=2, start_step=1) if gan else None,
                   loss=LossConfig(wgan=1e-3 if gan else 0.0),
                   record={"config": {"note": "test"}, "datasets": ["synthetic"]})


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return trainer._tensors()


@pytest.mark.parametrize("gan", [False, True])
def test_resume_continues_bit_for_bit(tmp_path, gan):
    straight = make_trainer(tmp_path / "a", gan=gan)
    assert straight.fit() == "finished"
    first = make_trainer(tmp_path / "b", gan=gan)
    assert first.fit(max_steps=2) == "paused"
    second = make_trainer(tmp_path / "b", gan=gan)
    assert second.resume() == 2
    assert second.fit() == "finished"
    expected, got = state_of(straight), state_of(second)
    assert sorted(expected) == sorted(got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert straight.batches_seen == second.batches_seen == (4 if not gan else 4 + 3 * 2)
    assert torch.equal(straight.penalty_rng.get_state(), second.penalty_rng.get_state())
    # The resumed run's log holds each step once, as the straight run's does.
    with open(tmp_path / "b" / "train.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]


def test_loss_falls_and_lr_follows_schedule(tmp_path):
    trainer = make_trainer(tmp_path, ema=None, steps=30, every=100)
    trainer.fit()
    with open(tmp_path / "train.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["l1"]) for r in rows]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    expected = [1e-2 * cosine_lr(s, steps=30, warmup_steps=1, min_lr_ratio=0.01) for s in range(30)]
    np.testing.assert_allclose([float(r["lr"]) for r in rows], expected, rtol=1e-12)


def test_checkpoints_kept_last_n_and_loadable_without_pickle(tmp_path):
    trainer = make_trainer(tmp_path, every=1, steps=4)
    trainer.fit()
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [p.stem for p in kept] == ["step_000000003", "step_000000004"]
    tensors, meta = load_checkpoint(kept[-1])
    assert meta["step"] == 4 and meta["datasets"] == ["synthetic"]
    assert torch.equal(tensors["model.conv.weight"], trainer.model.conv.weight.detach())
    assert torch.equal(tensors["ema.conv.weight"], trainer.ema["conv.weight"])
    # Safetensors + JSON only: no pickle payload anywhere.
    for path in (tmp_path / "checkpoints").iterdir():
        assert b"\x80\x04\x95" not in path.read_bytes()[:64]


def test_ema_is_exponential_average(tmp_path):
    trainer = make_trainer(tmp_path, ema=0.5, steps=1)
    before = trainer.model.conv.weight.detach().clone()
    trainer.fit()
    after = trainer.model.conv.weight.detach()
    # Step 0 of the warm-up rule: decay min(0.5, (1 + 0) / (10 + 0)) = 0.1.
    torch.testing.assert_close(trainer.ema["conv.weight"], 0.1 * before + 0.9 * after)
    assert torch.equal(trainer.inference_model().conv.weight, trainer.ema["conv.weight"])


def test_gradient_clipping_bounds_the_update(tmp_path):
    trainer = make_trainer(tmp_path, ema=None, steps=1)
    row = trainer._generator_step(make_batch(0), adversarial=False)
    grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters()])
    assert row["grad_norm"] > 0.5  # the raw norm is reported ...
    assert float(grads.norm()) == pytest.approx(0.5, rel=1e-5)  # ... and clipped to 0.5


def test_signal_writes_checkpoint_and_stops(tmp_path):
    def stream(start):
        for i in itertools.count(start):
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            yield make_batch(i)

    trainer = make_trainer(tmp_path, every=100, steps=10, stream=stream)
    assert trainer.fit() == "interrupted"
    assert trainer.step == 3
    assert [p.stem for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_000000003"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_validation_selects_best_checkpoint(tmp_path):
    scores = iter([1.0, 3.0, 2.0])
    trainer = make_trainer(tmp_path, steps=3, every=100)
    trainer.validator, trainer.validate_every = (lambda model: {"score": next(scores)}), 1
    trainer.fit()
    assert trainer.best == {"step": 2, "score": 3.0}
    assert load_checkpoint(tmp_path / "checkpoints" / "best.json")[1]["step"] == 2
    assert [h["score"] for h in trainer.history] == [1.0, 3.0, 2.0]


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="critic and gan"):
        Trainer(TinyUpsampler(), batches, run=RunConfig(name="t", output_dir=str(tmp_path)),
                optim=OptimConfig(steps=1), critic=TinyCritic())
    with pytest.raises(ValueError, match="gan and loss.wgan"):
        Trainer(TinyUpsampler(), batches, run=RunConfig(name="t", output_dir=str(tmp_path)),
                optim=OptimConfig(steps=1), loss=LossConfig(wgan=1e-3))
    with pytest.raises(ValueError, match="positive weight"):
        Trainer(TinyUpsampler(), batches, run=RunConfig(name="t", output_dir=str(tmp_path)),
                optim=OptimConfig(steps=1), loss=LossConfig(l1=0.0))
    with pytest.raises(ValueError, match="max_steps"):
        make_trainer(tmp_path).fit(max_steps=0)


def test_cosine_lr_analytic():
    assert cosine_lr(0, steps=10, warmup_steps=4, min_lr_ratio=0.1) == 0.25
    assert cosine_lr(4, steps=10, warmup_steps=4, min_lr_ratio=0.1) == 1.0
    mid = cosine_lr(7, steps=10, warmup_steps=4, min_lr_ratio=0.1)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine_lr(99, steps=10, warmup_steps=4, min_lr_ratio=0.1) == pytest.approx(0.1)


def _ddp_worker(rank: int, world: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        trainer = make_trainer(os.path.dirname(init_file) + f"/rank{rank}", ema=None)
        half = slice(rank * 2, rank * 2 + 2)
        loss, _ = trainer.generator_loss(make_batch(0, batch=4, rows=half), adversarial=False)
        loss.backward()
        queue.put((rank, [p.grad.numpy().copy() for p in trainer.model.parameters()]))  # numpy: by value
        queue.close()
        queue.join_thread()  # sent before the teardown below, whatever happens there
        # Both ranks reach the teardown together: gloo aborts a process ("terminate called
        # without an active exception") whose peer closed the connection first (seen under load).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_average_to_full_batch_gradients(tmp_path):
    reference = make_trainer(tmp_path / "single", ema=None)
    loss, _ = reference.generator_loss(make_batch(0, batch=4), adversarial=False)
    loss.backward()
    expected = [p.grad for p in reference.model.parameters()]
    queue = mp.get_context("spawn").Queue()
    ranks = mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), queue), nprocs=2,
                               join=False, start_method="spawn")  # fmt: skip
    try:
        results = dict(queue.get(timeout=300) for _ in range(2))
    except queue_module.Empty:
        ranks.join()  # a rank that failed before sending its gradients: its error, not a timeout
        raise
    try:
        while not ranks.join():
            pass
    except mp.ProcessExitedException as exit_error:
        # gloo can abort a rank at interpreter exit after its work is done and sent ("terminate
        # called without an active exception", seen twice in loaded CI runs): the gradients
        # below are what this test checks; any other exit is a failure.
        if exit_error.signal_name != "SIGABRT":
            raise
    for rank in (0, 1):
        for got, want in zip(results[rank], expected):
            np.testing.assert_allclose(got, want.numpy(), atol=1e-6, rtol=0)
