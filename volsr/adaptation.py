"""What ``volsr upsample --adapt`` does around the fine-tune (:func:`volsr.train.adapt.adapt`).

The adapted weights a run uses are kept beside its output (``.NAME.volsr-adapted.safetensors``
with a JSON sidecar naming their lineage: base model and its weights' SHA-256, the input's
fingerprint, the acquisition model, factors and options) until the run has delivered, so that
``--resume`` after a kill reuses them and finishes bit-identical to an uninterrupted run.
``--save-adapted PATH`` writes them as an ordinary weights file (``--model PATH``) for the
other scans of one protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from volsr import io
from volsr.acquisition import AcquisitionModel
from volsr.engine.manifest import input_fingerprint, model_identity
from volsr.engine.options import EngineOptions
from volsr.engine.runstate import note
from volsr.errors import TooSmallForPairsError
from volsr.models.files import is_model_file, register_model_file
from volsr.models.registry import ModelCard, create_model, get_card
from volsr.models.weights import load_weights, read_sidecar, save_weights, weights_path
from volsr.train.adapt import DEFAULT_STEPS, AdaptOptions, adapt, adapted_card
from volsr.train.adapt_cube import cube_options
from volsr.volume import Volume

__all__ = ["adapted_network", "adapted_for_run", "adapted_weights_path", "discard_adapted_weights"]

_ADAPTED_SUFFIX = ".volsr-adapted.safetensors"


@contextlib.contextmanager
def adapted_network(args: argparse.Namespace, volume: Volume, model: str, factors: Sequence[float],
                    acquisition: AcquisitionModel | None, engine: EngineOptions) -> Iterator[str | nn.Module]:
    """``volsr upsample``'s network: ``model`` itself, or with ``--adapt`` fine-tuned on the input.

    The adapted weights kept for ``--resume`` are removed when the block (the run) succeeds.

    Parameters
    ----------
    args : argparse.Namespace
        ``adapt``, ``adapt_steps``, ``seed``, ``save_adapted`` and the run's ``input``,
        ``output``, ``resume``, ``overwrite``.
    volume : Volume
        The opened input.
    model : str
        The base model (registry name or weights file).
    factors : (3,) sequence of float
        The run's factors ((2,) for a cube).
    acquisition : AcquisitionModel or None
        The input's acquisition model (None for a cube).
    engine : EngineOptions
        The run's engine options (the fine-tune uses their device, quiet and allow_external).

    Yields
    ------
    str or torch.nn.Module
        What the engine runs.

    Raises
    ------
    ValueError
        If an adaptation option is given without ``--adapt``, or from :func:`adapted_for_run`.
    """
    if not args.adapt:
        if args.adapt_steps is not None or args.save_adapted is not None:
            raise ValueError("--adapt-steps and --save-adapted go with --adapt")
        yield model
        return
    if _card(model).modality == "hsi":  # cubes have their own defaults (volsr.train.adapt_cube)
        options = cube_options(steps=args.adapt_steps, seed=args.seed)
    else:
        options = AdaptOptions(steps=DEFAULT_STEPS if args.adapt_steps is None else args.adapt_steps, seed=args.seed)
    yield adapted_for_run(volume, args.input, model, factors=factors, acquisition=acquisition, output=args.output,
                          resume=args.resume, overwrite=args.overwrite, options=options, save=args.save_adapted,
                          engine=engine)  # fmt: skip
    discard_adapted_weights(args.output)


def adapted_weights_path(output: str | os.PathLike[str]) -> Path:
    """Where a run of ``output`` keeps its adapted weights until it delivers.

    Parameters
    ----------
    output : str or path
        The run's output spec (``out.nii.gz``, ``out.h5:/sr``, ...).

    Returns
    -------
    Path
        ``.NAME.volsr-adapted.safetensors`` beside the output file (its JSON sidecar beside it).

    Examples
    --------
    >>> adapted_weights_path("/data/sr.h5:/x").name
    '.sr.h5.volsr-adapted.safetensors'
    """
    _, path, _ = io.format_for(output)
    return path.with_name(f".{path.name}{_ADAPTED_SUFFIX}")


def discard_adapted_weights(output: str | os.PathLike[str]) -> None:
    """Remove the adapted weights a delivered run of ``output`` kept (no error if none).

    Parameters
    ----------
    output : str or path
        The run's output spec.

    Returns
    -------
    None

    Raises
    ------
    OSError
        If a file exists but cannot be removed.
    """
    path = adapted_weights_path(output)
    for file in (path, path.with_suffix(".json")):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


def adapted_for_run(
    volume: Volume,
    spec: str,
    model: str,
    *,
    factors: Sequence[float],
    acquisition: AcquisitionModel | None,
    output: str,
    resume: bool,
    overwrite: bool,
    options: AdaptOptions,
    save: str | None = None,
    engine: EngineOptions | None = None,
) -> nn.Module:
    """The network a ``--adapt`` run uses: adapted now, or reused from an interrupted run.

    Parameters
    ----------
    volume : Volume
        The opened input.
    spec : str
        Where it was opened from (its fingerprint is part of the lineage).
    model : str
        Registry name or ``PATH.safetensors`` of the base network.
    factors : (3,) sequence of float
        The run's factors ((2,) for a cube).
    acquisition : AcquisitionModel or None
        The input's acquisition model (None: from its spacing).
    output : str
        The run's output spec.
    resume : bool
        Reuse the weights kept by an interrupted run of ``output`` when their lineage matches.
    overwrite : bool
        The run may replace ``output`` (checked here, before minutes of fine-tuning).
    options : AdaptOptions
        Steps, seed, ...
    save : str, optional
        Also write the weights to this ``.safetensors`` path (+ sidecar) for ``--model PATH``.
    engine : EngineOptions, optional
        The run's: its ``device`` runs the fine-tune, ``quiet`` drops the progress bar and
        log lines, ``allow_external`` is as given to :func:`volsr.io.load` (for the input's
        fingerprint). Default: :class:`~volsr.engine.EngineOptions`'s defaults.

    Returns
    -------
    torch.nn.Module
        With the base's card and an ``adaptation`` report (a dict of facts when reused).

    Raises
    ------
    ValueError
        From :func:`volsr.train.adapt.adapt` (not a network, factors; an input too small for
        pairs is not an error: the unadapted network is returned, saying so), or if
        ``save`` does not end in ``.safetensors`` or the base has no weights file to describe it.
    """
    if save is not None and not str(save).endswith(".safetensors"):
        raise ValueError(f"--save-adapted must name a .safetensors file, got {save}")
    engine = EngineOptions() if engine is None else engine
    device, quiet, allow_external = engine.device, engine.quiet, engine.allow_external
    io.check_output(output, overwrite=overwrite or resume, inputs=[spec], allow_external=allow_external)
    base = create_model(register_model_file(model).name if is_model_file(model) else model)
    lineage = {
        "base_model": base.card.name, "base_weights_sha256": model_identity(base)["weights_sha256"],
        "input": input_fingerprint(volume, spec, allow_external=allow_external),
        "acquisition": None if acquisition is None else acquisition.to_json(),
        "factors": [float(f) for f in factors], "options": dataclasses.asdict(options),
    }  # fmt: skip
    kept = adapted_weights_path(output)
    net = _reused(base, kept, lineage) if resume else None
    if net is not None:
        note(f"adapt: reusing the weights adapted by the interrupted run ({kept.name})", quiet)
    else:
        try:
            net = adapt(volume, base, factors=factors, acquisition=acquisition, options=options, device=device,
                        progress=not quiet)  # fmt: skip
        except TooSmallForPairsError as error:  # not a mistake of the user's: the input has too little to learn from
            note(f"adapt: {error}: using the unadapted network", quiet)
            if save is not None:
                note(f"adapt: nothing adapted, so {save} was not written", quiet)
            return base
        note(net.adaptation.describe(), quiet)
        _write(net, kept, base, lineage)
    if save is not None:
        _write(net, Path(save), base, lineage)
        note(f"adapt: wrote {save} (use it with --model {save})", quiet)
    return net


def _card(model: str) -> ModelCard:
    return get_card(register_model_file(model).name if is_model_file(model) else model)


def _reused(base: nn.Module, path: Path, lineage: dict[str, Any]) -> nn.Module | None:
    try:
        record = read_sidecar(path)
    except (FileNotFoundError, ValueError):
        return None
    if record.get("metadata", {}).get("lineage") != _plain(lineage):
        return None
    net = load_weights(base, path)
    net.adaptation = record["metadata"].get("adaptation")
    net.card = adapted_card(base.card, bool(net.adaptation and net.adaptation.get("kept")))
    return net.eval()


def _write(net: nn.Module, path: Path, base: nn.Module, lineage: dict[str, Any]) -> None:
    """Weights + sidecar; the sidecar (the record that the pair is whole) goes last."""
    source = base.card.name[len("file:"):] if base.card.name.startswith("file:") else base.card.weights
    if source is None:
        raise ValueError(f"{base.card.name} has no weights file whose config could describe the adapted weights")
    described = read_sidecar(weights_path(source))
    arch = str(described.get("card", {}).get("name", base.card.name)).split(".")[0]
    report = net.adaptation.to_json() if hasattr(net.adaptation, "to_json") else net.adaptation
    with contextlib.suppress(FileNotFoundError):
        path.with_suffix(".json").unlink()
    save_weights(net, path, config=described["config"],
                 card={"name": f"{arch}.adapted", "scale_range": list(base.card.scale_range),
                       "description": f"{base.card.name} adapted to one scan by volsr upsample --adapt",
                       **({"input_peak": base.card.input_peak} if base.card.input_peak != 1.0 else {})},
                 metadata={"lineage": _plain(lineage), "adaptation": report})  # fmt: skip


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists), so a stored lineage compares equal."""
    import json

    return json.loads(json.dumps(value))
