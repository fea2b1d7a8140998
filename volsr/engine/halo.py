"""Halo self-check: is a model's declared halo at least its real receptive field?

A tile in the middle of a random volume, computed by the engine with the declared halo,
is compared with one whole-volume forward pass (all the context there is). If the halo is
too small, context beyond it changes the outputs and the two differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from volsr.engine.execute import run_task
from volsr.engine.plan import make_plan, model_halos
from volsr.engine.resolve import check_supported, resolve_device, resolve_model
from volsr.errors import VolsrError
from volsr.geometry import output_coordinates, resampled_shape

__all__ = ["check_halo"]


def check_halo(
    model: str | nn.Module,
    *,
    scale: Sequence[float],
    channels: int = 1,
    tolerance: float = 1e-4,
    rng: np.random.Generator | None = None,
    device: str | torch.device = "cpu",
) -> float:
    """Check a model's declared halo against a whole-volume pass on random data.

    Parameters
    ----------
    model : str or torch.nn.Module
        Registry name or a module with a ``card``.
    scale : (D,) sequence of float
        Per-axis factor to test at (D = 2 or 3 spatial axes).
    channels : int
        Input channels of the random volume.
    tolerance : float
        Largest allowed difference (the data lie in [0, 1)).
    rng : numpy.random.Generator, optional
        Source of the random volume (default ``np.random.default_rng(0)``).
    device : str or torch.device
        Where the model runs.

    Returns
    -------
    float
        Max abs difference between the tile and the whole-volume pass.

    Raises
    ------
    VolsrError
        If the difference exceeds ``tolerance``: the halo is smaller than the receptive field.
    ValueError
        If the scale is not supported by the model.

    Examples
    --------
    >>> check_halo("linear", scale=(2.0, 2.0, 1.5)) < 1e-6
    True
    """
    net = resolve_model(model)
    factors = tuple(float(f) for f in scale)
    check_supported(net.card, factors)
    where = resolve_device(device)
    rng = np.random.default_rng(0) if rng is None else rng
    out_halo, in_halo = model_halos(net.card)
    # Room for twice the halo on each side of a 3-voxel centre, so a too-small halo shows.
    shape_in = tuple(2 * (in_halo + math.ceil(out_halo / f) + 4) + 3 for f in factors)
    shape_out = resampled_shape(shape_in, factors)
    volume = rng.random((channels, *shape_in), dtype=np.float32)
    was_training = net.training
    net.eval().to(where)
    try:
        with torch.inference_mode():
            positions = tuple(output_coordinates(n, m) for n, m in zip(shape_in, shape_out, strict=True))
            whole = net(torch.from_numpy(volume)[None].to(where), positions)[0].cpu().numpy()
        region = tuple((m // 2 - 1, m // 2 + 2) for m in shape_out)
        plan = make_plan(net.card, shape_in, shape_out, chunks=shape_out, tile=shape_out)
        box = plan.source_box(plan.tiles(region))
        block = volume[(slice(None), *(slice(a, b) for a, b in box))]
        tile = run_task(net, plan, region, np.ascontiguousarray(block), box, device=where)
    finally:
        net.train(was_training)
    expected = whole[(slice(None), *(slice(a, b) for a, b in region))]
    difference = float(np.abs(tile - expected).max())
    if difference > tolerance:
        raise VolsrError(
            f"model {net.card.name!r} declares halo {net.card.halo} ({net.card.grid} grid) but its "
            f"receptive field is larger: a tile differs from a whole-volume pass by {difference:.3g}"
        )
    return difference
