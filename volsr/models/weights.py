"""Weights on disk: safetensors tensors plus a JSON sidecar with the constructor config.

Nothing here executes code read from a file: tensors come from safetensors (no pickle), and
the sidecar is plain JSON whose ``config`` keys must be keyword parameters of the factory
that receives them, with scalar or list values. The sidecar of ``NAME.safetensors`` is
``NAME.json``::

    {"config": {"blocks": 4, "units": 4, ...},            # constructor arguments
     "card": {"name": "mdcsrn.t1", "description": "...",  # only for shipped weights
              "scale_range": [1.0, 5.0]},
     "metadata": {...}}                                    # free-form facts, never executed

This is the only module of :mod:`volsr.models` that touches files.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

__all__ = [
    "WEIGHTS_DIR",
    "CARDS_DIR",
    "ShippedWeights",
    "save_weights",
    "read_config",
    "load_weights",
    "check_fits",
    "load_module",
    "shipped_path",
    "weights_path",
    "read_shipped",
    "read_card",
    "read_sidecar",
    "shipped_weights",
    "card_path",
]

#: Folder of the weights shipped inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Folder of the Markdown model cards (``<registry name>.md``) of the shipped weights.
CARDS_DIR = Path(__file__).resolve().parent / "cards"

_SECTIONS = ("config", "card", "metadata")
_SCALARS = (bool, int, float, str, type(None))


@dataclasses.dataclass(frozen=True)
class ShippedWeights:
    """A shipped weights file and the facts its sidecar gives for the model card.

    Parameters
    ----------
    name : str
        Registry name.
    file : str
        File name inside :data:`WEIGHTS_DIR`.
    config : dict
        Constructor arguments.
    description : str
        One line for ``volsr models``.
    scale_range : tuple of float
        Trained per-axis factor range.
    input_peak : float
        The card's ``input_peak`` (optional in the sidecar; default 1.0).
    """

    name: str
    file: str
    config: dict
    description: str
    scale_range: tuple[float, float]
    input_peak: float = 1.0


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_weights(
    module: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    config: Mapping[str, object],
    card: Mapping[str, object] | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write ``module``'s state as safetensors and its config as the JSON sidecar.

    Parameters
    ----------
    module : torch.nn.Module or mapping of str to Tensor
        The module (its ``state_dict``: parameters and buffers), or such a state dict.
    path : str or Path
        Destination ending in ``.safetensors``; the sidecar goes beside it as ``.json``.
    config : mapping
        Constructor arguments rebuilding ``module`` (JSON scalars or lists).
    card, metadata : mapping, optional
        Model-card facts (``name``, ``description``, ``scale_range``) and free-form facts.

    Returns
    -------
    Path
        The safetensors path.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.safetensors`` or ``config`` holds a value that is not a
        JSON scalar or list.
    TypeError
        If ``card`` or ``metadata`` is not JSON-serialisable.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> save_weights(nn.Linear(2, 1), folder + "/lin.safetensors", config={}).name
    'lin.safetensors'
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
    _check_values(dict(config), str(path))
    state = module.state_dict() if isinstance(module, nn.Module) else module
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    document = {"config": dict(config), "card": dict(card or {}), "metadata": dict(metadata or {})}
    text = json.dumps(document, indent=2, sort_keys=True)
    safetensors.torch.save_file(tensors, str(path))
    _sidecar(path).write_text(text + "\n", encoding="utf-8")
    return path


def _check_values(config: dict, where: str) -> None:
    for key, value in config.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, _SCALARS) for item in items):
            raise ValueError(
                f"config[{key!r}] in {where} must be a JSON scalar or a list of them, "
                f"got {value!r}"
            )


def read_sidecar(path: str | Path) -> dict:
    """The JSON sidecar of a weights file: ``config``, and ``card`` and ``metadata`` if written.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file (its ``.json`` sidecar is read).

    Returns
    -------
    dict
        The document, checked: a JSON object with a ``config`` object and known sections.

    Raises
    ------
    FileNotFoundError
        If the sidecar is missing.
    ValueError
        If it is not valid JSON, has no ``config`` object, or has unknown sections.

    Examples
    --------
    >>> import tempfile
    >>> path = save_weights(nn.Linear(2, 1), tempfile.mkdtemp() + "/lin.safetensors",
    ...                     config={}, metadata={"step": 3})
    >>> read_sidecar(path)["metadata"]
    {'step': 3}
    """
    sidecar = _sidecar(Path(path))
    if not sidecar.is_file():
        raise FileNotFoundError(f"weights sidecar not found: {sidecar} (a .safetensors file needs "
                                "the .json written beside it)")
    try:
        document = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{sidecar} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ValueError(f"{sidecar} must be a JSON object with a 'config' object")
    unknown = sorted(set(document) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"{sidecar} has unknown sections {unknown} (allowed: {list(_SECTIONS)})")
    return document


def read_config(path: str | Path, *, factory: Callable[..., nn.Module]) -> dict:
    """Constructor config from the JSON sidecar of a weights file, checked against ``factory``.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file (its sidecar ``.json`` is read).
    factory : callable
        Class or function the config is for; every key must be one of its keyword parameters.

    Returns
    -------
    dict
        Keyword arguments for ``factory``.

    Raises
    ------
    FileNotFoundError
        If the sidecar does not exist.
    ValueError
        If the sidecar is not a JSON object with a ``config`` object, has unknown sections,
        names parameters ``factory`` does not take, or holds non-scalar values.

    Examples
    --------
    >>> import tempfile
    >>> path = save_weights(nn.Linear(2, 1), tempfile.mkdtemp() + "/lin.safetensors",
    ...                     config={"in_features": 2, "out_features": 1})
    >>> read_config(path, factory=nn.Linear)
    {'in_features': 2, 'out_features': 1}
    """
    path = Path(path)
    return _checked_config(read_sidecar(path), path, factory)


def _checked_config(sidecar: dict, path: Path, factory: Callable[..., nn.Module]) -> dict:
    """``sidecar``'s config, checked against ``factory`` (see :func:`read_config`)."""
    config = sidecar["config"]
    accepted = {
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ValueError(
            f"config keys {unknown} in {_sidecar(path)} are not parameters of "
            f"{getattr(factory, '__name__', factory)} (allowed: {sorted(accepted)})"
        )
    _check_values(config, str(_sidecar(path)))
    return config


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into ``module`` (every key must match: strict).

    Parameters
    ----------
    module : torch.nn.Module
        Module built with the config the weights were saved with.
    path : str or Path
        The ``.safetensors`` file.

    Returns
    -------
    torch.nn.Module
        ``module`` itself, with its parameters and buffers replaced.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a safetensors file or its tensors' names or shapes do not fit
        ``module``.

    Examples
    --------
    >>> import tempfile
    >>> path = save_weights(nn.Linear(2, 1), tempfile.mkdtemp() + "/lin.safetensors", config={})
    >>> load_weights(nn.Linear(2, 1), path).weight.shape
    torch.Size([1, 2])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        tensors = safetensors.torch.load_file(str(path), device="cpu")
    except safetensors.SafetensorError as error:
        raise ValueError(f"{path} is not a valid safetensors file: {error}") from None
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"weights in {path} do not fit {type(module).__name__}: {error}"
        ) from None
    return module


def load_module(factory: Callable[..., nn.Module], path: str | Path) -> nn.Module:
    """Build ``factory(**config)`` from the sidecar and load the weights into it.

    Parameters
    ----------
    factory : callable
        Class or function taking the sidecar's config as keyword arguments.
    path : str or Path
        The ``.safetensors`` file.

    Returns
    -------
    torch.nn.Module
        The module with its weights (in whatever train/eval mode ``factory`` leaves it).

    Raises
    ------
    FileNotFoundError
        If the weights or the sidecar do not exist.
    ValueError
        As :func:`read_config` and :func:`load_weights`.

    Examples
    --------
    >>> import tempfile
    >>> path = save_weights(nn.Linear(3, 2), tempfile.mkdtemp() + "/lin.safetensors",
    ...                     config={"in_features": 3, "out_features": 2})
    >>> load_module(nn.Linear, path).weight.shape
    torch.Size([2, 3])
    """
    config = read_config(path, factory=factory)
    check_fits(factory, config, Path(path))
    return load_weights(factory(**config), path)


def check_fits(factory: Callable[..., nn.Module], config: Mapping[str, object], path: Path) -> None:
    """Refuse a config whose tensors differ from the file's, before allocating any memory.

    Built on PyTorch's ``meta`` device (shapes, no storage) and compared with the safetensors
    header: a sidecar asking for an absurd network fails in one line, not at a 1 TB malloc.

    Parameters
    ----------
    factory : callable
        Class or function taking ``config`` as keyword arguments.
    config : mapping
        Constructor arguments from the sidecar.
    path : Path
        The ``.safetensors`` file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a config value exceeds the stored weights' count, or its tensors differ.

    Examples
    --------
    >>> import tempfile
    >>> path = save_weights(nn.Linear(3, 2), tempfile.mkdtemp() + "/lin.safetensors", config={})
    >>> check_fits(nn.Linear, {"in_features": 3, "out_features": 2}, path)
    """
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            stored = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (safetensors.SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a valid safetensors file: {error}") from None
    # A width or depth beyond the number of stored weights cannot describe them (each unit
    # of a layer holds at least one): refused before building anything of that size.
    elements = sum(math.prod(shape) for shape in stored.values())
    for key, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > max(elements, 1):
            raise ValueError(f"config[{key!r}] = {value} in {_sidecar(path)} is larger than the "
                             f"{elements} weights stored in {path}: not the network they were saved from")
    try:
        with torch.device("meta"):
            shapes = {name: tuple(t.shape) for name, t in factory(**config).state_dict().items()}
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"the config in {_sidecar(path)} cannot build {getattr(factory, '__name__', factory)}: "
                         f"{error}") from None
    wrong = sorted(name for name in set(shapes) | set(stored) if shapes.get(name) != stored.get(name))
    if wrong:
        name = wrong[0]
        raise ValueError(
            f"the config in {_sidecar(path)} does not describe the tensors in {path} ({len(wrong)} differ; "
            f"{name}: {shapes.get(name, 'absent')} built, {stored.get(name, 'absent')} stored)"
        )


def shipped_path(file_name: str) -> Path:
    """Path of a weights file shipped in :data:`WEIGHTS_DIR`.

    Parameters
    ----------
    file_name : str
        Bare file name, e.g. ``"mdcsrn_t1.safetensors"``.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        If ``file_name`` is not a bare ``.safetensors`` file name.
    FileNotFoundError
        If no such file is shipped.

    Examples
    --------
    >>> shipped_path("no_such.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no shipped weights 'no_such.safetensors' in ...
    """
    if Path(file_name).name != file_name or not file_name.endswith(".safetensors"):
        raise ValueError(f"file_name must be a bare .safetensors file name, got {file_name!r}")
    path = WEIGHTS_DIR / file_name
    if not path.is_file():
        raise FileNotFoundError(f"no shipped weights {file_name!r} in {WEIGHTS_DIR}")
    return path


def weights_path(spec: str | Path) -> Path:
    """A weights file: a bare name shipped in :data:`WEIGHTS_DIR`, or a path to one elsewhere.

    Parameters
    ----------
    spec : str or Path
        ``"mdcsrn_t1.safetensors"`` (shipped) or ``"runs/x/export/mdcsrn_x.safetensors"``.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        If ``spec`` does not end in ``.safetensors``.
    FileNotFoundError
        If the file does not exist.

    Examples
    --------
    >>> weights_path("elsewhere/none.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no weights file elsewhere/none.safetensors
    """
    path = Path(spec)
    if path.name == str(spec):
        return shipped_path(str(spec))
    if path.suffix != ".safetensors":
        raise ValueError(f"a weights file ends in .safetensors, got {str(spec)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {spec}")
    return path


def read_card(path: str | Path) -> dict:
    """The ``card`` section of a weights file's sidecar (empty when it has none).

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file (its ``.json`` sidecar is read).

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError
        If the sidecar is missing.
    ValueError
        If it is not a valid sidecar.

    Examples
    --------
    >>> read_card("none.safetensors")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """
    card = read_sidecar(Path(path)).get("card", {})
    return card if isinstance(card, dict) else {}


def read_shipped(path: str | Path, *, factory: Callable[..., nn.Module]) -> ShippedWeights:
    """The :class:`ShippedWeights` facts of a weights file from its sidecar.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file (its ``.json`` sidecar is read; no tensor is loaded).
    factory : callable
        Constructor the config is checked against (see :func:`read_config`).

    Returns
    -------
    ShippedWeights
        ``file`` is the path as given.

    Raises
    ------
    ValueError
        If the sidecar is invalid or its ``card`` lacks ``name``, ``description`` or a
        two-number ``scale_range``.
    FileNotFoundError
        If the sidecar is missing.

    Examples
    --------
    >>> read_shipped("none.safetensors", factory=nn.Linear)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
    """
    path = Path(path)
    sidecar = read_sidecar(path)
    config = _checked_config(sidecar, path, factory)
    card = sidecar.get("card", {})
    try:
        low, high = (float(v) for v in card["scale_range"])
        peak = float(card.get("input_peak", 1.0))
        if not (math.isfinite(peak) and peak > 0):
            raise ValueError(peak)
        return ShippedWeights(name=str(card["name"]), file=str(path), config=config,
                              description=str(card["description"]), scale_range=(low, high),
                              input_peak=peak)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{_sidecar(path)}: 'card' needs name, description and scale_range "
                         f"[low, high] (and a positive input_peak if any), got {card!r}") from None


def shipped_weights(*, prefix: str, factory: Callable[..., nn.Module]) -> list[ShippedWeights]:
    """Shipped weights files named ``PREFIX*.safetensors`` that have a sidecar, sorted.

    Parameters
    ----------
    prefix : str
        File-name prefix, e.g. ``"mdcsrn"``.
    factory : callable
        Constructor the configs are checked against (see :func:`read_config`).

    Returns
    -------
    list of ShippedWeights
        Empty when nothing is shipped.

    Raises
    ------
    ValueError
        If a sidecar is invalid or its ``card`` lacks ``name``, ``description`` or a
        two-number ``scale_range`` (a packaging error).

    Examples
    --------
    >>> shipped_weights(prefix="no-such-arch", factory=nn.Linear)
    []
    """
    return [
        dataclasses.replace(read_shipped(path, factory=factory), file=path.name)
        for path in sorted(WEIGHTS_DIR.glob(f"{prefix}*.safetensors"))
        if _sidecar(path).is_file()
    ]


def card_path(name: str) -> Path | None:
    """The Markdown model card of a registered model, if one ships.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"mdcsrn.t1"``; the card is ``CARDS_DIR/<name>.md``.

    Returns
    -------
    Path or None
        None when no card ships (interpolation baselines and weights files registered as
        ``file:<path>`` have none).

    Raises
    ------
    ValueError
        If ``name`` contains a path separator and is not a ``file:`` name.

    Examples
    --------
    >>> card_path("cubic") is None, card_path("file:/runs/x4.safetensors") is None
    (True, True)
    """
    if name.startswith("file:"):
        return None
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"name must be a registry name, got {name!r}")
    path = CARDS_DIR / f"{name}.md"
    return path if path.is_file() else None
