"""Running tasks on a Dask distributed cluster (imported only when a run asks for one).

Each worker receives a :class:`WorkerJob` once (broadcast), opens the input by path (or
receives the in-memory volume), builds or receives the model once, and for each task
reads its input box, runs it and writes its whole output chunks to the Zarr store by path.
The client records completions in the manifest as results arrive, so a lost worker or a
killed client leaves a resumable store.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volsr.engine.execute import channel_first, read_box, run_task
from volsr.engine.layout import apply_layout
from volsr.engine.nodata import NoData, mark_footprint, read_masked
from volsr.engine.plan import Plan
from volsr.errors import VolsrError
from volsr.volume import Volume

__all__ = ["WorkerJob", "run_distributed", "open_output_array", "write_result"]

#: How long to wait for a scheduler before reporting it unreachable.
CONNECT_TIMEOUT_S = 10

_WORKER_STATE: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs; sent once per worker, never an open file handle.

    Parameters
    ----------
    key : str
        Unique per run (worker caches are keyed by it).
    source : str or Volume
        Input path spec (opened on the worker) or an in-memory volume.
    model : str or torch.nn.Module
        Registry name (built on the worker) or a module with a ``card``.
    plan : Plan
        The volume's plan.
    store : str
        Output Zarr store path.
    device : str
        Torch device name.
    batch : int
        Tiles per forward call.
    input_scale : float
        Global intensity scale.
    threads : int
        Torch intra-op threads per worker.
    layout : str
        Memory layout of the model's weights (:func:`volsr.engine.layout.apply_layout`).
    allow_external : bool
        Whether the input may read HDF5 data held in other files (:func:`volsr.io.load`).
    nodata : NoData, optional
        The input's no-data handling (:func:`volsr.engine.nodata.nodata_for`).
    arrays : tuple of str
        The store's arrays the tasks write (:func:`volsr.engine.execute.output_arrays`).
    """

    key: str
    source: str | Volume
    model: str | nn.Module
    plan: Plan
    store: str
    device: str
    batch: int
    input_scale: float
    threads: int
    layout: str = "contiguous"
    allow_external: bool = False
    nodata: NoData | None = None
    arrays: tuple[str, ...] = ("0",)


def open_output_array(store: str | os.PathLike[str], names: Sequence[str] | None = None) -> Any:
    """The image array (or the named arrays) of an engine output store, opened for writing.

    Parameters
    ----------
    store : str or path
        Zarr directory store created by the engine.
    names : sequence of str, optional
        Open these arrays (a list of them is returned); default the image ``"0"``.

    Returns
    -------
    zarr.Array or list of zarr.Array

    Raises
    ------
    OSError
        If the store cannot be opened.

    Examples
    --------
    >>> open_output_array("/no/such/store.zarr")  # doctest: +SKIP
    """
    import zarr
    from zarr.storage import LocalStore

    group = zarr.open_group(store=LocalStore(Path(store)), mode="r+")
    return group["0"] if names is None else [group[name] for name in names]


def write_result(array: Any, region: Sequence[tuple[int, int]], result: Any) -> None:
    """Write a task's ``(C, *region)`` result into the (channel-first) output array(s).

    Parameters
    ----------
    array : zarr.Array or list of zarr.Array
        ``(C, *spatial)`` for volumes with a band/channel axis, else ``(*spatial)``; a list:
        ``result`` holds their channels one array after the other.
    region : sequence of (start, stop)
        Spatial output box (whole chunks).
    result : (C, *region_shape) ndarray
        From :func:`volsr.engine.execute.run_task`.

    Returns
    -------
    None

    Raises
    ------
    OSError
        If the store cannot be written (full disk, permissions).

    Examples
    --------
    >>> import numpy as np
    >>> target = np.zeros((2, 3))
    >>> write_result(target, ((0, 1), (1, 3)), np.ones((1, 1, 2)))
    >>> target.tolist()
    [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    """
    if isinstance(array, list):
        step = result.shape[0] // len(array)
        for n, part in enumerate(array):
            write_result(part, region, result[n * step : (n + 1) * step])
        return
    index = tuple(slice(a, b) for a, b in region)
    if array.ndim == len(region):
        array[index] = result[0]
    else:
        array[(slice(None), *index)] = result


def _worker_state(job: WorkerJob) -> tuple[Any, nn.Module, Any]:
    state = _WORKER_STATE.get(job.key)
    if state is None:
        from volsr import io
        from volsr.engine.resolve import resolve_model

        _WORKER_STATE.clear()
        torch.set_num_threads(job.threads)
        volume = io.load(job.source, allow_external=job.allow_external) if isinstance(job.source, str) else job.source
        net = apply_layout(resolve_model(job.model).eval().to(torch.device(job.device)), job.layout)
        state = (channel_first(volume), net, open_output_array(job.store, job.arrays))
        _WORKER_STATE[job.key] = state
    return state


def _run_on_worker(job: WorkerJob, index: int) -> int:
    source, net, array = _worker_state(job)
    region = job.plan.task_region(index)
    box = job.plan.source_box(job.plan.tiles(region))
    if job.nodata is None:
        block, invalid = read_box(source, box, divide_by=job.input_scale), None
    else:
        block, invalid = read_masked(source, box, job.nodata, divide_by=job.input_scale)
    result = run_task(
        net, job.plan, region, block, box, device=torch.device(job.device),
        batch=job.batch, multiply_by=job.input_scale,
    )  # fmt: skip
    if invalid is not None:
        mark_footprint(result, invalid, box, region, job.plan, job.nodata.value)
    write_result(array, region, result)
    return index


def _connect(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT_S), None
        except (OSError, TimeoutError) as error:
            raise VolsrError(f"cannot reach the Dask scheduler at {scheduler!r}: {error}") from None
    cluster = LocalCluster(
        n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster), cluster


def run_distributed(
    job: WorkerJob,
    tasks: Iterable[int],
    on_done: Callable[[int], None],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
) -> None:
    """Run ``tasks`` on a cluster: ``scheduler`` (an address) or a new local one of ``workers``.

    Parameters
    ----------
    job : WorkerJob
        Sent once to every worker.
    tasks : iterable of int
        Task indices still to run (consumed lazily, a few per worker at a time).
    on_done : callable ``(index) -> None``
        Called on the client for each finished task (manifest, progress).
    workers : int, optional
        Start a ``LocalCluster`` of this many single-threaded worker processes.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).

    Returns
    -------
    None

    Raises
    ------
    VolsrError
        If the scheduler cannot be reached.
    OSError
        If a worker cannot write the store (re-raised from the worker).

    Examples
    --------
    >>> run_distributed(None, [], print, scheduler="tcp://127.0.0.1:1")  # doctest: +SKIP
    """
    from dask.distributed import as_completed

    client, cluster = _connect(workers, scheduler)
    try:
        count = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        per_worker = max(1, (os.cpu_count() or 1) // count)
        job = dataclasses.replace(job, threads=per_worker)
        shared = client.scatter(job, broadcast=True)
        # A bounded window of futures, refilled as they finish: the client holds a few
        # tasks per worker, not one future per task of the volume.
        order = iter(tasks)
        window = [client.submit(_run_on_worker, shared, n, pure=False) for n in itertools.islice(order, 2 * count)]
        pending = as_completed(window)
        del window
        try:
            for future in pending:
                on_done(future.result())
                following = next(order, None)
                if following is not None:
                    pending.add(client.submit(_run_on_worker, shared, following, pure=False))
        except BaseException:
            client.cancel(list(pending.futures))
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
