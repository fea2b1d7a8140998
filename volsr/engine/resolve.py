"""Argument checks shared by the engine's entry points: model, scale, device."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from volsr.geometry import integer_factors, per_axis, scale_for_target_spacing
from volsr.models import create_model
from volsr.models.ensemble import SelfEnsemble
from volsr.models.files import is_model_file, register_model_file
from volsr.models.registry import ModelCard
from volsr.volume import Volume

__all__ = [
    "resolve_model", "resolve_factors", "check_supported", "resolve_device", "with_self_ensemble",
    "ClampedBelow", "with_floor", "input_mismatch", "check_input",
]


def resolve_model(model: str | nn.Module) -> nn.Module:
    """A registry name or a module with a :class:`ModelCard` ``card``, as a module.

    Parameters
    ----------
    model : str or torch.nn.Module
        Registry name, a weights file (``PATH.safetensors`` with its JSON sidecar, e.g. an
        export of ``volsr train``; :func:`volsr.models.files.register_model_file`), or any
        module with a ``card`` attribute ("bring your own network").

    Returns
    -------
    torch.nn.Module
        The module (a new one for a name; the same object otherwise).

    Raises
    ------
    TypeError
        If ``model`` is neither.
    KeyError
        If no registered model has that name.
    FileNotFoundError, ValueError
        If a weights file or its sidecar is missing or invalid.

    Examples
    --------
    >>> resolve_model("linear").card.halo
    1
    """
    return _resolve_model(model)


def with_self_ensemble(
    net: nn.Module, factors: Sequence[float], self_ensemble: bool | None
) -> nn.Module:
    """The model as the engine runs it: alone, or averaged over its input's symmetries.

    Parameters
    ----------
    net : torch.nn.Module
        With a ``card``.
    factors : (D,) sequence of float
        Per-axis factors of the run (:func:`volsr.models.ensemble.symmetries`).
    self_ensemble : bool or None
        Wrap in a :class:`~volsr.models.ensemble.SelfEnsemble`; None: as the card says
        (``card.self_ensemble``).

    Returns
    -------
    torch.nn.Module
        ``net`` itself, or a ``SelfEnsemble`` holding it (same ``card``).

    Raises
    ------
    TypeError
        If ``self_ensemble`` is neither a bool nor None.

    Examples
    --------
    >>> type(with_self_ensemble(resolve_model("linear"), (2.0, 2.0), True)).__name__
    'SelfEnsemble'
    >>> type(with_self_ensemble(resolve_model("linear"), (2.0, 2.0), None)).__name__
    'SeparableInterpolation'
    """
    if self_ensemble is not None and not isinstance(self_ensemble, bool):
        raise TypeError(f"self_ensemble must be True, False or None, got {self_ensemble!r}")
    wanted = net.card.self_ensemble if self_ensemble is None else self_ensemble
    return SelfEnsemble(net, factors) if wanted else net


def resolve_factors(
    volume: Volume,
    scale: float | Sequence[float] | None,
    target_spacing: float | Sequence[float] | None,
) -> tuple[float, ...]:
    """Per-spatial-axis factors from exactly one of ``scale`` and ``target_spacing``.

    Parameters
    ----------
    volume : Volume
        Supplies the number of spatial axes and the spacing (mm).
    scale : float or (D,) sequence of float, optional
        Factor per axis (one number for all).
    target_spacing : float or (D,) sequence of float, optional
        Wanted voxel size per axis (mm).

    Returns
    -------
    tuple of float

    Raises
    ------
    ValueError
        If both or neither are given, or a value is not finite and positive.
    TypeError
        If a value is not a number.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((2, 2, 2)), np.diag([1, 1, 3, 1]), ("i", "j", "k"))
    >>> resolve_factors(v, None, 1.0)
    (1.0, 1.0, 3.0)
    """
    return _factors(volume, scale, target_spacing)


def check_supported(card: ModelCard, factors: tuple[float, ...], *, force: bool = False) -> None:
    """Refuse factors outside the card's ``scale_range`` or non-integer for integer models.

    Parameters
    ----------
    card : ModelCard
        The model's facts.
    factors : tuple of float
        Per-axis factors.
    force : bool
        Allow factors outside ``scale_range`` with a ``UserWarning`` instead (the model
        was not trained there); non-integer factors of an integer model stay refused.

    Returns
    -------
    None

    Raises
    ------
    ValueError
        If a factor is not supported; the message gives the range (and suggests ``--force``).

    Examples
    --------
    >>> from volsr.models import get_card
    >>> check_supported(get_card("cubic"), (1.0, 1.0, 3.3))
    """
    _check_supported(card, factors, force=force)


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from its name, checking that CUDA exists when asked for.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the name is not a device or CUDA is unavailable.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    return _resolve_device(device)


def _resolve_model(model: str | nn.Module) -> nn.Module:
    if isinstance(model, str):
        return create_model(register_model_file(model).name if is_model_file(model) else model)
    if isinstance(model, nn.Module) and isinstance(getattr(model, "card", None), ModelCard):
        return model
    raise TypeError(
        f"model must be a registry name or an nn.Module with a ModelCard `card`, got {model!r}"
    )


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
        return per_axis(scale, ndim, "scale")
    target = per_axis(target_spacing, ndim, "target_spacing")
    return scale_for_target_spacing(volume.spacing.tolist(), target)


def _check_supported(card: ModelCard, factors: tuple[float, ...], *, force: bool = False) -> None:
    low, high = card.scale_range
    shown = tuple(round(f, 6) for f in factors)
    if not all(low - 1e-9 <= f <= high + 1e-9 for f in factors):
        message = f"model {card.name!r} supports per-axis scales in [{low}, {high}], got scale {shown}"
        if not force:
            raise ValueError(f"{message} (force it with --force / force=True at your own risk)")
        # stacklevel 4: past this helper, check_supported and the engine entry point.
        warnings.warn(f"{message}: running anyway (force)", UserWarning, stacklevel=4)
    if card.scales == "integer" and not integer_factors(factors):
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


class ClampedBelow(nn.Module):
    """A model whose outputs are clamped below at ``floor`` (same ``card``).

    Parameters
    ----------
    model : torch.nn.Module
        Follows the engine's ``forward(x, positions)`` contract; its ``card`` is kept.
    floor : float
        Lowest output value, in the model's (scaled) units: the engine multiplies the
        outputs back by the input scale, so in the volume's units the floor is
        ``floor * input_scale``.

    Examples
    --------
    >>> from volsr.geometry import output_coordinates
    >>> net = ClampedBelow(resolve_model("cubic"), 0.0)
    >>> x = torch.tensor([[[[0.0, 0.0, 1.0, 1.0]] * 2]])  # a step edge: cubic undershoots
    >>> grid = (output_coordinates(2, 2), output_coordinates(4, 8))
    >>> float(net.model(x, grid).min()) < 0.0, float(net(x, grid).min())
    (True, 0.0)
    """

    def __init__(self, model: nn.Module, floor: float) -> None:
        super().__init__()
        self.model, self.floor = model, float(floor)
        if getattr(model, "card", None) is not None:
            self.card = model.card
        if hasattr(model, "extra_outputs"):
            self.extra_outputs = model.extra_outputs

    def forward(self, x: torch.Tensor, positions: Sequence) -> torch.Tensor:
        """``model(x, positions)`` clamped below at ``floor`` (same shape)."""
        return self.model(x, positions).clamp_min(self.floor)


def with_floor(net: nn.Module, floor: float | None) -> nn.Module:
    """``net`` clamped below at ``floor`` (:class:`ClampedBelow`), or itself when None.

    Parameters
    ----------
    net : torch.nn.Module
        With a ``card``.
    floor : float or None
        From :func:`volsr.engine.normalise.output_floor`.

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> type(with_floor(resolve_model("linear"), None)).__name__
    'SeparableInterpolation'
    """
    return net if floor is None else ClampedBelow(net, floor)


def input_mismatch(card: ModelCard, volume: Volume) -> str | None:
    """Why a network cannot take ``volume``'s layout, or None when it can.

    MRI networks (``modality == "mri"``) take single-channel volumes with 3 spatial axes;
    HSI networks take cubes with a band axis and 2 spatial axes. Interpolation takes any.

    Parameters
    ----------
    card : ModelCard
        The model's card.
    volume : Volume
        The input (only its axes are looked at).

    Returns
    -------
    str or None
        A phrase for an error message, e.g. ``"takes single-channel 3-D volumes"`` ...

    Examples
    --------
    >>> import numpy as np
    >>> from volsr.models import get_card
    >>> image = Volume(np.zeros((4, 4)), np.eye(4), ("i", "j"))
    >>> input_mismatch(get_card("linear"), image) is None
    True
    >>> input_mismatch(get_card("meta_srgan.t1"), image)
    "takes single-channel 3-D volumes; this input has 2 spatial axes (axes ('i', 'j'))"
    """
    spatial = len(volume.spatial_axes)
    other = [a for n, a in enumerate(volume.axes) if n not in volume.spatial_axes]
    if card.kind != "network":
        return None
    if card.modality == "mri" and (spatial != 3 or other):
        extra = f" and a {other[0]!r} axis" if other else ""
        return (f"takes single-channel 3-D volumes; this input has {spatial} spatial axes{extra} "
                f"(axes {volume.axes})")
    if card.modality == "hsi" and (spatial != 2 or volume.band_axis is None):
        return (f"takes spectral cubes (2 spatial axes and a band axis); this input has axes "
                f"{volume.axes}")
    return None


def check_input(card: ModelCard, volume: Volume) -> None:
    """Refuse a ``volume`` the model cannot take (:func:`input_mismatch`).

    Parameters
    ----------
    card : ModelCard
    volume : Volume

    Returns
    -------
    None

    Raises
    ------
    ValueError
        Naming the model, what it takes, and the interpolation models that take anything.

    Examples
    --------
    >>> import numpy as np
    >>> from volsr.models import get_card
    >>> check_input(get_card("cubic"), Volume(np.zeros((4, 4)), np.eye(4), ("i", "j")))
    """
    why = input_mismatch(card, volume)
    if why is not None:
        raise ValueError(f"model {card.name} {why}; an interpolation model (--model cubic) "
                         "takes any layout")
