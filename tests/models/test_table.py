"""The model table (volsr/models/table.py): one registration path, shipped weights read lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from volsr.models import registry
from volsr.models import weights as weights_module
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.table import ARCHITECTURES, register_network
from volsr.models.weights import save_weights


def test_importing_volsr_reads_no_weights_and_the_first_lookup_registers_them():
    code = ("import volsr, volsr.models\n"
            "from volsr.models import registry\n"
            "before = sorted(registry._REGISTRY)\n"
            "card = registry.get_card('meta_srgan.t1')\n"
            "print(before, card.weights, card.calibration, len(registry._REGISTRY))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:5] == ["['bicubic',", "'cubic',", "'lanczos',", "'linear',", "'nearest']"]  # baselines only
    assert out[5:7] == ["meta_srgan_t1.safetensors", "meta_srgan_t1.json"] and int(out[7]) > 5


def test_one_path_registers_every_architecture_with_its_facts(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    config = {"scale": 2, "features": 2, "stages": 1}
    save_weights(Attn1D2D(**config), tmp_path / "attn1d2d_t.safetensors", config=config)
    card = register_network("attn1d2d.t", "attn1d2d", weights="attn1d2d_t.safetensors", config=config,
                            description="t", scale_range=(1.0, 6.0), input_peak=0.5)  # fmt: skip
    # the network fixes its own range; the architecture gives grid, scales, modality, ensemble
    assert (card.scale_range, card.scales, card.grid, card.modality) == ((2.0, 2.0), "integer", "lr", "hsi")
    assert (card.input_scaling, card.input_peak, card.self_ensemble) == ("max", 0.5, True)
    assert registry.create_model("attn1d2d.t").scale == 2
    with pytest.raises(KeyError):
        register_network("x.t", "unet", weights="attn1d2d_t.safetensors", config=config, description="")
    assert set(ARCHITECTURES) == {"meta_srgan", "mdcsrn", "attn1d2d"}
