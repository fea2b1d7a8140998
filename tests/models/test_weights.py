"""Weights on disk: safetensors + JSON round trip, strict loading, and refusal of unknown config."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from volsr.models import weights as weights_module
from volsr.models.mdcsrn import MDCSRN
from volsr.models.weights import (
    load_module,
    load_weights,
    read_config,
    save_weights,
    shipped_path,
    shipped_weights,
)

CONFIG = {"blocks": 2, "units": 1, "growth": 4, "base": 8, "norm": "batch"}


def _trained(seed: int) -> MDCSRN:
    net = MDCSRN(**CONFIG)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*net.parameters(), net.blocks[0].units[0][0].running_mean]:
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return net.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    net = _trained(0)
    path = save_weights(net, tmp_path / "net.safetensors", config=CONFIG, metadata={"step": 3})
    sidecar = json.loads((tmp_path / "net.json").read_text())
    assert sidecar == {"config": CONFIG, "card": {}, "metadata": {"step": 3}}
    loaded = load_module(MDCSRN, path).eval()
    x = torch.rand(1, 1, 6, 5, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    # Buffers (batch-norm running statistics) travel too.
    assert torch.equal(loaded.blocks[0].units[0][0].running_mean,
                       net.blocks[0].units[0][0].running_mean)
    # The file is plain safetensors: no pickle anywhere.
    assert path.read_bytes()[8:9] == b"{"


def test_unknown_config_keys_and_bad_sidecars_are_refused(tmp_path):
    path = save_weights(_trained(1), tmp_path / "net.safetensors", config=CONFIG)
    sidecar = tmp_path / "net.json"
    sidecar.write_text(json.dumps({"config": {**CONFIG, "__class__": "os.system"}}))
    with pytest.raises(ValueError, match=r"config keys \['__class__'\] .* not parameters of MDCSRN"):
        read_config(path, factory=MDCSRN)
    sidecar.write_text(json.dumps({"config": {"blocks": {"nested": 1}}}))
    with pytest.raises(ValueError, match=r"config\['blocks'\] .* JSON scalar"):
        read_config(path, factory=MDCSRN)
    sidecar.write_text(json.dumps({"config": CONFIG, "code": "print(1)"}))
    with pytest.raises(ValueError, match=r"unknown sections \['code'\]"):
        read_config(path, factory=MDCSRN)
    sidecar.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object with a 'config' object"):
        load_module(MDCSRN, path)
    sidecar.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_config(path, factory=MDCSRN)
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        save_weights(nn.Linear(1, 1), tmp_path / "x.pt", config={})


def test_weights_must_fit_the_module(tmp_path):
    path = save_weights(_trained(2), tmp_path / "net.safetensors", config=CONFIG)
    with pytest.raises(ValueError, match="do not fit MDCSRN"):
        load_weights(MDCSRN(**{**CONFIG, "units": 2}), path)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_weights(MDCSRN(**CONFIG), tmp_path / "absent.safetensors")


def test_shipped_weights_are_found_with_their_card(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", tmp_path)
    assert shipped_weights(prefix="mdcsrn", factory=MDCSRN) == []
    card = {"name": "mdcsrn.t1", "description": "T1 thick slices", "scale_range": [1, 5]}
    save_weights(_trained(3), tmp_path / "mdcsrn_t1.safetensors", config=CONFIG, card=card)
    save_weights(_trained(3), tmp_path / "other.safetensors", config=CONFIG, card=card)
    (found,) = shipped_weights(prefix="mdcsrn", factory=MDCSRN)
    assert (found.name, found.file, found.config, found.scale_range) == (
        "mdcsrn.t1", "mdcsrn_t1.safetensors", CONFIG, (1.0, 5.0)
    )
    assert shipped_path("mdcsrn_t1.safetensors") == tmp_path / "mdcsrn_t1.safetensors"
    with pytest.raises(ValueError, match="bare .safetensors file name"):
        shipped_path("../mdcsrn_t1.safetensors")
    save_weights(_trained(3), tmp_path / "mdcsrn_bad.safetensors", config=CONFIG)
    with pytest.raises(ValueError, match="'card' needs name, description and scale_range"):
        shipped_weights(prefix="mdcsrn", factory=MDCSRN)


def test_a_sidecar_asking_for_an_absurd_network_is_refused_before_allocating(tmp_path):
    import psutil

    path = save_weights(nn.Linear(3, 2), tmp_path / "lin.safetensors", config={"in_features": 3, "out_features": 2})
    sidecar = path.with_suffix(".json")
    document = json.loads(sidecar.read_text())
    document["config"]["in_features"] = 10**12  # 8 TB of float32 weights if built
    sidecar.write_text(json.dumps(document))
    rss = psutil.Process().memory_info().rss
    with pytest.raises(ValueError, match=r"config\['in_features'\] = 1000000000000 .* larger than the 8 weights"):
        load_module(nn.Linear, path)
    document["config"]["in_features"] = 4  # plausible, but not these tensors
    sidecar.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"does not describe the tensors .*weight: \(2, 4\) built, \(2, 3\) stored"):
        load_module(nn.Linear, path)
    assert psutil.Process().memory_info().rss - rss < 2**28
