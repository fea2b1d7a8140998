"""Model registry: names to factories, with each model's card (what the engine needs to know)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Literal

from torch import nn

__all__ = ["ModelCard", "register_model", "register_lazily", "create_model", "get_card", "list_models",
           "SHIPPED_OUTPUT_FLOOR"]


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Facts about a registered model, in one place.

    Parameters
    ----------
    name : str
        Registry name (``arch`` or ``arch.tag`` for a weight variant).
    kind : {"interpolation", "network"}
        Interpolation baselines and trained networks share one registry.
    grid : {"lr", "hr"}
        ``lr``: the model reads the low-resolution grid; ``hr``: it reads the input
        interpolated onto the output grid (it does that itself inside ``forward``).
    halo : int
        Receptive-field radius in voxels of the grid it reads: a tile with this many extra
        voxels on each side gives exact outputs.
    scales : {"integer", "real"}
        Whether per-axis factors must be integers.
    scale_range : tuple of float
        Smallest and largest per-axis factor supported.
    modality : {"any", "mri", "hsi"}
        The data the model is meant for.
    description : str
        One line for ``volsr models``.
    weights : str or None
        File name of shipped weights (safetensors) inside ``volsr/models/weights``.
    input_scaling : {"none", "p99.9", "max"}
        ``p99.9`` (``max``): the caller divides the whole input volume by its 99.9th
        percentile (its maximum) (computed once per volume, never per tile) before
        ``forward`` and multiplies the output back; the network was trained on inputs
        scaled so.
    input_peak : float
        What the statistic is mapped to: the engine divides the input by
        ``statistic / input_peak``. 1.0 unless training inputs peaked elsewhere: an HSI
        network trained on LR cubes of cubes divided by their maximum saw LR maxima around
        0.75 at x4 (blur lowers the peak), so an LR input's maximum is mapped there.
    layout : {"contiguous", "channels_last"}
        Memory layout the engine runs the model's convolutions in (its 4-D/5-D weights are
        converted; :mod:`volsr.engine.layout`): declare ``channels_last`` when
        :func:`volsr.engine.layout.time_layouts` measures it faster.
    self_ensemble : bool
        The engine runs the model as a :class:`volsr.models.ensemble.SelfEnsemble` (the
        mean over flips and axis swaps of its input) unless told not to: declare it for a
        network trained with flip and rotation augmentation whose card shows the gain.
    calibration : str, tuple of str, or None
        File name(s) of the model's uncertainty calibrations inside
        ``volsr/models/calibration`` (:class:`volsr.uncertainty.Calibration`, JSON), at most
        one per modality (each file says which: MRI volumes or spectral cubes); None:
        ``--uncertainty`` is refused, as it is for an input whose modality no file covers.
    output_floor : float or None
        The engine clamps the outputs below at this value (in the card's scaled units, so a
        fraction of the input scale) when the whole input has no negative voxel; None (the
        default, and any module you bring) runs the model exactly as written. The shipped
        networks declare :data:`SHIPPED_OUTPUT_FLOOR`.
    """

    name: str
    kind: Literal["interpolation", "network"]
    grid: Literal["lr", "hr"]
    halo: int
    scales: Literal["integer", "real"]
    scale_range: tuple[float, float]
    modality: Literal["any", "mri", "hsi"]
    description: str
    weights: str | None = None
    input_scaling: Literal["none", "p99.9", "max"] = "none"
    input_peak: float = 1.0
    layout: Literal["contiguous", "channels_last"] = "contiguous"
    self_ensemble: bool = False
    output_floor: float | None = None
    calibration: str | tuple[str, ...] | None = None


#: The output floor of the shipped networks (:attr:`ModelCard.output_floor`): -2 % of the input
#: scale. Deeper undershoot at sharp edges (ringing; ``meta_srgan.t1`` reached -35 % of the
#: maximum on a 2 mm IXI brain) is a value non-negative data cannot hold; small negative
#: values are kept, since a floor at 0 biases the local means of a noisy background upwards
#: (thick-slice x4 on ICBM152: a floor at 0 gave +0.06 dB PSNR but -0.0007 SSIM; -2 %:
#: +0.03 dB and +0.0002).
SHIPPED_OUTPUT_FLOOR = -0.02

_REGISTRY: dict[str, tuple[ModelCard, Callable[[], nn.Module]]] = {}
#: Registrations that read files, run once at the first lookup (importing volsr reads nothing).
_PENDING: list[Callable[[], None]] = []


def register_lazily(registration: Callable[[], None]) -> None:
    """Run ``registration`` (which calls :func:`register_model`) at the registry's first lookup.

    Parameters
    ----------
    registration : callable
        No arguments; registers models (e.g. every shipped weights file, reading its sidecar).

    Examples
    --------
    >>> register_lazily(lambda: None)  # runs at the next get_card / create_model / list_models
    """
    _PENDING.append(registration)


def _load_pending() -> None:
    while _PENDING:
        _PENDING.pop(0)()


def register_model(card: ModelCard) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator registering a zero-argument factory under ``card.name``.

    Parameters
    ----------
    card : ModelCard
        The model's facts.

    Returns
    -------
    callable
        The decorator (returns the factory unchanged).

    Raises
    ------
    ValueError
        If the name is already registered.

    Examples
    --------
    >>> "cubic" in [c.name for c in list_models()]  # doctest: +SKIP
    True
    """

    def decorate(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if card.name in _REGISTRY:
            raise ValueError(f"model {card.name!r} is already registered")
        _REGISTRY[card.name] = (card, factory)
        return factory

    return decorate


def _lookup(name: str) -> tuple[ModelCard, Callable[[], nn.Module]]:
    _load_pending()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def get_card(name: str) -> ModelCard:
    """The card of a registered model.

    Parameters
    ----------
    name : str
        Registry name.

    Returns
    -------
    ModelCard

    Raises
    ------
    KeyError
        If unknown; the message lists the closest names.

    Examples
    --------
    >>> get_card("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    KeyError: "unknown model 'no-such-model'..."
    """
    return _lookup(name)[0]


def create_model(name: str) -> nn.Module:
    """Build a registered model (with its shipped weights, if any), in eval mode.

    Parameters
    ----------
    name : str
        Registry name.

    Returns
    -------
    torch.nn.Module
        The model; ``model.card`` holds its :class:`ModelCard`.

    Raises
    ------
    KeyError
        If unknown; the message lists the closest names.

    Examples
    --------
    >>> create_model("cubic").card.halo  # doctest: +SKIP
    14
    """
    card, factory = _lookup(name)
    model = factory()
    model.card = card
    return model.eval()


def list_models() -> list[ModelCard]:
    """Cards of every registered model, sorted by name.

    Returns
    -------
    list of ModelCard

    Examples
    --------
    >>> isinstance(list_models(), list)
    True
    """
    _load_pending()
    return [card for _, (card, _) in sorted(_REGISTRY.items())]
