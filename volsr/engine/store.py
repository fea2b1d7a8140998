"""Out-of-core upsampling into a chunked store: plan, budget, run, resume, finalise.

Memory: peak memory is a function of the tile and chunk sizes (printed before the run),
not of the volume. The output is always an OME-Zarr store written chunk by chunk; its
OME metadata is written last, so a store without it is an unfinished run. NIfTI and HDF5
outputs are produced from a temporary Zarr store next to the output
(``.NAME.volsr-partial.zarr``, which holds the manifest of a resumable run) once every
task is done: HDF5 is then streamed chunk by chunk (memory: one chunk), while NIfTI is
written by nibabel, which needs the whole output array in memory once (output voxels x 4
bytes) -- use a ``.zarr`` or ``.h5`` output for volumes larger than memory.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import torch
from torch import nn

from volsr import io
from volsr.engine import progress
from volsr.engine.distributed import WorkerJob, open_output_array, run_distributed, write_result
from volsr.engine.execute import channel_first, run_in_process
from volsr.engine.layout import apply_layout
from volsr.engine.manifest import MANIFEST_NAME, Manifest, input_fingerprint, model_identity
from volsr.engine.normalise import input_statistics
from volsr.engine.plan import DEFAULT_OVERLAP, Plan, make_plan
from volsr.engine.resolve import (
    check_input,
    check_supported,
    resolve_device,
    resolve_factors,
    resolve_model,
    with_floor,
    with_self_ensemble,
)
from volsr.errors import OutputExistsError, VolsrError
from volsr.geometry import resampled_affine, resampled_shape
from volsr.models.ensemble import SelfEnsemble
from volsr.volume import Volume

__all__ = [
    "upsample_to_store", "DEFAULT_CHUNK", "MAX_TILE_EDGE", "auto_tile",
    "start_tile", "plan_run",
]  # fmt: skip

#: Default output chunk edge (voxels): 64^3 float32 = 1 MiB per chunk.
DEFAULT_CHUNK = 64
#: Largest tile edge tried, in voxels of the grid the model reads (:func:`start_tile`):
#: a 5-voxel halo costs 4 % per axis there (16 % at 64). The budget shrinks it from here.
MAX_TILE_EDGE = 256


def _note(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr)  # noqa: T201 - the engine's log line, like tqdm's


def _spatial_chunks(chunks: Sequence[int] | None, volume: Volume, shape_out: tuple[int, ...]) -> tuple[int, ...]:
    dims = len(shape_out)
    if chunks is None:
        return tuple(min(DEFAULT_CHUNK, n) for n in shape_out)
    values = tuple(int(c) for c in chunks)
    if len(values) == volume.ndim and volume.ndim != dims:
        values = tuple(values[n] for n in volume.spatial_axes)
    if len(values) != dims or min(values) < 1:
        raise ValueError(
            f"chunks needs {dims} positive sizes (one per spatial axis) or {volume.ndim} (one per "
            f"array axis), got {tuple(chunks)}"
        )
    return tuple(min(c, n) for c, n in zip(values, shape_out, strict=True))


def auto_tile(
    fits: Callable[[tuple[int, ...]], bool], start: Sequence[int], chunks: Sequence[int]
) -> tuple[int, ...]:
    """The largest tile (output voxels) from ``start`` that ``fits``, shrinking the longest axis.

    The engine calls it with ``fits`` judging a candidate on a notional volume three tiles
    wide, so the choice depends on the budget, the model and the scale, not on the size of
    the volume being processed, except that a tile holding the whole volume is judged on
    the volume itself (a small volume then runs as one task, with no halo recomputed).

    Parameters
    ----------
    fits : callable ``(tile) -> bool``
        Whether a tile's planned memory fits the budget.
    start : (D,) sequence of int
        First candidate (output voxels per spatial axis), see :func:`start_tile`.
    chunks : (D,) sequence of int
        Output chunk shape: while the longest axis spans more than one chunk it loses one
        chunk per step (whole chunks, and a tile close to the budget: halving could waste up
        to half of it, and smaller tiles recompute more halo); below one chunk it is halved.

    Returns
    -------
    tuple of int

    Raises
    ------
    VolsrError
        If even an 8-voxel tile does not fit.

    Examples
    --------
    >>> auto_tile(lambda t: t[0] * t[1] <= 4096, (128, 512), (64, 64))
    (64, 64)
    >>> auto_tile(lambda t: t[0] * t[1] <= 40000, (128, 512), (64, 64))  # halving: (128, 256)
    (128, 256)
    >>> auto_tile(lambda t: t[0] * t[1] <= 50000, (128, 512), (64, 64))
    (128, 384)
    """
    tile = [int(t) for t in start]
    while not fits(tuple(tile)):
        longest = int(np.argmax(tile))
        if tile[longest] <= 8:
            raise VolsrError("max_memory is too small for even an 8-voxel tile; raise it")
        chunk = chunks[longest]
        if tile[longest] > chunk:
            tile[longest] = max(chunk, math.ceil(tile[longest] / chunk) * chunk - chunk)
        else:
            tile[longest] = max(8, tile[longest] // 2)
    return tuple(tile)


def start_tile(grid: str, factors: Sequence[float], chunks: Sequence[int]) -> tuple[int, ...]:
    """Largest tile tried: :data:`MAX_TILE_EDGE` voxels per axis of the grid the model reads.

    Parameters
    ----------
    grid : {"lr", "hr"}
        The model card's grid: ``lr`` tiles span ``MAX_TILE_EDGE`` input voxels (so
        ``MAX_TILE_EDGE * factor`` output voxels), ``hr`` tiles ``MAX_TILE_EDGE`` output voxels.
    factors : (D,) sequence of float
        Per-axis scale.
    chunks : (D,) sequence of int
        Output chunk shape; the tile is rounded down to whole chunks (at least one).

    Returns
    -------
    tuple of int
        Output voxels per spatial axis.

    Raises
    ------
    None

    Examples
    --------
    >>> start_tile("lr", (1, 1, 4), (64, 64, 64)), start_tile("hr", (1, 1, 4), (64, 64, 64))
    ((256, 256, 1024), (256, 256, 256))
    """
    edges = [MAX_TILE_EDGE * (f if grid == "lr" else 1.0) for f in factors]
    return tuple(max(c, int(e) // c * c) for e, c in zip(edges, chunks, strict=True))


def _template(volume: Volume, shape_out: tuple[int, ...]) -> Volume:
    shape = list(volume.shape)
    for axis, size in zip(volume.spatial_axes, shape_out, strict=True):
        shape[axis] = size
    return volume.replace(
        data=da.zeros(tuple(shape), dtype=np.float32, chunks=-1),
        affine=resampled_affine(volume.affine, volume.spatial_shape, shape_out),
    )


def _create_store(path: Path, template: Volume, chunks: tuple[int, ...]) -> None:
    import zarr
    import zarr.codecs
    from zarr.storage import LocalStore

    from volsr.io.zarr_ome import disk_order

    order = disk_order(template.axes)
    spatial = iter(chunks)
    chunk_shape = [next(spatial) if template.axes[n] in ("i", "j", "k") else template.shape[n] for n in order]
    names = ["c" if template.axes[n] not in ("i", "j", "k") else "zyx"[3 - len(chunks) + "ijk".index(template.axes[n])] for n in order]
    group = zarr.open_group(store=LocalStore(path), mode="w-", zarr_format=3)
    group.create_array(
        "0", shape=tuple(template.shape[n] for n in order), chunks=tuple(chunk_shape),
        dtype=np.float32, compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=names,
    )  # fmt: skip


def _finalise_store(path: Path, template: Volume) -> None:
    import zarr
    from zarr.storage import LocalStore

    from volsr.io.zarr_ome import ome_attributes

    zarr.open_group(store=LocalStore(path), mode="r+").attrs.update(ome_attributes(template))


#: Name ending of the hidden work store of a run whose output is not Zarr.
_PARTIAL_SUFFIX = ".volsr-partial.zarr"


def _work_store(output: Path) -> Path:
    if io.format_for(output)[0].name == "zarr":
        return output
    return output.with_name(f".{output.name}{_PARTIAL_SUFFIX}")


def _previous_manifest(store: Path, *, resume: bool) -> Manifest | None:
    """The manifest of the run a resume continues (read once), or None when there is none."""
    if not (resume and store.exists()):
        return None
    path = store / MANIFEST_NAME
    if not path.exists():
        raise VolsrError(f"cannot resume: {store} has no {MANIFEST_NAME} (not written by a volsr run)")
    return Manifest.load(path)


def _budget_bytes(
    max_memory: str | int | None, previous: Manifest | None, workers: int | None, scheduler: str | None
) -> int:
    """The budget asked for; else the one a resumed run started with (same plan); else the default."""
    if max_memory is not None:
        return progress.parse_size(max_memory)
    recorded = None if previous is None else previous.state.get("budget_bytes")
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    return progress.default_budget(workers=workers, local=scheduler is None)


def _open_manifest(
    store: Path, header: dict, previous: Manifest | None, *, overwrite: bool, quiet: bool
) -> Manifest | None:
    if previous is not None:
        manifest = previous
        manifest.check(header)
        _note(f"resuming: {int(np.count_nonzero(manifest.done))} of {len(manifest.done)} tasks already done", quiet)
        return manifest
    if store.exists() and not overwrite:
        if store.name.endswith(_PARTIAL_SUFFIX):
            raise OutputExistsError(f"an earlier run of this output left its partial result {store}: "
                                    "pass --resume to continue it, or --overwrite to start again")
        raise OutputExistsError(f"output exists: {store} (pass --overwrite to replace it, or --resume)")
    if store.exists():
        shutil.rmtree(store)
    return None


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
        ``.zarr`` (OME-Zarr, written in place), ``.h5:/key`` or ``.nii[.gz]`` (converted from
        a temporary Zarr store at the end).
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
    volume = source if isinstance(source, Volume) else io.load(source)
    spec = None if isinstance(source, Volume) else os.fspath(source)
    net = resolve_model(model)
    factors = resolve_factors(volume, scale, target_spacing)
    check_supported(net.card, factors, force=force)
    check_input(net.card, volume)
    where = resolve_device(device)
    if workers is not None and scheduler is not None:
        raise ValueError(f"give at most one of workers and scheduler, got workers={workers!r}, scheduler={scheduler!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    output_path = io.check_output(output, overwrite=overwrite or resume, inputs=[spec] if spec else [])
    store = _work_store(output_path)
    previous = _previous_manifest(store, resume=resume)
    budget_bytes = _budget_bytes(max_memory, previous, workers, scheduler)
    if isinstance(model, nn.Module):
        net = copy.deepcopy(net)
    net = with_self_ensemble(net, factors, self_ensemble)
    if isinstance(net, SelfEnsemble):
        count = len(net.symmetries)
        _note(f"self-ensemble: the mean over {count} flips and axis swaps "
              f"(--no-self-ensemble: {count}x faster)", quiet)
    layout = layout or net.card.layout
    net = apply_layout(net.eval().to(where), layout)
    shape_out = resampled_shape(volume.spatial_shape, factors)
    channels = volume.data.size // math.prod(volume.spatial_shape)
    room = progress.check_output_room(4 * math.prod(shape_out) * channels, output_path.parent,
                                      in_memory=io.format_for(output)[0].name == "nifti")
    if room is not None:
        _note(room, False)  # a warning, shown even with quiet
    plan, batch, budget = plan_run(
        net, volume, shape_out, factors, chunks, tile, blend, overlap, budget_bytes, where
    )
    header = {
        "input": input_fingerprint(volume, spec),
        "model": model_identity(net),
        "options": {
            "shape_out": list(shape_out), "plan": dataclasses.asdict(plan), "batch": batch,
            "device": where.type, "output": str(output), "layout": layout,
        },
    }  # fmt: skip
    manifest = _open_manifest(store, header, previous, overwrite=overwrite, quiet=quiet)
    template = _template(volume, shape_out)
    if manifest is None:
        _create_store(store, template, plan.chunks)
        manifest = Manifest.create(store / MANIFEST_NAME, header, plan.n_tasks)
        manifest.state["budget_bytes"] = budget_bytes
        manifest.save()
    if not manifest.complete:
        _run(net, volume, spec, plan, batch, budget, manifest, store, where, workers, scheduler, quiet)
        _finalise_store(store, template)
        manifest.complete = True
        manifest.save()
    if store != output_path:
        result = io.load(store).replace(meta=volume.meta)
        io.save(result, output, overwrite=True)
        shutil.rmtree(store)
    return output_path


def plan_run(
    net: nn.Module,
    volume: Volume,
    shape_out: tuple[int, ...],
    factors: tuple[float, ...],
    chunks: Sequence[int] | None,
    tile: Sequence[int] | None,
    blend: str,
    overlap: float,
    budget_bytes: int,
    where: torch.device,
) -> tuple[Plan, int, progress.Budget]:
    """The plan, batch size and memory budget of a run: the largest tile that fits the budget.

    Parameters
    ----------
    net : torch.nn.Module
        Eval mode, on ``where``, with a ``card``.
    volume : Volume
        The input.
    shape_out : tuple of int
        Spatial output shape.
    factors : tuple of float
        Per-axis scale.
    chunks, tile : sequence of int or None
        Output chunk shape (None: :data:`DEFAULT_CHUNK`) and tile (None: chosen here by
        :func:`auto_tile` so that :func:`volsr.engine.progress.estimate` fits the budget).
    blend : str
        ``"exact"`` or ``"gaussian"``.
    overlap : float
        Blend overlap.
    budget_bytes : int
        Memory budget per worker (bytes).
    where : torch.device
        Where the model runs (batches > 1 only on accelerators).

    Returns
    -------
    plan : Plan
    batch : int
    budget : Budget

    Raises
    ------
    VolsrError
        If an explicit ``tile`` does not fit the budget, or no tile does.

    Examples
    --------
    >>> from volsr.models import create_model
    >>> v = Volume(np.zeros((8, 8, 4), np.float32), np.eye(4), ("i", "j", "k"))
    >>> plan_run(create_model("linear"), v, (8, 8, 16), (1.0, 1.0, 4.0), None, None, "exact", 0.25,
    ...          2**30, torch.device("cpu"))[0].tile
    (8, 8, 16)
    """
    spatial_chunks = _spatial_chunks(chunks, volume, shape_out)
    channels = int(np.prod([volume.shape[n] for n in range(volume.ndim) if n not in volume.spatial_axes]))
    weights = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])

    def plan_for(candidate: tuple[int, ...]) -> Plan:
        return make_plan(net.card, volume.spatial_shape, shape_out, chunks=spatial_chunks,
                         tile=candidate, blend=blend, overlap=overlap)  # fmt: skip

    def notional(candidate: tuple[int, ...]) -> Plan:
        # Three tiles per axis: the middle task has full halos on every side, and the
        # answer does not depend on how large the real volume is.
        shape_in = tuple(max(1, math.ceil(3 * t / f)) for t, f in zip(candidate, factors, strict=True))
        return make_plan(net.card, shape_in, resampled_shape(shape_in, factors), chunks=spatial_chunks,
                         tile=candidate, blend=blend, overlap=overlap)  # fmt: skip

    activation = progress.activation_bytes(net, notional(spatial_chunks), channels, where)

    def fits(plan: Plan, batch: int = 1) -> bool:
        budget = progress.estimate(plan, channels=channels, batch=batch, activation=activation, weights=weights)
        return budget.total <= budget_bytes

    if tile is None:
        start = start_tile(net.card.grid, factors, spatial_chunks)
        # The real plan too: its tasks can be larger than the notional ones (the lazy API's
        # slabs hold a whole slab's accumulator).
        # A tile holding the whole volume is judged on the volume itself: one task, no halo.
        def acceptable(t: tuple[int, ...]) -> bool:
            whole = all(a >= n for a, n in zip(t, shape_out, strict=True))
            return fits(plan_for(t)) and (whole or fits(notional(t)))

        try:
            chosen = auto_tile(acceptable, start, spatial_chunks)
        except VolsrError:
            smallest = tuple(min(8, c) for c in spatial_chunks)
            need = max(
                progress.estimate(p, channels=channels, batch=1, activation=activation, weights=weights).total
                for p in (plan_for(smallest), notional(smallest))
            )
            raise VolsrError(
                f"max_memory {progress.format_size(budget_bytes)} is too small for even an "
                f"8-voxel tile of {net.card.name!r} on {channels} channels (needs "
                f"~{progress.format_size(need)}); raise max_memory (--max-memory)"
            ) from None
    else:
        chosen = tuple(tile)
    plan = plan_for(chosen)
    batch = 1
    # Batching pays on accelerators; on a CPU one tile already keeps every core busy.
    while where.type != "cpu" and batch < 16 and fits(plan, batch * 2):
        batch *= 2
    budget = progress.estimate(plan, channels=channels, batch=batch, activation=activation, weights=weights)
    if budget.total > budget_bytes:
        raise VolsrError(
            f"tile {chosen} needs ~{progress.format_size(budget.total)} per worker, more than "
            f"max_memory {progress.format_size(budget_bytes)}; use a smaller tile or raise max_memory"
        )
    return plan, batch, budget


def _run(net, volume, spec, plan, batch, budget, manifest, store, where, workers, scheduler, quiet):
    input_scale = manifest.state.get("input_scale")
    if input_scale is None:
        input_scale, floor = input_statistics(net.card, volume.data)
        manifest.state["input_scale"] = input_scale
        manifest.state["output_floor"] = floor
        manifest.save()
    net = with_floor(net, manifest.state.get("output_floor"))
    layout = manifest.header["options"]["layout"]
    done = manifest.done
    # Generators, not lists: nothing held per task beyond the manifest's one byte.
    todo = (n for n in range(plan.n_tasks) if not done[n])
    remaining = plan.n_tasks - int(np.count_nonzero(done))
    done_voxels = sum(plan.task_voxels(n) for n in np.flatnonzero(done))
    total = math.prod(plan.shape_out)
    _note(
        f"plan: {plan.n_tasks} tasks ({remaining} to run), chunks {plan.chunks}, tile {plan.tile}, "
        f"batch {batch}, blend {plan.blend}, layout {layout}; {budget.describe()}", quiet,
    )  # fmt: skip
    with progress.progress_bar(total, initial=done_voxels, quiet=quiet) as bar:

        def finished(index: int) -> None:
            manifest.mark(index)
            bar.update(plan.task_voxels(index))

        if workers is None and scheduler is None:
            array = open_output_array(store)

            def write(index: int, result: np.ndarray) -> None:
                write_result(array, plan.task_region(index), result)
                finished(index)

            run_in_process(net, plan, channel_first(volume), todo, write, device=where,
                           batch=batch, input_scale=input_scale)  # fmt: skip
            return
        job = WorkerJob(
            key=uuid.uuid4().hex, source=spec if spec is not None else volume,
            model=net.card.name if _is_registry_model(net) else net.to("cpu"), plan=plan,
            store=str(store), device=str(where), batch=batch, input_scale=input_scale, threads=1,
            layout=layout,
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
