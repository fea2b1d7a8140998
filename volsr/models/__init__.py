"""Models: one registry for interpolation baselines and networks.

Importing this package registers the built-in models (``nearest``, ``linear``, ``bicubic``,
``cubic``, ``lanczos``).
"""

from volsr.models import attn1d2d, interpolation, mdcsrn
from volsr.models.registry import ModelCard, create_model, get_card, list_models, register_model

__all__ = [
    "attn1d2d",
    "ModelCard",
    "create_model",
    "default_model_name",
    "get_card",
    "interpolation",
    "mdcsrn",
    "list_models",
    "register_model",
]

#: Preference order for the default model: the first one registered wins. Trained networks
#: go in front of the baselines as their weights ship.
_DEFAULTS = {"mri": ("cubic",), "hsi": ("bicubic",)}


def default_model_name(*, spectral: bool) -> str:
    """The best registered model for volumes (MRI) or spectral cubes.

    Parameters
    ----------
    spectral : bool
        True for a cube with a band axis.

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
    >>> default_model_name(spectral=False)
    'cubic'
    """
    registered = {card.name for card in list_models()}
    for name in _DEFAULTS["hsi" if spectral else "mri"]:
        if name in registered:
            return name
    raise KeyError(f"no default model registered among {_DEFAULTS}")
