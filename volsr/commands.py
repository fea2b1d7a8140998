"""What each ``volsr`` sub-command does, on parsed arguments (the CLI layer, above the library).

Each ``run_NAME(args)`` returns the text to print (or None) and raises a
:class:`volsr.errors.VolsrError` / ``ValueError`` for user errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from volsr import io
from volsr.errors import FormatError, GeometryError, InvalidDataError
from volsr.geometry import per_axis
from volsr.io.outputs import refuse_overlap, write_text_atomic
from volsr.volume import Volume, count_nonfinite

if TYPE_CHECKING:
    from volsr.acquisition import AcquisitionModel

__all__ = [
    "run_info",
    "run_convert",
    "run_degrade",
    "run_upsample",
    "run_bids",
    "run_evaluate",
    "run_models",
    "run_export_weights",
    "run_demo",
    "run_train",
    "describe",
    "checked_finite",
    "take_notes",
]


#: Notes for stderr, held back until the command succeeds: a user error prints one line only.
_NOTES: list[str] = []


def _note(message: str) -> None:
    _NOTES.append(message)


def take_notes() -> list[str]:
    """Notes the last command gathered for stderr, removed from the buffer.

    The CLI prints them after a successful command and drops them after a user error,
    whose message must stay the only line on stderr.

    Returns
    -------
    list of str
        One line each, in the order they were noted.

    Examples
    --------
    >>> _ = take_notes()
    >>> _note("model: cubic")
    >>> take_notes(), take_notes()
    (['model: cubic'], [])
    """
    notes = list(_NOTES)
    _NOTES.clear()
    return notes


def describe(volume: Volume, spec: str) -> dict[str, Any]:
    """Header facts of a volume as a JSON-able dict (reads no voxels).

    Parameters
    ----------
    volume : Volume
        The opened volume.
    spec : str
        The path (and key) it was opened from.

    Returns
    -------
    dict
        ``path, format, shape, axes, dtype, spacing_mm, affine, orientation`` and, for
        spectral cubes, ``bands`` and ``wavelength_range_nm``.

    Examples
    --------
    >>> v = Volume(np.zeros((2, 3, 4), np.uint8), np.eye(4), ("i", "j", "k"))
    >>> describe(v, "x.nii.gz")["orientation"]
    'RAS'
    """
    import nibabel.orientations as orientations

    fmt = io.format_for(spec)[0].name if _known(spec) else "in-memory"
    facts: dict[str, Any] = {
        "path": spec,
        "format": fmt,
        "shape": list(volume.shape),
        "axes": list(volume.axes),
        "dtype": str(volume.dtype),
        "spacing_mm": [round(float(s), 6) for s in volume.spacing],
        "affine": np.round(volume.affine, 6).tolist(),
        "orientation": "".join(orientations.aff2axcodes(volume.affine))[: len(volume.spatial_axes)],
        "size_mb": round(volume.data.nbytes / 1e6, 3),
    }
    if volume.band_axis is not None:
        facts["bands"] = volume.shape[volume.band_axis]
    if volume.wavelengths is not None:
        facts["wavelength_range_nm"] = [float(volume.wavelengths[0]), float(volume.wavelengths[-1])]
    return facts


def _known(spec: str) -> bool:
    try:
        io.format_for(spec)
    except ValueError:
        return False
    return True


def run_info(args: argparse.Namespace) -> str:
    """``volsr info PATH [--json]``."""
    from volsr.engine.store import unfinished_run

    work = unfinished_run(args.path)
    if work is not None:
        if not io.format_for(args.path)[1].exists():
            raise FormatError(f"{args.path} is an unfinished run ({work}): rerun its upsample command "
                              "with --resume to finish it")
        _note(f"an unfinished run to replace it is beside it ({work}): rerun its upsample command "
              "with --resume to finish it")
    facts = describe(io.load(args.path, allow_external=args.allow_external), args.path)
    missing = io.missing_chunks(args.path)
    if missing is not None:
        facts["missing_chunks"] = f"{missing[0]} of {missing[1]}" + (" (read as the fill value)" if missing[0] else "")
    if args.json:
        return json.dumps(facts, indent=2)
    lines = [f"{key:>20}: {value}" for key, value in facts.items() if key != "affine"]
    lines.append(f"{'affine':>20}:")
    lines += [" " * 22 + "  ".join(f"{v:10.4f}" for v in row) for row in facts["affine"]]
    return "\n".join(lines)


def checked_finite(volume: Volume, fill: float | None, *, name: str = "the input",
                   remedy: str = "pass --fill-nonfinite VALUE to replace them") -> Volume:
    """Refuse NaN/Inf voxels, or replace them by ``fill``.

    Parameters
    ----------
    volume : Volume
        Input volume (streamed over once for the count).
    fill : float or None
        Replacement value; None refuses non-finite voxels.
    name : str
        What ``volume`` is, for the error message.
    remedy : str
        What the user can do about non-finite voxels, for the error message.

    Returns
    -------
    Volume
        ``volume`` itself, or a lazy copy with non-finite voxels replaced.

    Raises
    ------
    InvalidDataError
        If non-finite voxels exist and ``fill`` is None; the message gives their count.

    Examples
    --------
    >>> v = Volume(np.array([[[np.nan, 1.0]]]), np.eye(4), ("i", "j", "k"))
    >>> checked_finite(v, 0.0).numpy().tolist()
    [[[0.0, 1.0]]]
    """
    bad = count_nonfinite(volume)
    if bad == 0:
        return volume
    if fill is None:
        raise InvalidDataError(f"{bad} NaN/Inf voxels in {name}; {remedy}")
    _note(f"replaced {bad} NaN/Inf voxels by {fill}")
    return volume.replace(data=da.where(da.isfinite(volume.data), volume.data, fill))


def run_convert(args: argparse.Namespace) -> str:
    """``volsr convert IN OUT [--chunks ...]``."""
    volume = _load_input(args)
    path = io.save(volume, args.output, overwrite=args.overwrite, chunks=args.chunks)
    return f"wrote {path} {volume.shape} {volume.dtype}"


def _load_input(args: argparse.Namespace, *, overwrite: bool | None = None, dtype: Any = None) -> Volume:
    """The checked input of a command that writes ``args.output``: the output is checked first
    (never one of the files the input reads, a writable key and dtype), then NaN/Inf counted."""
    io.check_output(args.output, overwrite=args.overwrite if overwrite is None else overwrite,
                    inputs=[args.input], allow_external=args.allow_external)  # fmt: skip
    volume = io.load(args.input, allow_external=args.allow_external)
    io.writable_dtype(args.output, volume.dtype if dtype is None else dtype)
    return checked_finite(volume, args.fill_nonfinite)


def run_degrade(args: argparse.Namespace) -> str:
    """``volsr degrade IN OUT --factor ... [--method ...]``: :func:`volsr.degrade.degrade`."""
    from volsr.degrade import degrade

    volume = _load_input(args)
    factors = per_axis(args.factor, len(volume.spatial_axes), "--factor", check=">= 1")
    result = degrade(volume, factors=factors, method=args.method, thickness_mm=args.thickness, gap_mm=args.gap,
                     profile=args.profile, snr_db=args.snr, seed=args.seed)  # fmt: skip
    path = io.save(result, args.output, overwrite=args.overwrite)
    spacing = ", ".join(f"{s:.4g}" for s in result.spacing)
    return f"wrote {path}: {result.shape} {result.dtype}, spacing {spacing} mm; {_degradation_said(args)}"


def _degradation_said(args: argparse.Namespace) -> str:
    """Which degradation ``degrade`` applied, in words (for its report line)."""
    said = {
        "slice": f"thick slices, {args.profile} profile" + (
            f", thickness {args.thickness:g} mm" if args.thickness is not None else ", thickness = slice spacing"
        ) + f", gap {args.gap:g} mm",
        "kspace": "k-space truncation (the central 1/factor of the frequencies, magnitude)",
        "gaussian": "Gaussian blur + decimation",
        "bicubic": "antialiased bicubic (MATLAB imresize)",
    }[args.method]
    if args.snr is not None:
        said += f"; Rician noise at SNR {args.snr:g} dB (seed {args.seed})"
    return said


def _rounded_spacing(volume: Volume, target: tuple[float, ...], factors: tuple[float, ...]) -> list[str]:
    """Lines saying where a whole number of voxels over the kept field of view misses the target."""
    from volsr.geometry import resampled_affine, resampled_shape, voxel_spacing

    lines, shape_out = [], resampled_shape(volume.spatial_shape, factors)
    spacing_out = voxel_spacing(resampled_affine(volume.affine, volume.spatial_shape, shape_out))
    for axis, (n_in, n_out, spacing, got, wanted) in enumerate(
        zip(volume.spatial_shape, shape_out, volume.spacing, spacing_out, target, strict=False)
    ):
        if not math.isclose(got, wanted, rel_tol=1e-6):
            lines.append(f"target spacing {wanted:g} mm on axis {axis}: {n_in} x {float(spacing):.4g} mm holds "
                         f"{n_in * float(spacing) / wanted:.4g} voxels, so the output has {n_out} at {got:.4g} mm "
                         "(the field of view is kept)")
    return lines


def _acquisition(args: argparse.Namespace, volume: Volume) -> tuple[AcquisitionModel | None, list[str]]:
    """The input's acquisition model (MRI volumes: 3 spatial axes, no bands) and its one line."""
    from volsr.acquisition import acquisition_for, estimate_noise

    given = any(getattr(args, n, None) not in (None, False) for n in ("thickness", "gap", "profile",
                                                                        "estimate_profile"))
    if volume.band_axis is not None or len(volume.spatial_axes) != 3:
        if given:
            raise ValueError("--thickness, --gap, --profile and --estimate-profile describe MRI slices: "
                             "this input is not a 3-D volume")
        return None, []
    acquisition = acquisition_for(volume, args.input, thickness=args.thickness, gap=args.gap,
                                  profile=args.profile, estimate_profile=args.estimate_profile,
                                  estimate_noise=False)  # fmt: skip
    if args.quiet:
        return acquisition, []
    try:
        shown = dataclasses.replace(acquisition, noise_sigma=estimate_noise(volume), noise_from="estimated")
    except (ValueError, ArithmeticError):
        shown = acquisition  # too little foreground to say (a small or synthetic volume): the line says "unknown"
    return shown, [shown.describe()]  # the engine reuses the noise estimate (--uncertainty)


def _model_lines(args: argparse.Namespace, model: str, volume: Volume, factors: tuple[float, ...]) -> list[str]:
    """The lines naming the model a run uses, printed as it starts: a fallback from the default
    network always (``--quiet`` too), the model itself unless quiet."""
    from volsr.engine.resolve import input_mismatch
    from volsr.geometry import integer_factors
    from volsr.models import get_card

    lines, shown = [], "x".join(f"{f:g}" for f in factors)
    unfit = None if args.model else input_mismatch(get_card(model), volume)
    if unfit is not None:
        lines.append(f"the default network {model} {unfit}: using cubic interpolation")
        model = "cubic"
    elif not args.model and get_card(model).kind != "network":
        kind = "hyperspectral" if volume.band_axis is not None else "MRI"
        lines.append(f"no shipped {kind} network for scale {shown}: using {model} (see `volsr models`)")
    if not args.quiet:
        why = " (arbitrary-scale network: non-integer factors)" if (
            not args.model and model.startswith("meta_srgan.") and not integer_factors(factors)) else ""
        lines.insert(0, f"model: {model}{why}")
    return lines


def run_upsample(args: argparse.Namespace) -> str:
    """``volsr upsample IN OUT (--scale ... | --target-spacing ...) [engine options]``."""
    from volsr.adaptation import adapted_network
    from volsr.engine import EngineOptions, TrustOptions, check_halo, upsample_to_store
    from volsr.engine.plan import DEFAULT_OVERLAP
    from volsr.engine.resolve import input_mismatch, resolve_factors
    from volsr.models import default_model_name, get_card

    if args.overlap is not None and args.blend != "gaussian":
        raise ValueError("--overlap applies to --blend gaussian only (exact tiles do not overlap)")
    volume = _load_input(args, overwrite=args.overwrite or args.resume, dtype=np.float32)
    missing = io.missing_chunks(args.input)
    if missing is not None and missing[0]:
        warnings.warn(f"{missing[0]} of {missing[1]} chunks of {args.input} are missing on disk; they read "
                      "as the store's fill value (lost or never written data?)", stacklevel=2)
    if args.scale is not None:
        grid = {"scale": per_axis(args.scale, len(volume.spatial_axes), "--scale")}
    else:
        grid = {"target_spacing": per_axis(args.target_spacing, len(volume.spatial_axes), "--target-spacing")}
    factors = resolve_factors(volume, grid.get("scale"), grid.get("target_spacing"))
    model = args.model or default_model_name(spectral=volume.band_axis is not None, scale=factors)
    announce = _model_lines(args, model, volume, factors)
    if args.target_spacing is not None:
        announce += _rounded_spacing(volume, grid["target_spacing"], factors)
    acquisition, lines = _acquisition(args, volume)
    announce += lines
    model = "cubic" if not args.model and input_mismatch(get_card(model), volume) else model
    if args.check_halo:
        difference = check_halo(model, scale=factors, device=args.device)
        _note(f"halo check passed (max difference {difference:.2g})")
    source = args.input if args.fill_nonfinite is None else volume
    engine = EngineOptions(
        chunks=args.chunks, tile=args.tile, blend=args.blend,
        overlap=DEFAULT_OVERLAP if args.overlap is None else args.overlap, workers=args.workers,
        scheduler=args.scheduler, max_memory=args.max_memory, device=args.device, quiet=args.quiet,
        force=getattr(args, "force", False), layout=getattr(args, "layout", None),
        self_ensemble=getattr(args, "self_ensemble", None), allow_external=args.allow_external, pyramid=args.pyramid,
    )  # fmt: skip
    with adapted_network(args, volume, model, factors, acquisition, engine) as network:  # the model without --adapt
        trust = TrustOptions(uncertainty=args.uncertainty, consistency=args.consistency,
                             enforce_consistency=args.enforce_consistency, acquisition=acquisition)  # fmt: skip
        path = upsample_to_store(source, args.output, **grid, model=network, options=engine, trust=trust,
                                 resume=args.resume, overwrite=args.overwrite, announce=announce)  # fmt: skip
    result = io.load(args.output)
    spacing = ", ".join(f"{s:.4g}" for s in result.spacing)
    return f"wrote {path}: {result.shape}, spacing {spacing} mm"


def _aligned(volume: Volume, prediction: Volume, name: str) -> Volume:
    """``volume`` (the reference or mask, called ``name`` in messages) on the prediction's
    grid: cropped when the prediction's grid is a leading sub-grid of it; a note when equal
    shapes carry different affines."""
    same_affine = np.allclose(volume.affine, prediction.affine, atol=1e-4)
    if volume.shape == prediction.shape:
        if not same_affine:
            worst = float(np.abs(volume.affine - prediction.affine).max())
            _note(f"warning: the {name}'s affine differs from the prediction's (by up to {worst:.3g}): "
                  "voxels are compared by index, not position")
        return volume
    fits = len(volume.shape) == len(prediction.shape) and all(
        p <= r for p, r in zip(prediction.shape, volume.shape)
    )
    if not (same_affine and fits):
        raise GeometryError(
            f"{name} grid {volume.shape} does not match the prediction grid {prediction.shape}"
            " (nor holds it as a leading sub-grid with the same affine)"
        )
    _note(f"evaluating on the prediction's grid {prediction.shape} ({name} cropped)")
    return volume.crop(tuple(slice(0, n) for n in prediction.shape))


def run_bids(args: argparse.Namespace) -> str:
    """``volsr bids BIDS_DIR OUT_DIR participant [--participant-label L ...] [...]``."""
    from volsr.bids import run_bids as run

    return run(args)


def run_evaluate(args: argparse.Namespace) -> str:
    """``volsr evaluate --reference REF --prediction PRED [--mask M] [--scale S] [--json F]``."""
    from volsr.metrics import evaluate

    if args.json:
        if not Path(args.json).resolve().parent.is_dir():
            raise FormatError(f"--json folder does not exist: {Path(args.json).resolve().parent}")
        read = [f for spec in (args.reference, args.prediction, args.mask) if spec
                for f in io.files_read(spec, allow_external=args.allow_external)]
        refuse_overlap(args.json, read, shown=f"--json {args.json}")
    undefined = "metrics are undefined there (mask them out of both files, or fill them)"
    external = args.allow_external
    prediction = checked_finite(io.load(args.prediction, allow_external=external), None, name="the prediction",
                                remedy=undefined)
    whole_reference = checked_finite(io.load(args.reference, allow_external=external), None,
                                     name="the reference", remedy=undefined)
    reference = _aligned(whole_reference, prediction, "reference")
    ref = reference.numpy().astype(np.float64)
    est = prediction.numpy().astype(np.float64)
    mask = None
    if args.mask:
        mask_volume = _aligned(io.load(args.mask, allow_external=external), prediction, "mask")
        mask = mask_volume.numpy() != 0
    data_range = args.data_range
    if data_range is None:
        data_range = float(ref.max() - ref.min())
        _note(f"data range: {data_range:.6g} (max - min of the reference)")
    spectral = reference.band_axis is not None
    metrics = evaluate(
        ref, est, data_range=data_range, mask=mask, spectral=spectral, scale=args.scale
    )
    if getattr(args, "uncertainty", None):
        from volsr.uncertainty import calibration_report

        width = _aligned(io.load(args.uncertainty, allow_external=external), prediction, "uncertainty")
        metrics.update(calibration_report(width.numpy(), est - ref, mask))
    if args.json:
        cropped = reference.shape != whole_reference.shape
        conventions = {
            "data_range": data_range,
            "data_range_from": "--data-range" if args.data_range is not None else "max - min of the reference",
            "reference_crop": [[0, n] for n in reference.shape] if cropped else None,
            "mask": args.mask, "spectral": spectral, "ergas_scale": args.scale,
            **({"uncertainty": args.uncertainty, "uncertainty_level": 0.9} if getattr(args, "uncertainty", None)
               else {}),
        }  # fmt: skip
        write_text_atomic(args.json, json.dumps({**metrics, "conventions": conventions}, indent=2) + "\n")
    width = max(len(name) for name in metrics)
    return "\n".join(f"{name:<{width}}  {value:.6g}" for name, value in metrics.items())


def run_models(args: argparse.Namespace) -> str:
    """``volsr models [--card NAME]``: every registered model with its factor range and card."""
    from volsr.models import get_card, list_models
    from volsr.models.weights import card_path

    if getattr(args, "card", None):
        get_card(args.card)  # KeyError with close names for an unknown model
        path = card_path(args.card)
        if path is None:
            raise ValueError(f"model {args.card!r} has no model card (only shipped networks do)")
        return path.read_text(encoding="utf-8").rstrip("\n")
    rows = [("name", "kind", "modality", "scales", "range", "halo", "card", "description")]
    for card in list_models():
        low, high = card.scale_range
        path = card_path(card.name)
        rows.append(
            (card.name, card.kind, card.modality, card.scales, f"{low:g}-{high:g}",
             str(card.halo), "-" if path is None else path.name, card.description)
        )
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1]
        for row in rows
    )


def run_export_weights(args: argparse.Namespace) -> dict:
    """``volsr export-weights RUN_DIR NAME [--best|--last]``: ship a checkpoint."""
    from volsr.models.weights import CARDS_DIR, WEIGHTS_DIR
    from volsr.train.export import export_checkpoint

    weights, card = export_checkpoint(
        args.run_dir, args.name, which=args.which, overwrite=args.overwrite,
        weights_dir=args.weights_dir or WEIGHTS_DIR, cards_dir=args.cards_dir or CARDS_DIR)
    return {"weights": str(weights), "sidecar": str(weights.with_suffix(".json")),
            "card": str(card)}


def run_demo(args: argparse.Namespace) -> str:
    """``volsr demo [OUTDIR]``: the ICBM152 thick-slice demo."""
    from volsr.demo import run_demo as demo

    return demo(Path(args.outdir), factor=args.factor, overwrite=args.overwrite)


def run_train(args: argparse.Namespace) -> dict | str:
    """``volsr train CONFIG [--check] [--resume] [--max-steps N] [--device cpu|cuda] [--threads T]``."""
    import torch

    from volsr.train.run import check_config, train

    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.check:
        return check_config(args.config)
    return train(args.config, resume=args.resume, max_steps=args.max_steps, device=args.device)
