"""Memory layout of a network's convolutions: channels-first or channels-last.

oneDNN (CPU) and cuDNN run many convolutions faster on channels-last tensors (NDHWC), and
a convolution follows the layout of its weight, so converting a model's 4-D / 5-D
parameters is enough. Whether it pays depends on the network (measured on 2 CPU cores
with :func:`time_layouts`: a plain 5-layer 32-channel 3-D CNN 1.2-1.4x faster; the shipped
densely connected networks within the timing noise), so it is a property a model
declares on its card (``ModelCard.layout``, default channels-first) and a run may
override (``--layout``). It is fixed before a run starts and recorded with its options:
the layouts agree only up to float rounding, and a resumed run must stay bit-identical.
Timing it at run time instead cost 3-16 s per run for the shipped networks and flipped
between runs on a shared machine.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from volsr.engine.plan import Plan

__all__ = ["LAYOUTS", "apply_layout", "time_layouts"]

#: The two layouts: ``contiguous`` (NCDHW, PyTorch's default) and ``channels_last`` (NDHWC).
LAYOUTS = ("contiguous", "channels_last")

_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def apply_layout(net: nn.Module, layout: str) -> nn.Module:
    """Convert ``net``'s 4-D and 5-D parameters to ``layout`` in place.

    Parameters
    ----------
    net : torch.nn.Module
        Any module (one the caller owns: its parameters are replaced).
    layout : {"contiguous", "channels_last"}
        Target layout (``channels_last`` means NHWC for 4-D, NDHWC for 5-D weights).

    Returns
    -------
    torch.nn.Module
        ``net`` itself.

    Raises
    ------
    ValueError
        If ``layout`` is not one of :data:`LAYOUTS`.

    Examples
    --------
    >>> conv = apply_layout(nn.Conv3d(2, 4, 3), "channels_last")
    >>> conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    True
    >>> apply_layout(conv, "contiguous").weight.is_contiguous()
    True
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    for parameter in net.parameters():
        if parameter.dim() in _FORMATS:
            fmt = _FORMATS[parameter.dim()] if layout == "channels_last" else torch.contiguous_format
            parameter.data = parameter.data.contiguous(memory_format=fmt)
    return net


def time_layouts(
    net: nn.Module, plan: Plan, channels: int, device: torch.device, *, repeats: int = 2
) -> dict[str, float]:
    """Seconds of one forward pass of a central tile in each layout (best of ``repeats``).

    For choosing the ``layout`` a model declares on its card; the engine never times.

    Parameters
    ----------
    net : torch.nn.Module
        Eval mode, on ``device``; left in the contiguous layout.
    plan : Plan
        A plan of the model (the probe is the tile of one chunk at the centre of the output).
    channels : int
        Input channels.
    device : torch.device
        Where the model runs.
    repeats : int
        Timed passes per layout, interleaved (the first of each also warms it up).

    Returns
    -------
    dict
        ``{"contiguous": seconds, "channels_last": seconds}``.

    Raises
    ------
    ValueError
        If ``repeats`` is below 1.

    Examples
    --------
    >>> from volsr.engine.plan import make_plan
    >>> from volsr.models import create_model
    >>> net = create_model("linear")
    >>> plan = make_plan(net.card, (4, 4), (8, 8), chunks=(8, 8), tile=(8, 8))
    >>> sorted(time_layouts(net, plan, 1, torch.device("cpu")))
    ['channels_last', 'contiguous']
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    tile = plan.central_tile([min(c, t) for c, t in zip(plan.chunks, plan.tile, strict=True)])
    x = torch.rand((1, channels, *(b - a for a, b in tile.source)), device=device)
    positions = plan.positions(tile)
    best = {layout: float("inf") for layout in LAYOUTS}
    with torch.inference_mode():
        for _ in range(repeats):
            for layout in LAYOUTS:
                apply_layout(net, layout)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                net(x, positions)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best[layout] = min(best[layout], time.perf_counter() - start)
    apply_layout(net, "contiguous")
    return best
