"""Whole-volume upsampling: the public entry point, stable while its internals change.

For now the volume is read once into memory (float32) and the model runs slab by slab
along the first spatial axis, each slab reading its input window plus the model's halo,
so that peak memory is about input + output plus one slab. The tiled out-of-core engine
(output-driven tiles, disk-backed output) replaces this path behind the same signature.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import dask.array as da
import numpy as np
import torch
from torch import nn

from volsr.geometry import (
    input_window,
    output_coordinates,
    resampled_affine,
    resampled_shape,
    scale_for_target_spacing,
)
from volsr.models import create_model
from volsr.models.registry import ModelCard
from volsr.resample import INTERPOLATION_METHODS
from volsr.volume import Volume

__all__ = ["upsample"]

#: Output bytes per slab: bounds the working memory beyond input + output.
_SLAB_BYTES = 64 * 2**20


def upsample(
    volume: Volume,
    *,
    scale: float | Sequence[float] | None = None,
    target_spacing: float | Sequence[float] | None = None,
    model: str | nn.Module = "cubic",
    device: str | torch.device = "cpu",
) -> Volume:
    """Upsample the spatial axes of a volume, keeping its field of view.

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
        module is switched to eval mode for the call and moved to ``device``.
    device : str or torch.device
        Where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns
    -------
    Volume
        float32 data (a dask array) of spatial shape ``geometry.resampled_shape``; affine
        ``geometry.resampled_affine``; axes, wavelengths, fwhm and meta kept.

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
    net = _resolve_model(model)
    factors = _factors(volume, scale, target_spacing)
    _check_supported(net.card, factors)
    where = _resolve_device(device)
    shape_out = resampled_shape(volume.spatial_shape, factors)
    was_training = net.training
    net.eval().to(where)
    try:
        with torch.inference_mode():
            result = _run_slabs(net, volume, shape_out, where)
    finally:
        net.train(was_training)
    return volume.replace(
        data=da.from_array(result, chunks="auto"),
        affine=resampled_affine(volume.affine, volume.spatial_shape, shape_out),
    )


def _resolve_model(model: str | nn.Module) -> nn.Module:
    if isinstance(model, str):
        return create_model(model)
    if isinstance(model, nn.Module) and isinstance(getattr(model, "card", None), ModelCard):
        return model
    raise TypeError(
        f"model must be a registry name or an nn.Module with a ModelCard `card`, got {model!r}"
    )


def _per_axis(values: float | Sequence[float], ndim: int, name: str) -> tuple[float, ...]:
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = (float(values),) * ndim
    try:
        if isinstance(values, (str, bytes)):
            raise TypeError
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a number or a sequence of numbers, got {values!r}"
        ) from None
    if len(result) != ndim:
        raise ValueError(f"{name} needs {ndim} values (one per spatial axis), got {result}")
    if not all(math.isfinite(v) and v > 0 for v in result):
        raise ValueError(f"{name} must be finite and > 0, got {result}")
    return result


def _factors(
    volume: Volume,
    scale: float | Sequence[float] | None,
    target_spacing: float | Sequence[float] | None,
) -> tuple[float, ...]:
    if (scale is None) == (target_spacing is None):
        raise ValueError(
            f"give exactly one of scale and target_spacing, got scale={scale!r}, "
            f"target_spacing={target_spacing!r}"
        )
    ndim = len(volume.spatial_axes)
    if scale is not None:
        return _per_axis(scale, ndim, "scale")
    target = _per_axis(target_spacing, ndim, "target_spacing")
    return scale_for_target_spacing(volume.spacing.tolist(), target)


def _check_supported(card: ModelCard, factors: tuple[float, ...]) -> None:
    low, high = card.scale_range
    shown = tuple(round(f, 6) for f in factors)
    if not all(low - 1e-9 <= f <= high + 1e-9 for f in factors):
        raise ValueError(
            f"model {card.name!r} supports per-axis scales in [{low}, {high}], got scale {shown}"
        )
    if card.scales == "integer" and not all(abs(f - round(f)) < 1e-9 for f in factors):
        raise ValueError(
            f"model {card.name!r} supports integer per-axis scales in [{low}, {high}] only, "
            f"got scale {shown}"
        )


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must name a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return where


def _input_halo(card: ModelCard, n_in: int, n_out: int) -> int:
    if card.grid == "lr":
        return card.halo
    # An "hr" model interpolates inside forward, then reads `halo` output voxels: convert
    # them to input voxels and add the widest interpolation support.
    return math.ceil(card.halo * n_in / n_out) + max(INTERPOLATION_METHODS.values())


def _run_slabs(
    net: nn.Module, volume: Volume, shape_out: tuple[int, ...], where: torch.device
) -> np.ndarray:
    spatial = volume.spatial_axes
    other = [n for n in range(volume.ndim) if n not in spatial]
    shape = list(volume.shape)
    for axis, size in zip(spatial, shape_out, strict=True):
        shape[axis] = size
    result = np.empty(shape, dtype=np.float32)
    source = np.asarray(volume.data.astype(np.float32).compute())
    # (C, *spatial) views; writes into `target` land in `result`.
    order = other + list(spatial)
    source = source.transpose(order) if other else source[None]
    target = result.transpose(order) if other else result[None]
    n_in, n_out = volume.spatial_shape[0], shape_out[0]
    first = output_coordinates(n_in, n_out)
    rest = [
        output_coordinates(i, o)
        for i, o in zip(volume.spatial_shape[1:], shape_out[1:], strict=True)
    ]
    halo = _input_halo(net.card, n_in, n_out)
    rows = max(1, _SLAB_BYTES // (4 * target[:, 0].size))
    for start in range(0, n_out, rows):
        stop = min(start + rows, n_out)
        lo, hi = input_window(start, stop, n_in, n_out, halo=halo)
        slab = torch.from_numpy(np.ascontiguousarray(source[:, lo:hi]))[None].to(where)
        output = net(slab, (first[start:stop] - lo, *rest))
        target[:, start:stop] = output[0].to("cpu", torch.float32).numpy()
    return result
