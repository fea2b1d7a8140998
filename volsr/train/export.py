"""Trained MRI weights out of a run: ship a checkpoint mid-run, or load any run's weights.

``volsr export-weights RUN_DIR NAME [--best|--last]`` calls :func:`export_checkpoint`: the
network of a trainer checkpoint (its EMA weights when the run keeps them) is written in the
format of :func:`volsr.train.build.export_weights` (the end-of-run export) into the package's
``volsr/models/weights``, where it registers as ``<arch>.<tag>`` (``mdcsrn`` or
``meta_srgan``), with a Markdown model card
in ``volsr/models/cards``. :func:`load_trained_model` reads either kind of file (an export or a
trainer checkpoint) into an engine-ready model without registering it (benchmarks).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import nn

from volsr.models.mdcsrn import MDCSRN, MDCSRNUpsampler
from volsr.models.meta_srgan import MetaSRGAN
from volsr.models.registry import ModelCard
from volsr.models.weights import CARDS_DIR, WEIGHTS_DIR, load_module
from volsr.train.build import _meta_options, _network_options, _save_network
from volsr.train.checkpoint import list_checkpoints, load_checkpoint
from volsr.train.config import TrainConfig, config_from_dict

__all__ = ["checkpoint_network", "export_checkpoint", "load_trained_model"]


def checkpoint_network(path: str | Path) -> tuple[MDCSRN | MetaSRGAN, TrainConfig, dict[str, Any]]:
    """The generator network of a ``volsr train`` checkpoint (EMA weights when kept).

    Parameters
    ----------
    path : str or Path
        The checkpoint's ``.json`` or ``.safetensors`` file.

    Returns
    -------
    network : MDCSRN or MetaSRGAN
        The run's architecture, with the checkpoint's EMA weights, else its raw weights (CPU).
    config : TrainConfig
        The run's configuration, as recorded in the checkpoint.
    meta : dict
        The checkpoint's JSON metadata, with ``"ema"`` (bool) added.

    Raises
    ------
    FileNotFoundError
        If the checkpoint is incomplete.
    ValueError
        If it records no training config (not a ``volsr train`` checkpoint).

    Examples
    --------
    >>> checkpoint_network("missing.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint missing.json not found...
    """
    tensors, meta = load_checkpoint(path)
    if "config" not in meta:
        raise ValueError(f"{path} records no training config: not a volsr train checkpoint")
    config = config_from_dict(meta["config"])
    meta["ema"] = any(key.startswith("ema.") for key in tensors)
    prefix = "ema." if meta["ema"] else "model."
    network: nn.Module
    if config.model.arch == "meta_srgan":
        network = MetaSRGAN(**_meta_options(config.model))
    else:  # the trainer holds MDCSRNUpsampler(network)
        network, prefix = MDCSRN(**_network_options(config.model)), prefix + "network."
    network.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                             if k.startswith(prefix)})
    return network, config, meta


def _checkpoint_file(run_dir: Path, which: str) -> Path:
    folder = run_dir / "checkpoints"
    if which == "best":
        if not (folder / "best.json").is_file():
            raise FileNotFoundError(f"no best checkpoint in {folder} (it is written at the "
                                    f"first validation; use --last for the newest one)")
        return folder / "best.json"
    found = list_checkpoints(folder)
    if not found:
        raise FileNotFoundError(f"no periodic checkpoint (step_*.json) in {folder}")
    return found[-1]


def export_checkpoint(
    run_dir: str | Path,
    name: str,
    *,
    which: str = "best",
    weights_dir: str | Path = WEIGHTS_DIR,
    cards_dir: str | Path = CARDS_DIR,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Ship a trainer checkpoint's network (EMA weights when kept) with its model card.

    Usable while the run goes on: checkpoints are written atomically. Writes
    ``<weights_dir>/<name>.safetensors`` + ``.json`` (the end-of-run export's format,
    auto-registered as ``<arch>.<tag>`` when ``weights_dir`` is the shipped folder) and
    ``<cards_dir>/<arch>.<tag>.md`` (:func:`volsr.train.model_card.write_model_card`: a card
    edited by hand since it was rendered is kept, with a warning).

    Parameters
    ----------
    run_dir : str or Path
        A run folder (``run.output_dir``) holding ``checkpoints/``.
    name : str
        ``<arch>_<tag>`` (``mdcsrn`` or ``meta_srgan`` as the run's architecture; letters,
        digits, ``_``, ``-``): the file stem.
    which : {"best", "last"}
        ``checkpoints/best`` (highest validation score) or the newest periodic checkpoint.
    weights_dir, cards_dir : str or Path
        Destinations (default: the package's ``volsr/models/weights`` and ``cards``).
    overwrite : bool
        Replace existing weights of that name.

    Returns
    -------
    weights : Path
        The safetensors file.
    card : Path
        The Markdown model card.

    Raises
    ------
    ValueError
        If ``which`` or ``name`` is invalid, or ``name`` does not start with the run's
        architecture.
    FileNotFoundError
        If the run has no such checkpoint.
    OutputExistsError
        If the weights exist and ``overwrite`` is false.

    Examples
    --------
    >>> export_checkpoint("runs/x", "t1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: name must be <arch>_<tag> ... got 't1'
    """
    from volsr.errors import OutputExistsError
    from volsr.train.model_card import write_model_card

    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    if not re.fullmatch(r"(mdcsrn|meta_srgan)_[A-Za-z0-9_-]+", name):
        raise ValueError(f"name must be <arch>_<tag> (mdcsrn or meta_srgan) with letters, digits, "
                         f"'_' or '-' (so that it registers as <arch>.<tag>), got {name!r}")
    target = Path(weights_dir) / f"{name}.safetensors"
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists (pass overwrite / --overwrite to replace it)")
    source = _checkpoint_file(Path(run_dir), which)
    network, config, meta = checkpoint_network(source)
    if not name.startswith(config.model.arch + "_"):
        raise ValueError(f"{source} is a {config.model.arch!r} run: name it "
                         f"{config.model.arch}_<tag>, got {name!r}")
    metadata = {"step": meta["step"], "ema": meta["ema"], "checkpoint": source.name,
                "datasets": meta.get("datasets", []),
                "validation": meta["history"][-1] if meta.get("history") else None,
                "training_config": meta["config"]}
    path = _save_network(network, config, target, metadata=metadata)
    return path, write_model_card(path, Path(cards_dir))


def load_trained_model(path: str | Path) -> MDCSRNUpsampler | MetaSRGAN:
    """An engine-ready MRI network from exported weights or a trainer checkpoint (not registered).

    Parameters
    ----------
    path : str or Path
        ``NAME.safetensors`` with its ``NAME.json`` sidecar (an export), or a checkpoint's
        ``step_*.safetensors`` / ``best.safetensors`` (or ``.json``).

    Returns
    -------
    MDCSRNUpsampler or MetaSRGAN
        In eval mode, with a ``card`` (grid ``"hr"`` or ``"lr"``, input scaling ``"p99.9"``,
        the trained factor range) named after the file.

    Raises
    ------
    FileNotFoundError
        If the file or its JSON partner is missing.
    ValueError
        If the JSON is neither a weights sidecar nor a checkpoint's metadata.

    Examples
    --------
    >>> load_trained_model("missing.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...missing.json...
    """
    path = Path(path)
    partner = path.with_suffix(".json")
    if not partner.is_file():
        raise FileNotFoundError(f"no JSON partner {partner} for {path}")
    document = json.loads(partner.read_text(encoding="utf-8"))
    if document.get("format") == "volsr-checkpoint":
        network, config, meta = checkpoint_network(path)
        label = f"{path.parent.parent.name}@{meta['step']}"
        scale_range = config.model.scale_range
    else:
        card = document.get("card", {})
        meta = str(card.get("name", "")).startswith("meta_srgan")
        network = load_module(MetaSRGAN if meta else MDCSRN, path.with_suffix(".safetensors"))
        label = path.stem
        scale_range = tuple(card.get("scale_range", (1.0, 5.0)))
    model = network.eval() if isinstance(network, MetaSRGAN) else MDCSRNUpsampler(network).eval()
    grid = "lr" if isinstance(network, MetaSRGAN) else "hr"
    model.card = ModelCard(name=label, kind="network", grid=grid, halo=model.halo,
                           scales="real", scale_range=(float(scale_range[0]),
                                                       float(scale_range[1])),
                           modality="mri", description=str(path), input_scaling="p99.9")
    return model
