"""Models: one registry for interpolation baselines and networks.

Importing this package registers the built-in models (``nearest``, ``linear``, ``bicubic``,
``cubic``, ``lanczos``); the shipped networks (:mod:`volsr.models.table`) register at the
registry's first lookup, so that the import reads no file.
"""

from collections.abc import Sequence

import numpy as np

from volsr.geometry import integer_factors
from volsr.models import attn1d2d, interpolation, mdcsrn, meta_srgan
from volsr.models.registry import (
    ModelCard,
    create_model,
    get_card,
    list_models,
    register_lazily,
    register_model,
)
from volsr.models.table import DEFAULTS, register_network, register_shipped

__all__ = [
    "attn1d2d",
    "ModelCard",
    "create_model",
    "default_model_name",
    "get_card",
    "interpolation",
    "mdcsrn",
    "meta_srgan",
    "list_models",
    "register_model",
    "register_network",
]

register_lazily(register_shipped)


def default_model_name(*, spectral: bool, scale: float | Sequence[float] | None = None) -> str:
    """The best registered model for volumes (MRI) or spectral cubes.

    Parameters
    ----------
    spectral : bool
        True for a cube with a band axis.
    scale : float or sequence of float, optional
        Per-axis factors of the run: a model whose card does not support them (outside its
        ``scale_range``, or not integers for an integer-scale model) is passed over, so a
        spectral cube at a factor with no shipped network gets ``"bicubic"`` (if none
        supports them, the first registered preference is returned). Thick-slice
        ``mdcsrn.*`` models are passed over when more than one factor differs from 1.

    Returns
    -------
    str
        A registry name.

    Raises
    ------
    KeyError
        If none of the preferred models is registered (a broken installation).

    Examples
    --------
    >>> default_model_name(spectral=True, scale=1.5)
    'bicubic'
    >>> default_model_name(spectral=False, scale=(1, 1, 4))  # the shipped arbitrary-scale network
    'meta_srgan.t1'
    >>> default_model_name(spectral=False, scale=(1, 1, 8))  # beyond every network's range
    'cubic'
    """
    cards = {card.name: card for card in list_models()}
    preference = DEFAULTS["hsi" if spectral else "mri"]
    if not spectral and scale is not None and sum(abs(float(f) - 1.0) > 1e-6 for f in np.ravel(scale)) > 1:
        # mDCSRN weights learn thick slices (one low-resolution axis): other requests go to
        # an arbitrary-scale network or to interpolation.
        preference = tuple(p for p in preference if not p.startswith("mdcsrn"))
    # If no preferred model supports the factors, the first one anyway: the engine then
    # refuses them with that model's range in the message.
    for only_supported in (True, False) if scale is not None else (False,):
        registered = sorted(n for n, c in cards.items() if not only_supported or _supports(c, scale))
        for entry in preference:
            found = [n for n in registered if n.startswith(entry)] if entry.endswith(".") else (
                [entry] if entry in registered else [])
            if found:
                return found[0]
    raise KeyError(f"no default model registered among {DEFAULTS}")


def _supports(card: ModelCard, scale: float | Sequence[float]) -> bool:
    """Whether every factor lies in the card's range (and is an integer where it must be)."""
    factors = [float(f) for f in np.ravel(scale)]
    low, high = card.scale_range
    fits = all(low - 1e-9 <= f <= high + 1e-9 for f in factors)
    return fits and (card.scales != "integer" or integer_factors(factors))
