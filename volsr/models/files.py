"""Models from weights files outside the package: ``volsr upsample --model PATH``.

A weights file (``NAME.safetensors`` + ``NAME.json`` sidecar, the format of every shipped
and exported model) is registered under the name ``file:<absolute path>`` by the
architecture its sidecar's card names (``mdcsrn.*``, ``meta_srgan.*``, ``attn1d2d.*``),
exactly as shipped weights are, so the engine, its Dask workers and resumes treat it like
any registered model (the manifest keeps a SHA-256 of its weights). Nothing in the file is
executed: the sidecar is JSON whose config keys must be constructor parameters.
"""

from __future__ import annotations

from pathlib import Path

from volsr.models.registry import ModelCard, get_card
from volsr.models.table import ARCHITECTURES, register_network
from volsr.models.weights import check_fits, read_card, read_shipped

__all__ = ["is_model_file", "register_model_file"]


def is_model_file(spec: str) -> bool:
    """Whether a ``--model`` value names a weights file rather than a registered model.

    Parameters
    ----------
    spec : str
        The value.

    Returns
    -------
    bool
        True when it ends in ``.safetensors`` (the file need not exist: loading says so).

    Examples
    --------
    >>> is_model_file("cubic"), is_model_file("runs/x/export/mdcsrn_x.safetensors")
    (False, True)
    """
    return str(spec).endswith(".safetensors")


def register_model_file(path: str | Path) -> ModelCard:
    """Register a weights file as ``file:<absolute path>`` (once per process) and give its card.

    Parameters
    ----------
    path : str or Path
        ``.safetensors`` weights with their JSON sidecar.

    Returns
    -------
    ModelCard
        As :func:`volsr.models.table.register_network` makes it.

    Raises
    ------
    FileNotFoundError
        If the weights or the sidecar are missing.
    ValueError
        If the sidecar is invalid or its card names no known architecture.

    Examples
    --------
    >>> register_model_file("none.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no weights file none.safetensors
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}")
    name = f"file:{path.resolve()}"
    try:
        return get_card(name)
    except KeyError:
        pass
    card_name = str(read_card(path).get("name", ""))
    arch = next((a for a in ARCHITECTURES if card_name.startswith(a + ".")), None)
    if arch is None:
        raise ValueError(f"{path.with_suffix('.json')}: card name {card_name!r} names no known "
                         f"architecture ({', '.join(a + '.*' for a in ARCHITECTURES)})")
    network = ARCHITECTURES[arch].network
    facts = read_shipped(path.resolve(), factory=network)
    check_fits(network, facts.config, path.resolve())  # before register_network builds the network
    return register_network(name, arch, weights=facts.file, config=facts.config, description=facts.description,
                            scale_range=facts.scale_range, input_peak=facts.input_peak)

