"""``volsr bids BIDS_DIR OUT_DIR participant``: super-resolve every anatomical image.

The BIDS-Apps convention: positional dataset, output folder and analysis level
(``participant`` only), ``--participant-label`` to select subjects. Each image is one
:func:`volsr.engine.upsample_to_store` run into ``OUT_DIR/sub-*/[ses-*/]anat/`` with its JSON
sidecar (:mod:`volsr.bids.derivatives`).

Resumable per file, with or without ``overwrite``. A run is identified by its *run key*
(:func:`volsr.bids.derivatives.run_key`): the source's path and the SHA-256 of its bytes,
the factors, the model and its weights. An output whose NIfTI and sidecar exist and whose
sidecar records this run's key is finished and skipped (also with ``overwrite``: it was
made by this run, e.g. by an interrupted ``--overwrite`` run); one made by another run (other
options, or a source re-converted since) is refused unless ``overwrite``, which replaces it.

Before a run, its sidecar is recorded as a hidden *pending* file beside the output
(``.NAME.json.volsr-pending``) and any old sidecar removed; the sidecar is written
(atomically) only once the NIfTI is finished. A killed run therefore leaves either the
engine's work store beside its pending record (continued with the engine's resume when
the record has this run's key, also with ``overwrite``; else refused, or with
``overwrite`` started again) or a finished NIfTI newer than its pending record, which says
what made it (the sidecar is then completed); never a sidecar describing another image.
A NIfTI older than the pending record (an old output whose replacement failed) is not
adopted. With ``overwrite``, a work store the engine refuses to continue (its own header,
e.g. another device, differs) is started again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from volsr import io
from volsr.acquisition import AcquisitionModel, acquisition_from_spacing
from volsr.bids.derivatives import (
    ModelRecord,
    RunKey,
    file_sidecar,
    run_key,
    to_text,
    write_dataset_description,
)
from volsr.bids.layout import (
    AnatImage,
    BIDSError,
    check_dataset,
    check_output_dir,
    derivative_path,
    find_anatomical,
    sidecar_metadata,
)
from volsr.engine import EngineOptions, upsample_to_store
from volsr.engine.manifest import content_digest, model_identity
from volsr.engine.resolve import input_mismatch, resolve_factors
from volsr.engine.store import unfinished_run
from volsr.errors import OutputExistsError, ResumeError, VolsrError
from volsr.geometry import resampled_affine, resampled_shape, voxel_spacing
from volsr.io.outputs import write_text_atomic
from volsr.models import create_model, default_model_name, get_card

__all__ = ["FileResult", "run_participant", "run_bids", "pending_path"]

Status = Literal["written", "resumed", "completed", "skipped"]
_PENDING_SUFFIX = ".volsr-pending"


@dataclasses.dataclass(frozen=True)
class FileResult:
    """What :func:`run_participant` did with one image.

    Parameters
    ----------
    source : Path
        The raw image.
    output : Path
        The super-resolved NIfTI (its sidecar: same name, ``.json``).
    status : {"written", "resumed", "completed", "skipped"}
        ``written``: a new run; ``resumed``: an unfinished run of the same run key
        continued; ``completed``: a finished NIfTI got its sidecar; ``skipped``: already
        finished by a run of the same run key.

    Examples
    --------
    >>> FileResult(Path("a.nii.gz"), Path("b.nii.gz"), "skipped").status
    'skipped'
    """

    source: Path
    output: Path
    status: Status


@dataclasses.dataclass(frozen=True)
class _Job:
    """One image's planned run."""

    image: AnatImage
    output: Path
    sidecar: Path
    factors: tuple[float, ...]
    model: str
    record: dict[str, Any]

    @property
    def key(self) -> RunKey:
        return cast(RunKey, run_key(self.record))  # never None: the record is file_sidecar's


def pending_path(sidecar: str | os.PathLike[str]) -> Path:
    """The hidden pending sidecar of a run in progress: ``.NAME.json.volsr-pending``.

    Parameters
    ----------
    sidecar : str or path
        The output's sidecar path.

    Returns
    -------
    Path

    Examples
    --------
    >>> pending_path("/out/sub-01/anat/sub-01_res-volsr_T1w.json").name
    '.sub-01_res-volsr_T1w.json.volsr-pending'
    """
    path = Path(sidecar)
    return path.with_name(f".{path.name}{_PENDING_SUFFIX}")


def _read(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing or not one (never raises)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class _Models:
    """Model names and their records, resolved once per run."""

    def __init__(self, model: str | None) -> None:
        self.requested = model
        if model is not None:
            get_card(model)  # an unknown name fails before any output, listing close names
        self.records: dict[str, ModelRecord] = {}

    def name_for(self, volume: Any, factors: tuple[float, ...]) -> str:
        if self.requested is not None:
            return self.requested
        name = default_model_name(spectral=False, scale=factors)
        return "cubic" if input_mismatch(get_card(name), volume) is not None else name

    def record(self, name: str) -> ModelRecord:
        if name not in self.records:
            sha = model_identity(create_model(name))["weights_sha256"]
            self.records[name] = ModelRecord(name, get_card(name).kind, sha)
        return self.records[name]


def _acquisition(image: AnatImage, metadata: dict[str, Any], spacing: tuple[float, ...]) -> AcquisitionModel:
    """The image's acquisition model from its sidecars' slice fields (mm) and its header."""
    fields = {}
    for field in ("SliceThickness", "SpacingBetweenSlices"):
        value = metadata.get(field)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value) and value > 0):
            raise BIDSError(f"{field} of {image.relpath} (from its sidecars) must be a number of mm > 0, "
                            f"got {value!r}")
        fields[field] = value
    return acquisition_from_spacing(spacing, slice_thickness=fields["SliceThickness"],
                                    spacing_between_slices=fields["SpacingBetweenSlices"])


def _plan(
    bids_dir: Path, out_dir: Path, image: AnatImage, models: _Models,
    scale: float | Sequence[float] | None, target_spacing: float | Sequence[float] | None,
) -> _Job:  # fmt: skip
    """Read the image's header and sidecars; decide output, factors, model and sidecar."""
    volume = io.load(image.path)
    spacing = tuple(float(s) for s in volume.spacing)
    if scale is None and target_spacing is None:
        target_spacing = min(spacing)  # isotropic at the finest voxel size
    factors = resolve_factors(volume, scale, target_spacing)
    model = models.name_for(volume, factors)
    shape_out = resampled_shape(volume.spatial_shape, factors)
    affine_out = resampled_affine(volume.affine, volume.spatial_shape, shape_out)
    metadata = sidecar_metadata(bids_dir, image)
    output = derivative_path(out_dir, image)
    full_shape = list(volume.shape)
    for axis, size in zip(volume.spatial_axes, shape_out, strict=True):
        full_shape[axis] = size
    record = file_sidecar(
        image, metadata, model=models.record(model), factors=factors, spacing_in=spacing,
        spacing_out=tuple(voxel_spacing(affine_out)[: len(spacing)]), shape_in=volume.shape,
        shape_out=tuple(full_shape), acquisition=_acquisition(image, metadata, spacing),
        source_sha256=content_digest([image.path])[0],
    )  # fmt: skip
    return _Job(image, output, derivative_path(out_dir, image, extension=".json"), factors, model, record)


def _describe(key: RunKey) -> str:
    return f"model {key.model} at factors {' x '.join(f'{f:g}' for f in key.factors)}"


def _other_run(recorded: RunKey, job: _Job) -> str:
    """How the run that made (or started) an output differs from this one."""
    if recorded[:4] == job.key[:4]:
        changed = "changed since" if recorded.source_sha256 else "not recorded: made by an older volsr"
        return f"from other contents of {job.image.relpath} ({changed})"
    return f"with {_describe(recorded)}, this run asks for {_describe(job.key)}"


def _state(job: _Job, *, overwrite: bool) -> Literal["skip", "complete", "resume", "run"]:
    """What to do with one output (see the module docstring); refuses another run's output."""
    pending = pending_path(job.sidecar)
    started = run_key(_read(pending))
    if unfinished_run(job.output) is not None:
        if started == job.key or (started is None and not overwrite):
            return "resume"  # without a record, the engine checks its own header
        if overwrite:
            return "run"  # the engine deletes the other run's work store
        raise OutputExistsError(f"an unfinished run of {job.output} was started {_other_run(started, job)}; "
                                "pass --overwrite to start again")
    if not job.output.exists():
        return "run"
    recorded = run_key(_read(job.sidecar))
    if recorded == job.key:
        return "skip"
    if recorded is not None:
        if overwrite:
            return "run"
        raise OutputExistsError(f"{job.output} was made {_other_run(recorded, job)}; pass --overwrite to replace it")
    if started == job.key and job.output.stat().st_mtime_ns >= pending.stat().st_mtime_ns:
        return "complete"  # the NIfTI was finished after its run was recorded: that run made it
    if overwrite:
        return "run"
    raise OutputExistsError(f"{job.output} exists without a complete sidecar {job.sidecar.name} (not a "
                            "finished volsr output); pass --overwrite to replace it")


_ACTIONS = {"skip": "finished, skipped", "complete": "finished, writing its sidecar",
            "resume": "resuming an unfinished run", "run": "upsampling"}
_STATUS: dict[str, Status] = {"skip": "skipped", "complete": "completed", "resume": "resumed", "run": "written"}


def _upsample(job: _Job, *, resume: bool, overwrite: bool, device: str, quiet: bool) -> None:
    upsample_to_store(job.image.path, job.output, scale=job.factors, model=job.model, resume=resume,
                      overwrite=overwrite and not resume, options=EngineOptions(device=device, quiet=quiet))  # fmt: skip


def _process(job: _Job, state: str, *, overwrite: bool, device: str, quiet: bool) -> Status:
    pending = pending_path(job.sidecar)
    if state == "skip":
        pending.unlink(missing_ok=True)  # left by a run killed after its sidecar was written
        return "skipped"
    status = _STATUS[state]
    text = to_text(job.record)
    if state != "complete":
        job.output.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(pending, text)
        job.sidecar.unlink(missing_ok=True)  # never beside a NIfTI it does not describe
        resume = state == "resume" or not overwrite
        try:
            _upsample(job, resume=resume, overwrite=overwrite, device=device, quiet=quiet)
        except VolsrError as error:
            # The engine refuses to continue a work store whose header differs (another
            # device, a store of another run behind a stale record); overwrite starts again.
            if not (overwrite and resume and isinstance(error, ResumeError)):
                raise
            _upsample(job, resume=False, overwrite=True, device=device, quiet=quiet)
            status = "written"
    write_text_atomic(job.sidecar, text)
    pending.unlink(missing_ok=True)
    return status


def run_participant(
    bids_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    participant_labels: Sequence[str] | None = None,
    scale: float | Sequence[float] | None = None,
    target_spacing: float | Sequence[float] | None = None,
    model: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    quiet: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[FileResult, ...]:
    """Super-resolve every anatomical image of a BIDS dataset into a derivative dataset.

    Parameters
    ----------
    bids_dir : str or path
        Raw BIDS dataset (with ``dataset_description.json``).
    out_dir : str or path
        Derivative dataset root (created): outside ``bids_dir`` or under its ``derivatives/``.
    participant_labels : sequence of str, optional
        Only these subjects (``01`` or ``sub-01``).
    scale, target_spacing : float or (D,) sequence of float, optional
        At most one: per-axis factor, or wanted voxel size (mm). Default: isotropic voxels
        of each image's finest voxel size.
    model : str, optional
        Registry name; default the best shipped model for each image's factors (as
        ``volsr upsample`` picks it).
    device : str
        Where the model runs (``cpu``, ``cuda``).
    overwrite : bool
        Replace outputs made by another run (other factors, model or weights, or a source
        changed since). Outputs this run's options made are kept and its unfinished ones
        continued, so a killed ``overwrite`` run is continued by running it again.
    quiet : bool
        No engine plan, budget or progress bar.
    progress : callable, optional
        Called with one line per image before it is processed (``sub-01 T1w: 1 of 3, ...``).

    Returns
    -------
    tuple of FileResult
        One per image, in processing order.

    Raises
    ------
    BIDSError
        If the dataset, the output folder, a label or a sidecar is unusable.
    OutputExistsError
        If an output exists that this run did not make and ``overwrite`` is false.
    ValueError, KeyError
        For bad factors or an unknown model (before any output is written).
    VolsrError
        From the engine (unreadable image, unfinished run of other options).

    Examples
    --------
    >>> run_participant("/no/such/dataset", "/tmp/out")
    Traceback (most recent call last):
    ...
    volsr.bids.layout.BIDSError: BIDS_DIR /no/such/dataset is not a folder
    """
    raw = check_dataset(bids_dir)
    root, out = Path(bids_dir).resolve(), check_output_dir(bids_dir, out_dir)
    if scale is not None and target_spacing is not None:
        raise ValueError(f"give at most one of scale and target_spacing, got {scale!r} and {target_spacing!r}")
    images = find_anatomical(root, participant_labels=participant_labels)
    models = _Models(model)
    # Every header, sidecar and existing output is checked before the first output is written.
    jobs = [_plan(root, out, image, models, scale, target_spacing) for image in images]
    states = [_state(job, overwrite=overwrite) for job in jobs]
    write_dataset_description(root, out, raw)
    results = []
    for number, (job, state) in enumerate(zip(jobs, states, strict=True), start=1):
        if progress is not None:
            progress(f"{job.image.label}: {number} of {len(jobs)}, {_ACTIONS[state]}"
                     + (f" with {job.model}" if state == "run" else ""))
        status = _process(job, state, overwrite=overwrite, device=device, quiet=quiet)
        results.append(FileResult(job.image.path, job.output, status))
    return tuple(results)


def _one_or_all(values: Sequence[float] | None) -> float | Sequence[float] | None:
    return values[0] if values is not None and len(values) == 1 else values


def _stderr_line(line: str) -> None:
    sys.stderr.write(f"volsr bids: {line}\n")
    sys.stderr.flush()


def run_bids(args: argparse.Namespace) -> str:
    """The ``volsr bids`` command on parsed arguments; returns the summary line.

    Parameters
    ----------
    args : argparse.Namespace
        ``bids_dir``, ``output_dir``, ``analysis_level``, ``participant_label``, ``scale``,
        ``target_spacing``, ``model``, ``device``, ``overwrite``, ``quiet``.

    Returns
    -------
    str

    Raises
    ------
    BIDSError, OutputExistsError, ValueError, KeyError, VolsrError
        As :func:`run_participant`.

    Examples
    --------
    >>> args = argparse.Namespace(bids_dir="/no/such", output_dir="/tmp/o", analysis_level="group")
    >>> run_bids(args)
    Traceback (most recent call last):
    ...
    ValueError: analysis level must be 'participant' (the only level of volsr bids), got 'group'
    """
    if args.analysis_level != "participant":
        raise ValueError(f"analysis level must be 'participant' (the only level of volsr bids), "
                         f"got {args.analysis_level!r}")
    results = run_participant(
        args.bids_dir, args.output_dir, participant_labels=args.participant_label,
        scale=_one_or_all(args.scale), target_spacing=_one_or_all(args.target_spacing), model=args.model,
        device=getattr(args, "device", "cpu"), overwrite=args.overwrite, quiet=args.quiet,
        progress=None if args.quiet else _stderr_line,
    )  # fmt: skip
    counts = {status: sum(r.status == status for r in results) for status in _STATUS.values()}
    done = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    subjects = len({r.source.relative_to(Path(args.bids_dir).resolve()).parts[0] for r in results})
    return (f"{len(results)} anatomical images of {subjects} participants: {done}; "
            f"outputs in {Path(args.output_dir).resolve()}")
