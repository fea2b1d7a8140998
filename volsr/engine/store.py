"""Out-of-core upsampling into a chunked store: plan, budget, run, resume, finalise.

Memory: peak memory is a function of the tile and chunk sizes (printed before the run),
not of the volume. The output is always an OME-Zarr store written chunk by chunk; its
OME metadata is written last, so a store without it is an unfinished run. NIfTI and HDF5
outputs are produced from the run's work store once every task is done: HDF5 is then
streamed chunk by chunk (memory: one chunk), while NIfTI is written by nibabel, which needs
the whole output array in memory once (output voxels x 4 bytes) -- use a ``.zarr`` or
``.h5`` output for volumes larger than memory.

Safety: every run works in a hidden Zarr store beside the output
(``.NAME.volsr-partial.zarr``, holding the manifest of a resumable run) and holds the
output's lock (:mod:`volsr.io.outputs`) from its first check to its last rename. An existing
output is replaced only by a complete successor: a Zarr work store is renamed into place,
other formats are written under a temporary name and renamed. A killed or failed run leaves
the old output as it was.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import torch
from torch import nn

from volsr import io
from volsr.acquisition import acquisition_for
from volsr.engine import progress
from volsr.engine.distributed import WorkerJob, open_output_array, run_distributed, write_result
from volsr.engine.execute import channel_first, output_arrays, run_in_process, run_task
from volsr.engine.layout import apply_layout
from volsr.engine.manifest import (
    MANIFEST_NAME,
    RUN_ATTRIBUTE,
    Manifest,
    content_size,
    input_fingerprint,
    model_identity,
)
from volsr.engine.nodata import nodata_for, nodata_value, statistics_voxels
from volsr.engine.normalise import input_statistics
from volsr.engine.options import EngineOptions
from volsr.engine.plan import Plan, make_plan
from volsr.engine.pyramid import build_pyramid, check_levels, create_levels
from volsr.engine.resolve import (
    check_input,
    check_supported,
    resolve_device,
    resolve_factors,
    resolve_model,
    with_floor,
    with_self_ensemble,
)
from volsr.engine.runstate import (
    RunOptions,
    budget_bytes_for,
    note,
    open_manifest,
    output_identity,
    phase,
    previous_run,
    unfinished_run,
    work_store,
)
from volsr.engine.sizing import plan_run
from volsr.engine.trust import (
    TrustOptions,
    deliver_trust,
    scan_noise,
    scan_width_scale,
    with_uncertainty,
)
from volsr.errors import InvalidDataError, ResumeError, VolsrError, first_line
from volsr.geometry import resampled_affine, resampled_shape
from volsr.io.outputs import clean_leftovers, discard, output_lock, replace_with
from volsr.models.ensemble import SelfEnsemble
from volsr.models.trust import WithUncertainty
from volsr.volume import Volume

__all__ = ["upsample_to_store", "unfinished_run"]

def _template(volume: Volume, shape_out: tuple[int, ...]) -> Volume:
    shape = list(volume.shape)
    for axis, size in zip(volume.spatial_axes, shape_out, strict=True):
        shape[axis] = size
    return volume.replace(
        data=da.zeros(tuple(shape), dtype=np.float32, chunks=-1),
        affine=resampled_affine(volume.affine, volume.spatial_shape, shape_out),
    )


def _create_store(path: Path, template: Volume, chunks: tuple[int, ...], *, levels: int = 1,
                  extra: Sequence[str] = ()) -> None:
    import zarr
    import zarr.codecs
    from zarr.storage import LocalStore

    from volsr.io.zarr_ome import disk_order

    order = disk_order(template.axes)
    spatial = iter(chunks)
    chunk_shape = [next(spatial) if template.axes[n] in ("i", "j", "k") else template.shape[n] for n in order]
    names = ["c" if template.axes[n] not in ("i", "j", "k") else "zyx"[3 - len(chunks) + "ijk".index(template.axes[n])] for n in order]
    group = zarr.open_group(store=LocalStore(path), mode="w-", zarr_format=3)
    for name in ("0", *extra):
        group.create_array(
            name, shape=tuple(template.shape[n] for n in order), chunks=tuple(chunk_shape),
            dtype=np.float32, compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=names,
        )  # fmt: skip
    create_levels(path, template.axes, levels)


def _finalise_store(path: Path, template: Volume, header: dict, *, levels: int = 1) -> None:
    import zarr
    from zarr.storage import LocalStore

    from volsr.io.zarr_ome import ome_attributes

    group = zarr.open_group(store=LocalStore(path), mode="r+")
    group.attrs.update({**ome_attributes(template, levels=levels), RUN_ATTRIBUTE: header})


def _build_levels(store: Path, template: Volume, manifest: Manifest, options: RunOptions) -> None:
    """Multiscale levels 1.. from the finished image, resuming after the last one recorded."""
    done = manifest.state.get("pyramid_done", 0)
    done = done if isinstance(done, int) and 0 <= done < options.engine.pyramid else 0  # else: rebuild (same bytes)

    def finished(level: int) -> None:
        manifest.state["pyramid_done"] = level
        manifest.save()
        note(f"pyramid: level {level} of {options.engine.pyramid - 1} written", options.engine.quiet)

    build_pyramid(store, template.axes, options.engine.pyramid, done=done, on_level=finished,
                  nodata=nodata_value(template))


def _check_pyramid(pyramid: int, output: str | os.PathLike[str], shape_out: tuple[int, ...]) -> None:
    """Refuse ``pyramid`` levels that are not a count :func:`check_levels` accepts, or a non-Zarr output."""
    if pyramid != 1 and io.format_for(output)[0].name != "zarr":
        raise ValueError(f"pyramid={pyramid!r} needs a .zarr output (OME-Zarr multiscales), got {os.fspath(output)!r}")
    check_levels(pyramid, shape_out)


#: Inputs larger than this get a phase line while their content is hashed (about 1 GB/s).
_NOTE_HASH_BYTES = 2**30
#: Axes shorter than this are tried on the network before the run (:func:`_check_short_axes`).
_SHORT_AXIS = 8


def _check_short_axes(net: nn.Module, volume: Volume, factors: tuple[float, ...], where: torch.device) -> None:
    """Run the network once on a small input with the volume's short axes, before any output.

    A network may fail on a 1-voxel axis (a position grid of one sample, a padding wider
    than the input); found after the run, that left a partial store nothing could finish.
    """
    shape = volume.spatial_shape
    if min(shape) >= _SHORT_AXIS:
        return
    small = tuple(min(n, _SHORT_AXIS) for n in shape)
    shape_out = resampled_shape(small, factors)
    plan = make_plan(net.card, small, shape_out, chunks=shape_out, tile=shape_out)
    region = plan.task_region(0)
    box = plan.source_box(plan.tiles(region))
    block = np.zeros((volume.data.size // math.prod(shape), *small), np.float32)
    try:
        run_task(net, plan, region, block, box, device=where)
    except InvalidDataError:
        return  # it runs (NaN on zeros is the tasks' concern, checked on real data)
    except (ValueError, RuntimeError, IndexError) as error:
        raise VolsrError(f"model {net.card.name} cannot run on an input of spatial shape {shape} "
                         f"({first_line(error)}); try --model cubic, or pad the short axes") from None


def upsample_to_store(
    source: str | os.PathLike[str] | Volume,
    output: str | os.PathLike[str],
    *,
    scale: float | Sequence[float] | None = None,
    target_spacing: float | Sequence[float] | None = None,
    model: str | nn.Module = "cubic",
    options: EngineOptions | None = None,
    trust: TrustOptions | None = None,
    resume: bool = False,
    overwrite: bool = False,
    announce: Sequence[str] = (),
) -> Path:
    """Upsample a volume of any size into a file, out of core, resumably ("bring your own network").

    Tasks are groups of whole output chunks; each reads its input box plus the model's
    halo, runs its tiles and writes its chunks once. Exact mode equals one whole-volume
    forward pass up to float rounding. See the module docstring for memory and formats.

    Parameters
    ----------
    source : str, path or Volume
        Input path spec (``file``, ``file:key``), opened lazily, or a Volume.
    output : str or path
        ``.zarr`` (OME-Zarr: the run's work store, renamed into place at the end),
        ``.h5:/key``, ``.nii[.gz]``, ``.mat:key`` or ``.hdr`` (converted from it at the end).
    scale, target_spacing : float or (D,) sequence of float
        Exactly one: per-axis factor, or wanted voxel size (mm).
    model : str or torch.nn.Module
        Registry name, or any module with a :class:`volsr.models.ModelCard` ``card``
        (grid, halo, scales, input_scaling) and the ``forward(x, positions)`` contract of
        :class:`volsr.models.interpolation.SeparableInterpolation`. Used in eval mode on a
        copy; the caller's module is not changed.
    options : EngineOptions, optional
        How the run executes: chunks, tiles, blending, workers or scheduler, memory budget,
        device, layout, self-ensemble, pyramid (:class:`volsr.engine.EngineOptions`;
        default: its defaults).
    trust : TrustOptions, optional
        Extra outputs of the same tasks (:class:`volsr.engine.TrustOptions`): the 90 %
        half-width map (``uncertainty``: needs a model with a shipped calibration for the
        input's modality; the output itself is the one the run gives without it), the
        consistency map (``consistency``, on the input's grid, its RMS logged), or the
        consistency-enforced output (``enforce_consistency``: not with a pyramid), with the
        input's ``acquisition`` (default: from its header and BIDS sidecar,
        :func:`volsr.acquisition.acquisition_for`).
    resume : bool
        Continue an interrupted run (refused if input, model or options differ).
    overwrite : bool
        Replace an existing output.
    announce : sequence of str
        Lines printed to stderr once every check has passed, before any work (even with
        ``quiet``): the command line names the model and any fallback this way, so that a
        refusal stays the only line.

    Returns
    -------
    Path
        The output path (without key).

    Raises
    ------
    ValueError, TypeError, KeyError
        For bad arguments (see :func:`volsr.engine.upsample`).
    OutputExistsError
        If the output exists without ``overwrite``/``resume``.
    VolsrError
        If a resume does not match the original run, or the scheduler is unreachable.
    OSError
        If the store cannot be written (the run stays resumable).

    Examples
    --------
    >>> import tempfile
    >>> v = Volume(np.ones((6, 5, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = upsample_to_store(v, Path(d) / "sr.zarr", scale=(1, 1, 2), model="linear",
    ...                              options=EngineOptions(chunks=(4, 4, 4), quiet=True))
    ...     io.load(path).shape
    (6, 5, 8)
    """
    engine = EngineOptions() if options is None else options
    volume = source if isinstance(source, Volume) else io.load(source, allow_external=engine.allow_external)
    spec = None if isinstance(source, Volume) else os.fspath(source)
    net = resolve_model(model)
    factors = resolve_factors(volume, scale, target_spacing)
    check_supported(net.card, factors, force=engine.force)
    check_input(net.card, volume)
    where = resolve_device(engine.device)
    _check_pyramid(engine.pyramid, output, resampled_shape(volume.spatial_shape, factors))
    output_path = io.check_output(output, overwrite=overwrite or resume, inputs=[spec] if spec else [],
                                  dtype=np.dtype(np.float32), allow_external=engine.allow_external)  # fmt: skip
    trust = _checked_trust(volume, spec, output_path, TrustOptions() if trust is None else trust,
                           overwrite=overwrite or resume, pyramid=engine.pyramid,
                           allow_external=engine.allow_external)  # fmt: skip
    options = RunOptions(output=os.fspath(output), engine=engine, resume=resume, overwrite=overwrite,
                         announce=tuple(announce), trust=trust)  # fmt: skip
    if isinstance(model, nn.Module):
        net = copy.deepcopy(net)
    with contextlib.ExitStack() as locks:
        for path in [output_path, *(io.format_for(extra)[1] for extra in trust.outputs)]:
            locks.enter_context(output_lock(path))
            clean_leftovers(path)
        return _upsample_locked(net, volume, spec, output_path, factors, where, options)


def _checked_trust(volume: Volume, spec: str | None, output_path: Path, trust: TrustOptions, *, overwrite: bool,
                   pyramid: int, allow_external: bool) -> TrustOptions:  # fmt: skip
    """The trust outputs checked like the output (before any work): writable, not an input, distinct;
    the acquisition filled in from the input where a map needs it."""
    paths = [output_path]
    for extra in trust.outputs:
        path = io.check_output(extra, overwrite=overwrite, inputs=[spec] if spec else [], dtype=np.dtype(np.float32),
                               allow_external=allow_external)  # fmt: skip
        if path.resolve() in [p.resolve() for p in paths]:
            raise ValueError(f"{extra} is also another output of this run: give each output its own file")
        paths.append(path)
    if trust.enforce_consistency and pyramid > 1:
        raise ValueError("--enforce-consistency changes the output after the run; build the pyramid from it with a "
                         "second run (--pyramid is not combined with it)")
    wanted = bool(trust.outputs) or trust.enforce_consistency
    acquisition = trust.acquisition
    if wanted and acquisition is None and volume.band_axis is None:
        acquisition = acquisition_for(volume, spec, estimate_noise=False)
    return dataclasses.replace(trust, acquisition=acquisition if wanted else None)


def _announce(net: nn.Module, volume: Volume, shape_out: tuple[int, ...], output_path: Path,
              options: RunOptions) -> None:
    """What the run is about to do, once no refusal can follow: the caller's lines (shown even
    with quiet), the self-ensemble, and a warning when the output may not fit the disk."""
    channels = volume.data.size // math.prod(volume.spatial_shape)
    room = progress.check_output_room(4 * math.prod(shape_out) * channels, output_path.parent,
                                      in_memory=io.format_for(options.output)[0].name == "nifti")
    for line in options.announce:
        note(line, False)
    if isinstance(net, SelfEnsemble):
        count = len(net.symmetries)
        note(f"self-ensemble: the mean over {count} flips and axis swaps "
              f"(--no-self-ensemble: {count}x faster)", options.engine.quiet)
    if room is not None:
        note(room, False)  # a warning, shown even with quiet


def _upsample_locked(
    net: nn.Module, volume: Volume, spec: str | None, output_path: Path, factors: tuple[float, ...],
    where: torch.device, options: RunOptions,
) -> Path:  # fmt: skip
    """The run, once the output's lock is held: work store, tasks, then the output replaced."""
    quiet, workers, scheduler = options.engine.quiet, options.engine.workers, options.engine.scheduler
    store = work_store(output_path)
    previous, finished = previous_run(store, output_path, options)
    budget_bytes = budget_bytes_for(options.engine.max_memory, previous, workers, scheduler)
    if options.trust.uncertainty is not None:
        net = with_uncertainty(net, volume, factors, options.engine.self_ensemble)
    else:
        net = with_self_ensemble(net, factors, options.engine.self_ensemble)
    layout = options.engine.layout or net.card.layout
    net = apply_layout(net.eval().to(where), layout)
    shape_out = resampled_shape(volume.spatial_shape, factors)
    phase("sizing the tiles: probe forwards measure the model's memory", quiet)
    engine = options.engine
    plan, batch, budget = plan_run(net, volume, shape_out, factors, engine.chunks, engine.tile, engine.blend,
                                   engine.overlap, budget_bytes, where)  # fmt: skip
    header = _run_header(net, volume, spec, plan, batch, budget_bytes, where, layout, options)
    _check_short_axes(net, volume, factors, where)
    if finished:
        previous.check(header)
        note(f"{output_path} is already complete: nothing to resume", quiet)
        return output_path
    manifest = open_manifest(store, header, previous, overwrite=options.overwrite, quiet=quiet)
    _announce(net, volume, shape_out, output_path, options)  # every check passed: the run starts
    template = _template(volume, shape_out)
    if manifest is None:
        _create_store(store, template, plan.chunks, levels=options.engine.pyramid, extra=output_arrays(net)[1:])
        manifest = Manifest.create(store / MANIFEST_NAME, header, plan.n_tasks)
        manifest.state["budget_bytes"] = budget_bytes
        manifest.save()
    if not manifest.complete:
        try:
            _run(net, volume, spec, plan, batch, budget, manifest, store, where, options)
        except BaseException:
            if previous is None and not manifest.done.any():
                discard(store)  # nothing done: no half-written run left
            raise
        _build_levels(store, template, manifest, options)
        _finalise_store(store, template, manifest.header, levels=options.engine.pyramid)
        manifest.complete = True
        manifest.save()
    _deliver(store, output_path, volume, options, template)
    return output_path


def _run_header(
    net: nn.Module, volume: Volume, spec: str | None, plan: Plan, batch: int, budget_bytes: int,
    where: torch.device, layout: str, options: RunOptions,
) -> dict:  # fmt: skip
    """What a resume must match: the input (a SHA-256 of its files), the model, the options."""
    if spec is not None and not options.engine.quiet and sys.stderr.isatty():
        size = content_size(io.files_read(spec, allow_external=options.engine.allow_external))
        if size > _NOTE_HASH_BYTES:
            phase(f"hashing the input ({progress.format_size(size)}) so that --resume can check it", False)
    return {
        "input": input_fingerprint(volume, spec, allow_external=options.engine.allow_external),
        "model": model_identity(net),
        "options": {
            "shape_out": list(plan.shape_out), "plan": dataclasses.asdict(plan), "tasks": plan.n_tasks,
            "batch": batch, "budget_bytes": budget_bytes, "device": where.type,
            "output": output_identity(options.output), "layout": layout,
            **({"pyramid": options.engine.pyramid} if options.engine.pyramid > 1 else {}),  # 1: headers as before
            **({"trust": options.trust.header()} if options.trust.header() else {}),
        },
    }  # fmt: skip


def _deliver(store: Path, output_path: Path, volume: Volume, options: RunOptions, template: Volume) -> None:
    """Put the finished work store in the output's place (Zarr: renamed; else converted), the
    trust outputs first (a kill between them and the output leaves a resumable store)."""
    trust = options.trust
    if trust.outputs or trust.enforce_consistency:
        finished = deliver_trust(io.load(store).replace(meta=volume.meta), volume, trust,
                                 store, template, options.engine.quiet)  # fmt: skip
        if trust.enforce_consistency:
            io.save(finished, options.output, overwrite=True)
            discard(store)
            return
    if io.format_for(options.output)[0].name == "zarr":
        if (store / "uncertainty").exists():
            discard(store / "uncertainty")  # delivered to its own file; not part of the OME-Zarr image
        (store / MANIFEST_NAME).unlink(missing_ok=True)
        replace_with(store, output_path)
    else:
        result = io.load(store).replace(meta=volume.meta)
        io.save(result, options.output, overwrite=True)
        discard(store)  # renamed first: a kill mid-delete leaves no "finished" store with holes


def _run(net, volume, spec, plan, batch, budget, manifest, store, where, options):
    workers, scheduler, quiet = options.engine.workers, options.engine.scheduler, options.engine.quiet
    input_scale = manifest.state.get("input_scale")
    if input_scale is not None and not (isinstance(input_scale, (int, float)) and 0 < input_scale < math.inf):
        raise ResumeError(f"cannot resume: {manifest.path} holds an invalid input scale {input_scale!r}; "
                         "rerun with --overwrite to start again")
    if input_scale is None:
        if net.card.kind == "network" or net.card.input_scaling != "none":
            phase(f"input statistics: one pass over the input ({progress.format_size(volume.data.nbytes)}) "
                   f"for the intensity scale", options.engine.quiet)
        input_scale, floor = input_statistics(net.card, statistics_voxels(net.card, volume))
        manifest.state["input_scale"] = input_scale
        manifest.state["output_floor"] = floor
        manifest.save()
    if isinstance(net, WithUncertainty):
        if "noise_sigma" not in manifest.state:
            if volume.band_axis is None:  # a cube's calibration has no noise term
                phase("uncertainty: estimating the input's noise", options.engine.quiet)
            manifest.state["noise_sigma"] = scan_noise(volume, options.trust.acquisition, net.factors)
            manifest.save()
        if "width_scale" not in manifest.state:  # tasks done by a version without the check kept U as fitted
            if net.calibration.scan_transfer is not None and volume.band_axis is None:
                phase("uncertainty: the per-scan check on pairs from the input's in-plane axes", options.engine.quiet)
            scale, described = scan_width_scale(net, volume, options.trust.acquisition, input_scale) \
                if not manifest.done.any() else (1.0, "")
            note(described, options.engine.quiet or not described)
            manifest.state["width_scale"] = scale
            manifest.save()
        net.with_noise(manifest.state["noise_sigma"] / input_scale, manifest.state["width_scale"])
    net = with_floor(net, manifest.state.get("output_floor"))
    layout = manifest.header["options"]["layout"]
    nodata = nodata_for(volume, plan)
    done = manifest.done
    # Generators, not lists: nothing held per task beyond the manifest's one byte.
    todo = (n for n in range(plan.n_tasks) if not done[n])
    remaining = plan.n_tasks - int(np.count_nonzero(done))
    done_voxels = sum(plan.task_voxels(n) for n in np.flatnonzero(done))
    total = math.prod(plan.shape_out)
    note(
        f"plan: {plan.n_tasks} tasks ({remaining} to run), chunks {plan.chunks}, tile {plan.tile}, "
        f"batch {batch}, blend {plan.blend}, layout {layout}; {budget.describe()}", quiet,
    )  # fmt: skip
    with progress.progress_bar(total, initial=done_voxels, quiet=quiet) as bar:

        def finished(index: int) -> None:
            manifest.mark(index)
            bar.update(plan.task_voxels(index))

        if workers is None and scheduler is None:
            array = open_output_array(store, output_arrays(net))

            shown = [0]  # voxels of the running task already on the bar (one task can be the whole run)

            def tile_done(index: int, voxels: int) -> None:
                step = min(voxels, plan.task_voxels(index) - shown[0])
                bar.update(step)
                shown[0] += step

            def write(index: int, result: np.ndarray) -> None:
                write_result(array, plan.task_region(index), result)
                manifest.mark(index)
                bar.update(plan.task_voxels(index) - shown[0])
                shown[0] = 0

            run_in_process(net, plan, channel_first(volume), todo, write, device=where,
                           batch=batch, input_scale=input_scale, nodata=nodata, on_tile=tile_done)  # fmt: skip
            return
        job = WorkerJob(
            key=uuid.uuid4().hex, source=spec if spec is not None else volume,
            model=net.card.name if _is_registry_model(net) else net.to("cpu"), plan=plan,
            store=str(store), device=str(where), batch=batch, input_scale=input_scale, threads=1,
            layout=layout, allow_external=options.engine.allow_external, nodata=nodata, arrays=output_arrays(net),
        )  # fmt: skip
        run_distributed(job, todo, finished, workers=workers, scheduler=scheduler)


def _is_registry_model(net: nn.Module) -> bool:
    """Whether workers can rebuild ``net`` from its registry name (same card and weights)."""
    from volsr.models import create_model

    try:
        fresh = create_model(net.card.name)
    except KeyError:
        return False
    same = fresh.card == net.card and type(fresh) is type(net)
    return same and model_identity(fresh)["weights_sha256"] == model_identity(net)["weights_sha256"]
