"""Reading config files: the ``extends`` chain merged (``yaml.safe_load``), configs as plain values.

Read by the one schema (:mod:`volsr.train.config`, both data sources).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_config", "plain"]


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping, its ``extends:`` chain merged in (``yaml.safe_load``).

    ``extends: other.yaml`` (a path relative to this file) names the file this one starts
    from; a mapping value merges key by key over the base's, anything else (a list, a number,
    ``null``) replaces it.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    dict
        The merged mapping, without ``extends``.

    Raises
    ------
    FileNotFoundError
        If the file, or a file it extends, does not exist.
    ValueError
        If a file is not valid YAML, not a mapping, or the chain extends itself.

    Examples
    --------
    >>> read_config("missing.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: config file 'missing.yaml' not found
    """
    chain: list[Path] = []
    path = Path(path)
    layers = []
    while True:
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} not found"
                                    + (f" (extended by {str(chain[-1])!r})" if chain else ""))  # fmt: skip
        if path.resolve() in chain:
            raise ValueError(f"config file {str(path)!r} extends itself (through {' -> '.join(map(str, chain))})")
        chain.append(path.resolve())
        try:
            mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {error}") from None
        mapping = {} if mapping is None else mapping
        if not isinstance(mapping, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(mapping).__name__}")
        base = mapping.pop("extends", None)
        layers.append(mapping)
        if base is None:
            break
        if not isinstance(base, str):
            raise ValueError(f"'extends' in {str(path)!r} must be a file name, got {base!r}")
        path = path.parent / base
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = _merged(merged, layer)
    return merged


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def plain(value: Any) -> Any:
    """A config (or any nest of dataclasses, mappings and sequences) as JSON / YAML values.

    Parameters
    ----------
    value : dataclass, mapping, sequence or scalar
        E.g. a :class:`TrainConfig` (or the hyperspectral one).

    Returns
    -------
    dict, list or scalar
        Dataclasses and mappings as dicts, tuples as lists, anything else as it is.

    Examples
    --------
    >>> plain({"betas": (0.9, 0.999)})["betas"]
    [0.9, 0.999]
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value
