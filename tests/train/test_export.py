"""Tests of shipping a checkpoint mid-run (``volsr export-weights``) and of its model card.

A real tiny run on the shared data writes checkpoints; the export must rebuild exactly the
network the trainer validated (EMA weights), register like shipped weights, and its card must
list exactly the training volumes of the config.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from volsr.cli import main
from volsr.geometry import output_coordinates
from volsr.models.mdcsrn import MDCSRN, MDCSRNUpsampler
from volsr.models.weights import load_module, shipped_weights
from volsr.train.checkpoint import load_checkpoint
from volsr.train.config import load_config
from volsr.train.export import export_checkpoint, load_trained_model
from volsr.train.model_card import render_model_card, write_model_card
from volsr.train.run import run_training

DATA = Path(os.environ.get("VOLSR_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "mri").is_dir(), reason=f"shared data absent: {DATA}")
VOLUMES = ["mri/templates/MNI152_T1_brain_1mm.nii.gz", "mri/MR_Gd.nii.gz"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Three steps of a tiny run: periodic checkpoints at 1, 2, 3 (keep 2) and ``best``."""
    folder = tmp_path_factory.mktemp("export")
    config = {
        "run": {"name": "mdcsrn_tiny", "output_dir": str(folder / "run"), "seed": 3,
                "checkpoint_every": 1, "keep_last": 2, "log_every": 1, "progress": False},
        "model": {"blocks": 1, "units": 2, "growth": 4, "base": 4, "scale_range": [1.0, 4.0]},
        "data": {"volumes": VOLUMES, "patch": [12, 12, 12], "batch_size": 2,
                 "factor_range": [2, 4], "snr_db_range": [20, 30], "zoom_range": [1.0, 1.25]},
        "optim": {"steps": 3, "lr": 1e-2, "warmup_steps": 0, "ema_decay": 0.5},
        "validation": {"volumes": ["icbm152"], "every": 2, "crop": [24, 24, 24]},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_training(load_config(path), device="cpu")
    return folder / "run"


def _apply(network: MDCSRN) -> torch.Tensor:
    x = torch.rand(1, 1, 10, 10, 5, generator=torch.Generator().manual_seed(0))
    grid = (np.arange(10.0), np.arange(10.0), output_coordinates(5, 10))
    with torch.no_grad():
        return MDCSRNUpsampler(network).eval()(x, grid)


@needs_data
@pytest.mark.parametrize("which", ["best", "last"])
def test_export_rebuilds_the_checkpoint_ema_network(run_dir, tmp_path, which):
    weights, card = export_checkpoint(run_dir, "mdcsrn_tiny", which=which,
                                      weights_dir=tmp_path / "w", cards_dir=tmp_path / "c")
    source = run_dir / "checkpoints" / ("best.json" if which == "best" else "step_000000003.json")
    tensors, meta = load_checkpoint(source)
    expected = MDCSRN(blocks=1, units=2, growth=4, base=4)
    expected.load_state_dict({k[len("ema.network."):]: v for k, v in tensors.items()
                              if k.startswith("ema.network.")})
    exported = load_module(MDCSRN, weights)
    assert torch.equal(_apply(exported), _apply(expected))
    raw = {k[len("model.network."):]: v for k, v in tensors.items()
           if k.startswith("model.network.")}
    assert not all(torch.equal(v, exported.state_dict()[k]) for k, v in raw.items())  # EMA kept
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert sidecar["metadata"]["step"] == meta["step"]
    if which == "best":  # written right after the validation that made it best
        assert meta["step"] == meta["best"]["step"] == sidecar["metadata"]["validation"]["step"]
    else:
        assert meta["step"] == 3
    assert sidecar["metadata"]["ema"] is True and sidecar["card"]["name"] == "mdcsrn.tiny"
    assert sidecar["card"]["scale_range"] == [1.0, 4.0]
    assert card == tmp_path / "c" / "mdcsrn.tiny.md"


@needs_data
def test_cli_export_ships_a_registrable_model_with_card(run_dir, tmp_path, capsys, monkeypatch):
    args = ["export-weights", str(run_dir), "mdcsrn_tiny", "--last",
            "--weights-dir", str(tmp_path / "w"), "--cards-dir", str(tmp_path / "c")]
    assert main(args) == 0
    paths = json.loads(capsys.readouterr().out)
    assert main(args) == 2  # exists
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    monkeypatch.setattr("volsr.models.weights.WEIGHTS_DIR", tmp_path / "w")
    (found,) = shipped_weights(prefix="mdcsrn", factory=MDCSRN)
    assert (found.name, found.file, found.scale_range) == ("mdcsrn.tiny", "mdcsrn_tiny.safetensors",
                                                           (1.0, 4.0))
    text = Path(paths["card"]).read_text()
    for volume in VOLUMES:  # exactly the training volumes of the config
        assert f"`{volume}`" in text
    assert "Exactly the 2 volumes" in text and "SNR 20-30 dB" in text
    zooms = [nib.load(DATA / v).header.get_zooms()[:3] for v in VOLUMES]
    low, high = min(map(min, zooms)), max(map(max, zooms)) * 1.25  # zoom_range [1, 1.25]
    assert f"HR (in-plane) spacing seen {low:.2f}-{high:.2f} mm" in text
    assert f"slice spacing seen {2 * low:.2f}-{4 * high:.2f} mm" in text  # factors 2-4
    assert "| icbm152 |" in text and "per-axis factors 1-4" in text


@needs_data
def test_export_errors(run_dir, tmp_path):
    with pytest.raises(ValueError, match="name must be <arch>_<tag>"):
        export_checkpoint(run_dir, "../evil", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="is a 'mdcsrn' run: name it mdcsrn_<tag>"):
        export_checkpoint(run_dir, "meta_srgan_x", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="which must be 'best' or 'last'"):
        export_checkpoint(run_dir, "mdcsrn_x", which="first", weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no periodic checkpoint"):
        export_checkpoint(tmp_path, "mdcsrn_x", which="last", weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="use --last"):
        export_checkpoint(tmp_path, "mdcsrn_x", weights_dir=tmp_path)


@needs_data
def test_meta_srgan_checkpoint_exports_and_loads_as_an_lr_grid_model(tmp_path):
    from volsr.models.meta_srgan import MetaSRGAN

    config = {
        "run": {"name": "meta_srgan_tiny", "output_dir": str(tmp_path / "run"), "seed": 2,
                "checkpoint_every": 1, "keep_last": 1, "progress": False},
        "model": {"arch": "meta_srgan", "blocks": 1, "units": 1, "growth": 2, "base": 2, "hidden": 4,
                  "scale_range": [1.0, 4.0]},
        "data": {"volumes": VOLUMES[:1], "patch": [12, 12, 12], "batch_size": 1, "factor_range": [2, 3]},
        "optim": {"steps": 2, "lr": 1e-2, "warmup_steps": 0, "ema_decay": 0.5},
        "validation": None,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_training(load_config(path), device="cpu")
    weights, card = export_checkpoint(tmp_path / "run", "meta_srgan_tiny", which="last",
                                      weights_dir=tmp_path / "w", cards_dir=tmp_path / "c")
    tensors, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_000000002.json")
    expected = MetaSRGAN(base=2, blocks=1, layers=1, growth=2, hidden=4).eval()
    expected.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
    x = torch.rand(1, 1, 6, 6, 4, generator=torch.Generator().manual_seed(1))
    grid = (np.arange(6.0), np.arange(6.0), output_coordinates(4, 10))
    for loaded in (load_trained_model(weights), load_trained_model(tmp_path / "run" / "checkpoints" /
                                                                    "step_000000002.safetensors")):
        assert loaded.card.grid == "lr" and loaded.card.scale_range == (1.0, 4.0)
        with torch.no_grad():
            assert torch.equal(loaded(x, grid), expected(x, grid))
    assert card.name == "meta_srgan.tiny.md" and "Meta-SRGAN" in card.read_text()


#: A training config whose volumes do not exist and that records no validation.
_NO_DATA_CONFIG = {"run": {"name": "mdcsrn_a"}, "optim": {"steps": 10, "ema_decay": None},
                   "model": {}, "gan": None, "validation": None,
                   "data": {"volumes": ["/nowhere/*.nii"], "factor_range": [2, 5],
                            "slice_axes": [2], "profiles": ["box"],
                            "thickness_ratio_range": [1, 1], "snr_db_range": None,
                            "patch": [8, 8, 8], "batch_size": 1, "p_foreground": 0.5}}


def test_card_without_validation_or_data_says_so():
    config = _NO_DATA_CONFIG
    text = render_model_card({"card": {"name": "mdcsrn.a", "scale_range": [1, 5]},
                              "config": {"blocks": 1},
                              "metadata": {"training_config": config, "step": 10,
                                           "datasets": ["/nowhere/a.nii"]}},
                             file_name="mdcsrn_a.safetensors")
    assert "voxel sizes: unknown" in text and "No validation was recorded" in text
    assert "Rician noise: none (clean)" in text and "raw weights" in text
    assert text.startswith("# Model card: `mdcsrn.a`")


def test_a_card_edited_by_hand_survives_a_new_export(tmp_path):
    config = _NO_DATA_CONFIG
    weights = tmp_path / "mdcsrn_a.safetensors"

    def export(step: int) -> Path:  # what export_checkpoint writes: the sidecar, then the card
        document = {"card": {"name": "mdcsrn.a", "scale_range": [1, 5]}, "config": {"blocks": 1},
                    "metadata": {"training_config": config, "step": step, "datasets": []}}
        weights.with_suffix(".json").write_text(json.dumps(document))
        return write_model_card(weights, tmp_path / "cards")

    card = export(10)
    first = card.read_text()
    assert first.startswith("# Model card: `mdcsrn.a`") and "sha256" in first.splitlines()[-1]
    assert export(20).read_text() != first  # an untouched rendering follows the new facts
    edited = card.read_text().replace("## Limits", "## Measured by hand\n\n| a | b |\n\n## Limits")
    assert edited != card.read_text()
    card.write_text(edited)
    with pytest.warns(UserWarning, match="kept .*mdcsrn.a.md: written or edited by hand"):
        export(30)
    assert card.read_text() == edited
    card.write_text("# mdcsrn.a\n\nWritten by hand, no stamp.\n")
    with pytest.warns(UserWarning, match="kept"):
        export(40)
    assert card.read_text() == "# mdcsrn.a\n\nWritten by hand, no stamp.\n"


@needs_data
def test_load_trained_model_reads_exports_and_checkpoints_alike(run_dir, tmp_path):
    weights, _ = export_checkpoint(run_dir, "mdcsrn_tiny", which="last",
                                   weights_dir=tmp_path, cards_dir=tmp_path)
    from_export = load_trained_model(weights)
    from_checkpoint = load_trained_model(run_dir / "checkpoints" / "step_000000003.safetensors")
    assert torch.equal(_apply(from_export.network), _apply(from_checkpoint.network))
    assert from_export.card.name == "mdcsrn_tiny" and from_checkpoint.card.name == "run@3"
    assert from_export.card.scale_range == from_checkpoint.card.scale_range == (1.0, 4.0)
    assert from_export.card.input_scaling == "p99.9" and from_export.card.grid == "hr"


def test_models_lists_and_prints_cards(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("volsr.models.weights.CARDS_DIR", tmp_path)
    (tmp_path / "linear.md").write_text("# Model card: `linear`\n")
    assert main(["models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "linear.md" in rows["linear"].split() and str(tmp_path) not in rows["linear"]
    assert " - " in rows["cubic"]
    assert main(["models", "--card", "linear"]) == 0
    assert capsys.readouterr().out == "# Model card: `linear`\n"
    assert main(["models", "--card", "cubic"]) == 2
    assert "has no model card" in capsys.readouterr().err
    assert main(["models", "--card", "cubc"]) == 2
    assert "did you mean cubic" in capsys.readouterr().err


def test_default_model_prefers_a_shipped_mdcsrn_to_cubic(monkeypatch):
    from volsr.models import default_model_name, registry

    # No shipped MRI network but this one (a shipped meta_srgan.* would come first).
    monkeypatch.setattr(registry, "_REGISTRY", {
        k: v for k, v in registry._REGISTRY.items() if not k.startswith(("mdcsrn.", "meta_srgan."))})
    assert default_model_name(spectral=False) == "cubic"
    card = dataclasses.replace(registry.get_card("cubic"), name="mdcsrn.zz", kind="network")
    monkeypatch.setitem(registry._REGISTRY, "mdcsrn.zz", (card, lambda: None))
    assert default_model_name(spectral=False) == "mdcsrn.zz"
    assert default_model_name(spectral=False, scale=(1.0, 1.0, 4.0)) == "mdcsrn.zz"
    # Thick-slice weights are not the default for isotropic upsampling.
    assert not default_model_name(spectral=False, scale=(2.0, 2.0, 2.0)).startswith("mdcsrn")
    # Spectral cubes never get an MRI network (their default depends on shipped HSI weights).
    assert not default_model_name(spectral=True).startswith("mdcsrn")
    assert default_model_name(spectral=True, scale=(2.0, 2.0)) == "attn1d2d.x2"
