"""Tests of volsr.train.soup: the mean of fine-tunes, written as weights the registry reads."""

from __future__ import annotations

import pytest
import torch

from volsr.models.attn1d2d import Attn1D2D
from volsr.models.weights import load_module, read_sidecar, save_weights
from volsr.train.checkpoint import save_checkpoint
from volsr.train.soup import main, soup_tensors, write_soup

CONFIG = {"scale": 2, "features": 4, "stages": 1}


def network(seed: int) -> Attn1D2D:
    torch.manual_seed(seed)
    model = Attn1D2D(**CONFIG)
    with torch.no_grad():  # untrained residual branches start at zero: make every tensor differ
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    return model


def checkpoint(folder, stem: str, model: Attn1D2D, step: int):
    """A trainer checkpoint: raw weights and a different EMA copy (the soup must read the EMA)."""
    state = model.state_dict()
    tensors = {**{f"model.{k}": v + 100.0 for k, v in state.items()},
               **{f"ema.{k}": v for k, v in state.items()}}
    return save_checkpoint(folder, stem, tensors=tensors, meta={"step": step}).with_suffix(".safetensors")


def test_the_soup_is_the_mean_of_the_ema_weights_and_runs_as_that_network(tmp_path):
    a, b, c = network(0), network(1), network(2)
    sources = [checkpoint(tmp_path, "a", a, 275), checkpoint(tmp_path, "b", b, 500),
               save_weights(c, tmp_path / "c.safetensors", config=CONFIG)]
    like = save_weights(a, tmp_path / "like.safetensors", config=CONFIG,
                        card={"name": "attn1d2d.x2", "input_peak": 0.9})
    out = write_soup(tmp_path / "soup.safetensors", sources, like=like)
    states = [m.state_dict() for m in (a, b, c)]
    expected = {k: (sum(state[k].double() for state in states) / 3).float() for k in states[0]}
    soup = load_module(Attn1D2D, out)  # the format the registry loads, config from the sidecar
    assert all(torch.equal(value, expected[key]) for key, value in soup.state_dict().items())
    reference = Attn1D2D(**CONFIG)
    reference.load_state_dict(expected)
    x = torch.rand(1, 5, 6, 6)
    with torch.no_grad():
        assert torch.equal(soup.residual(x), reference.residual(x))
    sidecar = read_sidecar(out)
    assert sidecar["card"] == {"name": "attn1d2d.x2", "input_peak": 0.9}
    assert [entry["step"] for entry in sidecar["metadata"]["soup_of"]] == [275, 500, None]
    assert [entry["training_config"] for entry in sidecar["metadata"]["soup_of"]] == [None, None, None]


def test_sources_that_do_not_soup_are_refused(tmp_path):
    small = save_weights(network(0), tmp_path / "small.safetensors", config=CONFIG)
    wide = save_weights(Attn1D2D(scale=2, features=6, stages=1), tmp_path / "wide.safetensors",
                        config={"scale": 2, "features": 6, "stages": 1})
    with pytest.raises(ValueError, match="at least two sources"):
        soup_tensors([small])
    with pytest.raises(ValueError, match=r"is \(6,.*in .*wide.* but \(4,"):
        soup_tensors([small, wide])
    deep = save_weights(Attn1D2D(scale=2, features=4, stages=2), tmp_path / "deep.safetensors",
                        config={"scale": 2, "features": 4, "stages": 2})
    with pytest.raises(ValueError, match="holds other tensors"):
        soup_tensors([small, deep])
    with pytest.raises(ValueError, match="do not fit"):
        write_soup(tmp_path / "out.safetensors", [small, small], like=wide)


def test_the_command_line_refuses_to_overwrite_and_reports_in_one_line(tmp_path, capsys):
    sources = [str(save_weights(network(s), tmp_path / f"{s}.safetensors", config=CONFIG)) for s in (0, 1)]
    out = tmp_path / "soup.safetensors"
    assert main([str(out), *sources, "--like", sources[0]]) == 0
    before = out.read_bytes()
    assert main([str(out), *sources[::-1], "--like", sources[0]]) == 2
    assert out.read_bytes() == before
    error = capsys.readouterr().err.strip()
    assert error.startswith("volsr.train.soup: error:") and "exists" in error and "\n" not in error
    assert main([str(out), sources[0], str(tmp_path / "missing.safetensors"), "--like", sources[0],
                 "--overwrite"]) == 2
    assert out.read_bytes() == before
