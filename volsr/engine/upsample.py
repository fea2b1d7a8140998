"""Whole-volume upsampling as a lazy Volume: the engine's tasks as a dask graph.

Each output block (a slab of :data:`_SLAB_BYTES` along the first spatial axis, or several
such slabs) is one engine task: it depends on the input box its tiles need (plus the
model's halo) and runs them, each tile within the default memory budget, through the same
code as :func:`volsr.engine.upsample_to_store`. Nothing is computed
until the result is; for volumes larger than memory write with ``upsample_to_store``.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
from torch import nn

from volsr.engine.execute import channel_first, run_task
from volsr.engine.layout import apply_layout
from volsr.engine.nodata import mark_footprint, nodata_for, prepare_block, statistics_voxels, widen
from volsr.engine.normalise import input_statistics
from volsr.engine.options import EngineOptions
from volsr.engine.progress import default_budget, parse_size
from volsr.engine.resolve import (
    check_input,
    check_supported,
    resolve_device,
    resolve_factors,
    resolve_model,
    with_floor,
    with_self_ensemble,
)
from volsr.engine.sizing import plan_run
from volsr.geometry import resampled_affine, resampled_shape
from volsr.volume import Volume

__all__ = ["upsample"]

_FORWARD_LOCK = threading.Lock()

#: Output bytes per block of the lazy result.
_SLAB_BYTES = 64 * 2**20


def upsample(
    volume: Volume,
    *,
    scale: float | Sequence[float] | None = None,
    target_spacing: float | Sequence[float] | None = None,
    model: str | nn.Module = "cubic",
    options: EngineOptions | None = None,
) -> Volume:
    """Upsample the spatial axes of a volume, keeping its field of view (lazily).

    Parameters
    ----------
    volume : Volume
        2 or 3 spatial axes, optionally one ``band``/``channel`` axis (resampled per band).
    scale : float or (D,) sequence of float, optional
        Per-axis factor (> 1 is finer); a single number applies to every spatial axis.
    target_spacing : float or (D,) sequence of float, optional
        Wanted voxel size per spatial axis in mm (exactly one of ``scale`` and
        ``target_spacing`` is given).
    model : str or torch.nn.Module
        Registry name, or a module with a ``card`` attribute (a :class:`ModelCard`); a
        module is copied, and the copy runs in eval mode on ``device`` (the caller's module
        is left as it is).
    options : EngineOptions, optional
        The run options :func:`volsr.engine.upsample_to_store` takes too
        (:class:`volsr.engine.EngineOptions`); the lazy path uses ``device``, ``force``,
        ``max_memory`` (the budget of one task: the tile size inside each slab), ``layout``
        and ``self_ensemble`` (the rest describe stored runs: chunks, workers, pyramid ...).

    Returns
    -------
    Volume
        float32 data (a lazy dask array) of spatial shape ``geometry.resampled_shape``;
        affine ``geometry.resampled_affine``; axes, wavelengths, fwhm and meta kept. For a
        model with ``input_scaling`` ``"p99.9"`` (``"max"``) the input's 99.9th percentile
        (maximum) is computed here, once, by streaming over its blocks. A volume declaring
        ``meta["nodata"]`` keeps its no-data pixels: filled before the model, their output
        footprint set to the value (:mod:`volsr.engine.nodata`), left out of the statistics.

    Raises
    ------
    ValueError
        If not exactly one of ``scale``/``target_spacing`` is given, a value is not finite
        and positive, has the wrong length, or lies outside the model's ``scale_range``
        (or is not an integer for an integer-scale model); if ``device`` is unknown or
        unavailable.
    TypeError
        If ``model`` is neither a name nor a module with a ``card``.
    KeyError
        If ``model`` names no registered model.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 4, 3), np.int16), np.diag([1, 1, 3.3, 1]), ("i", "j", "k"))
    >>> out = upsample(v, target_spacing=(1, 1, 1), model="linear")
    >>> out.shape, out.dtype, out.spacing.round(3).tolist()
    ((4, 4, 10), dtype('float32'), [1.0, 1.0, 0.99])
    """
    options = EngineOptions() if options is None else options
    net = resolve_model(model)
    factors = resolve_factors(volume, scale, target_spacing)
    check_supported(net.card, factors, force=options.force)
    check_input(net.card, volume)
    where = resolve_device(options.device)
    if isinstance(model, nn.Module):
        net = copy.deepcopy(net)
    net = with_self_ensemble(net, factors, options.self_ensemble)
    net = apply_layout(net.eval().to(where), options.layout or net.card.layout)
    shape_out = resampled_shape(volume.spatial_shape, factors)
    source = channel_first(volume)
    channels = source.shape[0]
    rows = max(1, _SLAB_BYTES // (4 * channels * math.prod(shape_out[1:])))
    chunks = (rows, *shape_out[1:])
    # Tiles inside a slab as large as the default budget allows (a slab-sized tile of a
    # densely connected network needed over 10 GB).
    budget = default_budget() if options.max_memory is None else parse_size(options.max_memory)
    plan, _, _ = plan_run(net, volume, shape_out, factors, chunks, None, "exact", 0.25, budget, where)
    nodata = nodata_for(volume, plan)
    input_scale, floor = input_statistics(net.card, statistics_voxels(net.card, volume))
    net = with_floor(net, floor)

    def compute(block: np.ndarray, region: tuple, box: tuple, read: tuple) -> np.ndarray:
        if nodata is None:
            values, invalid = np.asarray(block, dtype=np.float32), None
            if input_scale != 1.0:
                values = values / np.float32(input_scale)
        else:
            values, invalid = prepare_block(np.asarray(block), read, box, nodata, divide_by=input_scale)
        # Dask runs tasks on several threads; torch already uses every core inside one
        # forward, so concurrent forwards only oversubscribe the cores (measured: most of
        # the time went to spinning threads). Reads and copies still overlap.
        with _FORWARD_LOCK:
            result = run_task(net, plan, region, values, box, device=where, multiply_by=input_scale)
        if invalid is not None:
            mark_footprint(result, invalid, box, region, plan, nodata.value)
        return result

    blocks = []
    for index in range(plan.n_tasks):
        region = plan.task_region(index)
        box = plan.source_box(plan.tiles(region))
        read = box if nodata is None else widen(box, nodata.radius, volume.spatial_shape)
        block = source[(slice(None), *(slice(a, b) for a, b in read))]
        task = dask.delayed(compute, pure=False)(block, region, box, read)
        shape = (channels, *(b - a for a, b in region))
        blocks.append(da.from_delayed(task, shape=shape, dtype=np.float32))
    result = da.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
    spatial = list(volume.spatial_axes)
    other = [n for n in range(volume.ndim) if n not in spatial]
    data = result.transpose(np.argsort(other + spatial).tolist()) if other else result[0]
    return volume.replace(
        data=data, affine=resampled_affine(volume.affine, volume.spatial_shape, shape_out)
    )
