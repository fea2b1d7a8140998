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
from volsr.acquisition import AcquisitionModel, acquisition_for
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
from volsr.engine.plan import DEFAULT_OVERLAP, Plan, make_plan
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
    done = done if isinstance(done, int) and 0 <= done < options.pyramid else 0  # else: rebuild (same bytes)

    def finished(level: int) -> None:
        manifest.state["pyramid_done"] = level
        manifest.save()
        note(f"pyramid: level {level} of {options.pyramid - 1} written", options.quiet)

    build_pyramid(store, template.axes, options.pyramid, done=done, on_level=finished,
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
    chunks: Sequence[int] | None = None,
    tile: Sequence[int] | None = None,
    blend: str = "exact",
    overlap: float = DEFAULT_OVERLAP,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_memory: str | int | None = None,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    force: bool = False,
    layout: str | None = None,
    self_ensemble: bool | None = None,
    allow_external: bool = False,
    announce: Sequence[str] = (),
    pyramid: int = 1,
    uncertainty: str | os.PathLike[str] | None = None,
    consistency: str | os.PathLike[str] | None = None,
    enforce_consistency: bool = False,
    acquisition: AcquisitionModel | None = None,
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
    chunks : sequence of int, optional
        Output chunk shape (one per spatial axis, or one per array axis); default 64.
    tile : sequence of int, optional
        Output tile shape per spatial axis; default: from :func:`start_tile`
        (:data:`MAX_TILE_EDGE` voxels per axis of the grid the model reads), shrunk by
        :func:`auto_tile` until it fits ``max_memory`` -- independent of the volume's size,
        so peak memory is too.
    blend : {"exact", "gaussian"}
        ``exact`` crops halos; ``gaussian`` blends tiles overlapping by ``overlap``.
    overlap : float
        Tile overlap fraction in [0, 1) for ``gaussian``.
    workers : int, optional
        Run on a new local Dask cluster of this many worker processes.
    scheduler : str, optional
        Run on the Dask scheduler at this address.
    resume : bool
        Continue an interrupted run (refused if input, model or options differ).
    overwrite : bool
        Replace an existing output.
    max_memory : str or int, optional
        Budget per worker (``"2G"``); picks tile and batch sizes. Default: half the memory
        free when the run starts, shared among local workers, at least 1 GiB
        (:func:`volsr.engine.progress.default_budget`); a resumed run keeps the budget it
        started with.
    device : str or torch.device
        Where the model runs.
    quiet : bool
        No plan line, budget line or progress bar.
    force : bool
        Run at factors outside the model's ``scale_range`` with a warning instead of
        refusing them (:func:`volsr.engine.resolve.check_supported`).
    layout : {"contiguous", "channels_last"}, optional
        Memory layout of the network's convolutions (:mod:`volsr.engine.layout`); default
        the one its card declares.
    self_ensemble : bool, optional
        Average the model over the flips and axis swaps of each tile
        (:class:`volsr.models.ensemble.SelfEnsemble`: 8 forwards for a cube, better
        estimates); default as the model's card says (on for the shipped HSI networks).
    allow_external : bool
        Read HDF5 data held in other files (:func:`volsr.io.load`); refused by default.
    announce : sequence of str
        Lines printed to stderr once every check has passed, before any work (even with
        ``quiet``): the command line names the model and any fallback this way, so that a
        refusal stays the only line.
    pyramid : int
        OME-Zarr multiscale levels, level 0 included (1: the full-resolution image only).
        Levels 1.. halve every spatial axis (2x block means, :mod:`volsr.engine.pyramid`;
        bands untouched), built chunk by chunk after the run and resumable; ``.zarr`` only,
        and every spatial axis needs ``2**(pyramid - 1)`` voxels.
    uncertainty : str or path, optional
        Also write, per output voxel, the half-width of a 90 % interval for
        ``|output - truth|`` (the output's grid and units; :mod:`volsr.uncertainty`), as one
        more array of the same tasks; per pixel and band for a spectral cube. Needs a model with
        a shipped calibration for the input's modality (MRI or cubes); the output
        itself is the one the run gives without it.
    consistency : str or path, optional
        Also write the output re-acquired by the input's acquisition minus the input, on the
        input's grid (:func:`volsr.consistency.consistency_map`), and log its RMS.
    enforce_consistency : bool
        Deliver the nearest volume that re-acquires to the input exactly
        (:func:`volsr.consistency.enforce_consistency`); not with ``pyramid``.
    acquisition : AcquisitionModel, optional
        The input's slice thickness and profile for the consistency outputs (default: from
        its header and BIDS sidecar, :func:`volsr.acquisition.acquisition_for`).

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
    ...                              chunks=(4, 4, 4), quiet=True)
    ...     io.load(path).shape
    (6, 5, 8)
    """
    volume = source if isinstance(source, Volume) else io.load(source, allow_external=allow_external)
    spec = None if isinstance(source, Volume) else os.fspath(source)
    net = resolve_model(model)
    factors = resolve_factors(volume, scale, target_spacing)
    check_supported(net.card, factors, force=force)
    check_input(net.card, volume)
    where = resolve_device(device)
    _check_pyramid(pyramid, output, resampled_shape(volume.spatial_shape, factors))
    if workers is not None and scheduler is not None:
        raise ValueError(f"give at most one of workers and scheduler, got workers={workers!r}, scheduler={scheduler!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    output_path = io.check_output(output, overwrite=overwrite or resume, inputs=[spec] if spec else [],
                                  dtype=np.dtype(np.float32), allow_external=allow_external)  # fmt: skip
    trust = _trust_options(volume, spec, output_path, uncertainty, consistency, enforce_consistency, acquisition,
                           overwrite=overwrite or resume, pyramid=pyramid, allow_external=allow_external)  # fmt: skip
    options = RunOptions(
        output=os.fspath(output), chunks=chunks, tile=tile, blend=blend, overlap=overlap, workers=workers,
        scheduler=scheduler, resume=resume, overwrite=overwrite, max_memory=max_memory, quiet=quiet,
        layout=layout, self_ensemble=self_ensemble, allow_external=allow_external,
        announce=tuple(announce), pyramid=int(pyramid), trust=trust,
    )  # fmt: skip
    if isinstance(model, nn.Module):
        net = copy.deepcopy(net)
    with contextlib.ExitStack() as locks:
        for path in [output_path, *(io.format_for(extra)[1] for extra in trust.outputs)]:
            locks.enter_context(output_lock(path))
            clean_leftovers(path)
        return _upsample_locked(net, volume, spec, output_path, factors, where, options)


def _trust_options(volume: Volume, spec: str | None, output_path: Path, uncertainty, consistency, enforce: bool,
                   acquisition: AcquisitionModel | None, *, overwrite: bool, pyramid: int,
                   allow_external: bool) -> TrustOptions:  # fmt: skip
    """The trust outputs checked like the output (before any work): writable, not an input, distinct."""
    extras = [os.fspath(x) for x in (uncertainty, consistency) if x is not None]
    paths = [output_path]
    for extra in extras:
        path = io.check_output(extra, overwrite=overwrite, inputs=[spec] if spec else [], dtype=np.dtype(np.float32),
                               allow_external=allow_external)  # fmt: skip
        if path.resolve() in [p.resolve() for p in paths]:
            raise ValueError(f"{extra} is also another output of this run: give each output its own file")
        paths.append(path)
    if enforce and pyramid > 1:
        raise ValueError("--enforce-consistency changes the output after the run; build the pyramid from it with a "
                         "second run (--pyramid is not combined with it)")
    wanted = bool(extras) or enforce
    if wanted and acquisition is None and volume.band_axis is None:
        acquisition = acquisition_for(volume, spec, estimate_noise=False)
    return TrustOptions(uncertainty=None if uncertainty is None else os.fspath(uncertainty),
                        consistency=None if consistency is None else os.fspath(consistency), enforce=bool(enforce),
                        acquisition=acquisition if wanted else None)  # fmt: skip


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
              f"(--no-self-ensemble: {count}x faster)", options.quiet)
    if room is not None:
        note(room, False)  # a warning, shown even with quiet


def _upsample_locked(
    net: nn.Module, volume: Volume, spec: str | None, output_path: Path, factors: tuple[float, ...],
    where: torch.device, options: RunOptions,
) -> Path:  # fmt: skip
    """The run, once the output's lock is held: work store, tasks, then the output replaced."""
    quiet, workers, scheduler = options.quiet, options.workers, options.scheduler
    store = work_store(output_path)
    previous, finished = previous_run(store, output_path, options)
    budget_bytes = budget_bytes_for(options.max_memory, previous, workers, scheduler)
    if options.trust.uncertainty is not None:
        net = with_uncertainty(net, volume, factors, options.self_ensemble)
    else:
        net = with_self_ensemble(net, factors, options.self_ensemble)
    layout = options.layout or net.card.layout
    net = apply_layout(net.eval().to(where), layout)
    shape_out = resampled_shape(volume.spatial_shape, factors)
    phase("sizing the tiles: probe forwards measure the model's memory", quiet)
    plan, batch, budget = plan_run(
        net, volume, shape_out, factors, options.chunks, options.tile, options.blend, options.overlap,
        budget_bytes, where,
    )  # fmt: skip
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
        _create_store(store, template, plan.chunks, levels=options.pyramid, extra=output_arrays(net)[1:])
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
        _finalise_store(store, template, manifest.header, levels=options.pyramid)
        manifest.complete = True
        manifest.save()
    _deliver(store, output_path, volume, options, template)
    return output_path


def _run_header(
    net: nn.Module, volume: Volume, spec: str | None, plan: Plan, batch: int, budget_bytes: int,
    where: torch.device, layout: str, options: RunOptions,
) -> dict:  # fmt: skip
    """What a resume must match: the input (a SHA-256 of its files), the model, the options."""
    if spec is not None and not options.quiet and sys.stderr.isatty():
        size = content_size(io.files_read(spec, allow_external=options.allow_external))
        if size > _NOTE_HASH_BYTES:
            phase(f"hashing the input ({progress.format_size(size)}) so that --resume can check it", False)
    return {
        "input": input_fingerprint(volume, spec, allow_external=options.allow_external),
        "model": model_identity(net),
        "options": {
            "shape_out": list(plan.shape_out), "plan": dataclasses.asdict(plan), "tasks": plan.n_tasks,
            "batch": batch, "budget_bytes": budget_bytes, "device": where.type,
            "output": output_identity(options.output), "layout": layout,
            **({"pyramid": options.pyramid} if options.pyramid > 1 else {}),  # 1: headers as before
            **({"trust": options.trust.header()} if options.trust.header() else {}),
        },
    }  # fmt: skip


def _deliver(store: Path, output_path: Path, volume: Volume, options: RunOptions, template: Volume) -> None:
    """Put the finished work store in the output's place (Zarr: renamed; else converted), the
    trust outputs first (a kill between them and the output leaves a resumable store)."""
    trust = options.trust
    if trust.outputs or trust.enforce:
        finished = deliver_trust(io.load(store).replace(meta=volume.meta), volume, trust,
                                 store, template, options.quiet)  # fmt: skip
        if trust.enforce:
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
    workers, scheduler, quiet = options.workers, options.scheduler, options.quiet
    input_scale = manifest.state.get("input_scale")
    if input_scale is not None and not (isinstance(input_scale, (int, float)) and 0 < input_scale < math.inf):
        raise ResumeError(f"cannot resume: {manifest.path} holds an invalid input scale {input_scale!r}; "
                         "rerun with --overwrite to start again")
    if input_scale is None:
        if net.card.kind == "network" or net.card.input_scaling != "none":
            phase(f"input statistics: one pass over the input ({progress.format_size(volume.data.nbytes)}) "
                   f"for the intensity scale", options.quiet)
        input_scale, floor = input_statistics(net.card, statistics_voxels(net.card, volume))
        manifest.state["input_scale"] = input_scale
        manifest.state["output_floor"] = floor
        manifest.save()
    if isinstance(net, WithUncertainty):
        if "noise_sigma" not in manifest.state:
            if volume.band_axis is None:  # a cube's calibration has no noise term
                phase("uncertainty: estimating the input's noise", options.quiet)
            manifest.state["noise_sigma"] = scan_noise(volume, options.trust.acquisition, net.factors)
            manifest.save()
        if "width_scale" not in manifest.state:  # tasks done by a version without the check kept U as fitted
            if net.calibration.scan_transfer is not None and volume.band_axis is None:
                phase("uncertainty: the per-scan check on pairs from the input's in-plane axes", options.quiet)
            scale, described = scan_width_scale(net, volume, options.trust.acquisition, input_scale) \
                if not manifest.done.any() else (1.0, "")
            note(described, options.quiet or not described)
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
            layout=layout, allow_external=options.allow_external, nodata=nodata, arrays=output_arrays(net),
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
