"""The trained networks in one table: each architecture's card facts, the default order, one
registration path, and the shipped weights registered lazily (nothing read at import).

timm-style: an architecture (:data:`ARCHITECTURES`) says what the engine needs to know of any
weights of it (grid, halo, scales, modality, input scaling, self-ensemble); a shipped file
``volsr/models/weights/<arch>_<tag>.safetensors`` with its JSON sidecar adds the rest (name,
config, description, trained range), its card lives in ``volsr/models/cards/<name>.md`` and
its uncertainty calibration, if any, in ``volsr/models/calibration/<arch>_<tag>.json``.
:func:`register_network` is the one path from weights to a registered model: shipped files
(:func:`register_shipped`, run by the registry at its first lookup), files given as
``--model PATH`` (:mod:`volsr.models.files`) and tests alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import nn

from volsr.models.attn1d2d import Attn1D2D
from volsr.models.mdcsrn import MDCSRN, MDCSRNUpsampler
from volsr.models.meta_srgan import FACTOR_LIMITS, MetaSRGAN
from volsr.models.registry import SHIPPED_OUTPUT_FLOOR, ModelCard, register_model
from volsr.models.trust import CALIBRATION_DIR
from volsr.models.weights import load_weights, shipped_weights, weights_path

__all__ = ["Architecture", "ARCHITECTURES", "DEFAULTS", "register_network", "register_shipped"]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What every set of weights of one network class shares on its card.

    Parameters
    ----------
    network : type
        The ``nn.Module`` class; its constructor takes the sidecar's ``config``.
    grid, scales, modality, input_scaling : str
        :class:`~volsr.models.registry.ModelCard` fields.
    halo : callable
        ``halo(network) -> int``: the receptive radius in voxels of the grid it reads.
    limits : (2,) tuple of float, optional
        Bounds a trained ``scale_range`` must lie in (``low > 0`` always); None: the range is
        the network's own integer ``scale`` (``(scale, scale)``).
    self_ensemble : bool
        The card's default for the self-ensemble.
    wrap : callable, optional
        Turns the loaded network into what the engine runs (e.g. an HR-grid upsampler).
    """

    network: type[nn.Module]
    grid: str
    scales: str
    modality: str
    input_scaling: str
    halo: Callable[[nn.Module], int]
    limits: tuple[float, float] | None
    self_ensemble: bool = False
    wrap: Callable[[nn.Module], nn.Module] | None = None


#: Architecture name (the registry names' prefix, ``arch.tag``) -> its card facts.
ARCHITECTURES: dict[str, Architecture] = {
    "meta_srgan": Architecture(MetaSRGAN, "lr", "real", "mri", "p99.9", halo=lambda net: net.halo,
                               limits=FACTOR_LIMITS),
    "mdcsrn": Architecture(MDCSRN, "hr", "real", "mri", "p99.9", halo=lambda net: net.receptive_radius,
                           limits=(0.0, math.inf), wrap=MDCSRNUpsampler),
    # Training flips and rotates rows and columns: the mean over the 8 symmetries gained
    # 0.01-0.07 dB and 1-5 % lower SAM (bench/hsi_quality.py), so the cards turn it on.
    "attn1d2d": Architecture(Attn1D2D, "lr", "integer", "hsi", "max", halo=lambda net: net.halo, limits=None,
                             self_ensemble=True),
}

#: Preference order for the default model: the first one registered (and supporting the
#: run's factors) wins. Trained networks go in front of the baselines as their weights ship,
#: in the order of their measured quality (``bench/mri_quality.py``: the shipped Meta-SRGAN
#: beats the shipped mDCSRN at every thick-slice factor from 1.5 to 5). An entry ending in
#: "." is a name prefix: the first registered name (sorted) starting with it.
DEFAULTS = {"mri": ("meta_srgan.t1", "meta_srgan.", "mdcsrn.t1", "mdcsrn.", "cubic"),
            "hsi": ("attn1d2d.x2", "attn1d2d.x3", "attn1d2d.x4", "bicubic")}


def register_network(
    name: str,
    arch: str,
    *,
    weights: str | Path,
    config: Mapping[str, object],
    description: str,
    scale_range: tuple[float, float] | None = None,
    calibration: str | None = None,
    input_peak: float = 1.0,
) -> ModelCard:
    """Register trained weights of one architecture as a model (the weights load when it is created).

    Parameters
    ----------
    name : str
        Registry name, ``ARCH.TAG`` (or ``file:PATH`` for a file given on the command line).
    arch : str
        A key of :data:`ARCHITECTURES`.
    weights : str or Path
        A file name shipped in ``volsr/models/weights``, or a path to a weights file elsewhere
        (:func:`~volsr.models.weights.weights_path`).
    config : mapping
        The network's constructor arguments the weights were trained with.
    description : str
        One line for ``volsr models``.
    scale_range : (2,) tuple of float, optional
        Trained per-axis factors, within the architecture's limits (ignored where the
        network fixes its own scale).
    calibration : str, optional
        File name of its uncertainty calibration in ``volsr/models/calibration``; None: no
        ``--uncertainty``.
    input_peak : float
        The card's ``input_peak`` (what the input statistic is mapped to).

    Returns
    -------
    ModelCard
        The architecture's facts, this file's name, range, description and calibration.

    Raises
    ------
    FileNotFoundError
        If the weights file is missing.
    KeyError
        If ``arch`` is unknown.
    ValueError, TypeError
        If ``config`` does not fit the network, the name is taken, or ``scale_range`` lies
        outside the architecture's limits.

    Examples
    --------
    >>> register_network("meta_srgan.none", "meta_srgan", weights="none.safetensors", config={},
    ...                  description="", scale_range=(1.0, 6.0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """
    spec = ARCHITECTURES[arch]
    path = weights_path(weights)
    settings = dict(config)
    probe = spec.network(**settings)  # validates the configuration now
    if spec.limits is None:
        low = high = float(probe.scale)
    else:
        low, high = (float(v) for v in (scale_range or (math.nan, math.nan)))
        bottom, top = spec.limits
        if not (0 < low <= high and bottom <= low and high <= top):
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high within [{bottom:g}, {top:g}], "
                             f"got {scale_range}")  # fmt: skip
    card = ModelCard(name=name, kind="network", grid=spec.grid, halo=spec.halo(probe), scales=spec.scales,
                     scale_range=(low, high), modality=spec.modality, description=description, weights=path.name,
                     input_scaling=spec.input_scaling, input_peak=input_peak, self_ensemble=spec.self_ensemble,
                     output_floor=SHIPPED_OUTPUT_FLOOR, calibration=calibration)  # fmt: skip

    def factory() -> nn.Module:
        network = load_weights(spec.network(**settings), path)
        return network if spec.wrap is None else spec.wrap(network)

    register_model(card)(factory)
    return card


def register_shipped() -> None:
    """Register every shipped weights file of every architecture (``<arch>*.safetensors``).

    Run by the registry at its first lookup (:func:`volsr.models.registry.register_lazily`),
    so that importing volsr reads no file.

    Raises
    ------
    ValueError
        If a shipped sidecar is invalid (a packaging error).

    Examples
    --------
    >>> from volsr.models import get_card
    >>> get_card("meta_srgan.t1").calibration
    'meta_srgan_t1.json'
    """
    for arch, spec in ARCHITECTURES.items():
        for shipped in shipped_weights(prefix=arch, factory=spec.network):
            calibration = Path(shipped.file).with_suffix(".json").name
            register_network(shipped.name, arch, weights=shipped.file, config=shipped.config,
                             description=shipped.description, scale_range=shipped.scale_range,
                             calibration=calibration if (CALIBRATION_DIR / calibration).is_file() else None,
                             input_peak=shipped.input_peak)  # fmt: skip
