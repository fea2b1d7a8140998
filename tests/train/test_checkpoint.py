"""Tests of volsr.train.checkpoint: round trips against PyTorch's own state dicts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from volsr.train.checkpoint import (
    atomic_write,
    flatten_optimizer_state,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_generator,
    save_checkpoint,
    unflatten_optimizer_state,
)


def stepped_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 3, generator=generator)).square().sum().backward()
        optimizer.step()
    return model, optimizer


def test_optimizer_state_round_trip_continues_identically(tmp_path):
    model, optimizer = stepped_optimizer()
    tensors, rest = flatten_optimizer_state(optimizer.state_dict(), prefix="optim")
    path = save_checkpoint(tmp_path, "step_000000002",
                           tensors={**tensors, **{f"model.{k}": v for k, v in model.state_dict().items()}},
                           meta={"optim": rest})
    loaded, meta = load_checkpoint(path)
    clone = torch.nn.Linear(3, 2)
    clone.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("model.")})
    restored = torch.optim.AdamW(clone.parameters(), lr=1.0)
    restored.load_state_dict(unflatten_optimizer_state(loaded, meta["optim"], prefix="optim"))
    assert restored.param_groups[0]["betas"] == (0.8, 0.95)
    assert restored.param_groups[0]["lr"] == 1e-2
    x = torch.ones(1, 3)
    for opt, net in ((optimizer, model), (restored, clone)):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_files_are_safetensors_and_json(tmp_path):
    save_checkpoint(tmp_path, "best", tensors={"a.b": torch.arange(3.0)}, meta={"step": 7})
    with safe_open(str(tmp_path / "best.safetensors"), framework="pt") as handle:
        assert list(handle.keys()) == ["a.b"]
    assert json.loads((tmp_path / "best.json").read_text()) == {"step": 7}


def test_shared_storage_is_saved(tmp_path):
    base = torch.arange(4.0)
    save_checkpoint(tmp_path, "s", tensors={"x": base, "y": base[:2]}, meta={})
    tensors, _ = load_checkpoint(tmp_path / "s.safetensors")
    assert tensors["y"].tolist() == [0.0, 1.0]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def fail(tmp):
        open(tmp, "w").write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_list_ignores_incomplete_and_prune_keeps_newest(tmp_path):
    for step in (1, 2, 10):
        save_checkpoint(tmp_path, f"step_{step:09d}", tensors={"w": torch.ones(1)}, meta={})
    save_checkpoint(tmp_path, "best", tensors={"w": torch.ones(1)}, meta={})
    (tmp_path / "step_000000011.safetensors").write_bytes(b"")  # no JSON: incomplete
    assert [p.stem for p in list_checkpoints(tmp_path)] == [
        "step_000000001", "step_000000002", "step_000000010"]
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert [p.stem for p in removed] == ["step_000000001"]
    assert not (tmp_path / "step_000000001.safetensors").exists()
    assert (tmp_path / "best.json").exists()
    with pytest.raises(ValueError, match="keep_last"):
        prune_checkpoints(tmp_path, keep_last=0)


def test_missing_and_bad_values_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nothing.json")
    with pytest.raises(TypeError, match="cannot store"):
        flatten_optimizer_state({"state": {0: {"x": object()}}, "param_groups": []}, prefix="o")


def test_a_random_state_from_another_device_reseeds_with_a_warning():
    generator = torch.Generator().manual_seed(1)
    cuda_sized = [7] * 16  # a CUDA generator's state is 16 bytes, a CPU one's 5056
    with pytest.warns(UserWarning, match="another device's: reseeded with 5"):
        restored = restore_generator(generator, cuda_sized, fallback_seed=5)
    assert restored is False
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(5).get_state())
