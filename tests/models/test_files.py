"""Tests of ``--model PATH``: weights files outside the package run like registered models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from volsr import io
from volsr.cli import main
from volsr.engine import upsample
from volsr.models import registry
from volsr.models.files import register_model_file
from volsr.models.mdcsrn import MDCSRN, MDCSRNUpsampler
from volsr.models.registry import SHIPPED_OUTPUT_FLOOR, ModelCard
from volsr.models.weights import save_weights
from volsr.volume import Volume

SMALL = {"blocks": 1, "units": 2, "growth": 4, "base": 4}


@pytest.fixture
def weights_file(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # registrations stay here
    net = MDCSRN(**SMALL)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    card = {"name": "mdcsrn.mine", "description": "my run", "scale_range": [1.0, 4.0]}
    (tmp_path / "w").mkdir()
    path = save_weights(net, tmp_path / "w" / "mdcsrn_mine.safetensors", config=SMALL, card=card)
    return net, path


def test_cli_model_path_equals_the_same_network_in_memory(weights_file, tmp_path):
    net, path = weights_file
    data = np.random.default_rng(0).random((12, 10, 5)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    io.save(Volume(data, affine, ("i", "j", "k")), tmp_path / "lr.nii.gz")
    out = tmp_path / "sr.nii.gz"
    assert main(["upsample", str(tmp_path / "lr.nii.gz"), str(out), "--scale", "1,1,4",
                 "--model", str(path), "--quiet"]) == 0  # fmt: skip
    model = MDCSRNUpsampler(net).eval()
    model.card = ModelCard(name="mine", kind="network", grid="hr", halo=model.halo, scales="real",
                           scale_range=(1.0, 4.0), modality="mri", description="",
                           input_scaling="p99.9", output_floor=SHIPPED_OUTPUT_FLOOR)  # fmt: skip
    expected = upsample(Volume(data, affine, ("i", "j", "k")), scale=(1, 1, 4), model=model)
    np.testing.assert_allclose(io.load(out).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    card = register_model_file(path)  # registered once, under its absolute path
    assert card.name == f"file:{path.resolve()}" and card.scale_range == (1.0, 4.0)


def test_cli_model_path_errors_are_one_line(weights_file, tmp_path, capsys):
    _, path = weights_file
    io.save(Volume(np.ones((6, 6, 3), np.float32), np.eye(4), ("i", "j", "k")), tmp_path / "lr.nii.gz")
    sidecar = path.with_suffix(".json")
    document = json.loads(sidecar.read_text())
    document["card"]["name"] = "unet.mine"
    other = tmp_path / "w" / "unet_mine.safetensors"
    other.write_bytes(path.read_bytes())
    other.with_suffix(".json").write_text(json.dumps(document))
    cases = {str(tmp_path / "absent.safetensors"): "no weights file",
             str(other): "names no known architecture",
             str(path): "supports per-axis scales in [1.0, 4.0]"}  # x8: beyond the card
    for model, message in cases.items():
        code = main(["upsample", str(tmp_path / "lr.nii.gz"), str(tmp_path / "o.nii.gz"),
                     "--scale", "1,1,8", "--model", model, "--quiet"])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o.nii.gz").exists()
