"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a pair ``<stem>.safetensors`` + ``<stem>.json`` in one folder. The
safetensors file holds every tensor under a flat, dotted key (``model.<param>``,
``ema.<param>``, ``optim.state.<index>.<name>``, ...); the JSON file holds the rest
(configuration, step, RNG states as lists of ints, metrics history, dataset names, the
non-tensor part of optimiser states). Both are written to a temporary file in the same
folder and moved into place with :func:`os.replace`, the safetensors file first: a
checkpoint exists once its JSON file exists, so a crash mid-write never leaves a
half-written checkpoint that a resume would pick up. ``torch.load`` is never used.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "save_checkpoint",
    "load_checkpoint",
    "network_tensors",
    "network_state",
    "list_checkpoints",
    "prune_checkpoints",
    "atomic_write",
    "restore_generator",
]

_STEP_STEM = re.compile(r"^step_(\d{9})$")


def flatten_optimizer_state(
    state: Mapping[str, Any], *, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser ``state_dict`` into flat tensors and a JSON-able remainder.

    Parameters
    ----------
    state : mapping
        ``torch.optim.Optimizer.state_dict()`` (``{"state": {index: {name: value}},
        "param_groups": [...]}``).
    prefix : str
        Key prefix of the tensors (e.g. ``"optim"``).

    Returns
    -------
    tensors : dict of str to Tensor
        ``f"{prefix}.state.{index}.{name}"`` for every tensor entry (contiguous CPU copies).
    rest : dict
        ``{"state": {index: {name: value}}, "param_groups": [...]}`` with the non-tensor
        entries only (tuples become lists).

    Raises
    ------
    TypeError
        If a non-tensor entry is not a JSON value.

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.AdamW(layer.parameters())
    >>> layer(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> tensors, rest = flatten_optimizer_state(opt.state_dict(), prefix="optim")
    >>> sorted(tensors)[:3]
    ['optim.state.0.exp_avg', 'optim.state.0.exp_avg_sq', 'optim.state.0.step']
    """
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"state": {}, "param_groups": []}
    for index, entries in state["state"].items():
        plain = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[name] = _json_value(value, f"{prefix}.state.{index}.{name}")
        rest["state"][str(index)] = plain
    for group in state["param_groups"]:
        rest["param_groups"].append(
            {key: _json_value(value, f"{prefix}.param_groups.{key}") for key, value in group.items()}
        )
    return tensors, rest


def _json_value(value: Any, where: str) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_value(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in JSON: {value!r}")


def unflatten_optimizer_state(
    tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any], *, prefix: str
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`.

    Parameters
    ----------
    tensors : mapping of str to Tensor
        All tensors of the checkpoint (keys without ``prefix`` are ignored).
    rest : mapping
        The JSON remainder.
    prefix : str
        The prefix used when flattening.

    Returns
    -------
    dict
        A state dict for ``Optimizer.load_state_dict`` (list values of param groups
        become tuples again, such as ``betas``).

    Raises
    ------
    KeyError
        If a tensor key names a parameter index missing from ``rest``.

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.AdamW(layer.parameters())
    >>> layer(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> flat = flatten_optimizer_state(opt.state_dict(), prefix="o")
    >>> unflatten_optimizer_state(*flat, prefix="o")["param_groups"][0]["betas"]
    (0.9, 0.999)
    """
    state: dict[int, dict[str, Any]] = {
        int(index): dict(entries) for index, entries in rest["state"].items()
    }
    head = f"{prefix}.state."
    for key, value in tensors.items():
        if key.startswith(head):
            index, name = key[len(head):].split(".", 1)
            state[int(index)][name] = value
    groups = [
        {k: (v if k == "params" or not isinstance(v, list) else tuple(v)) for k, v in g.items()}
        for g in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write a file through a temporary name in the same folder, then ``os.replace`` it.

    Parameters
    ----------
    path : path-like
        Final file name.
    write : callable
        ``write(temporary_path)`` creates the content.

    Returns
    -------
    None

    Raises
    ------
    OSError
        From the file system (the temporary file is removed).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, lambda tmp: Path(tmp).write_text("ok"))
    >>> target.read_text()
    'ok'
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(
    folder: str | os.PathLike, stem: str, *, tensors: Mapping[str, torch.Tensor], meta: Mapping
) -> Path:
    """Write ``<folder>/<stem>.safetensors`` and ``<stem>.json`` atomically.

    Parameters
    ----------
    folder : path-like
        Created if missing.
    stem : str
        File name without extension (e.g. ``"step_000001000"`` or ``"best"``).
    tensors : mapping of str to Tensor
        Flat tensors (moved to CPU, made contiguous; shared storage is copied).
    meta : mapping
        JSON-able metadata.

    Returns
    -------
    Path
        The JSON file.

    Raises
    ------
    TypeError
        If ``meta`` is not JSON-able.

    Examples
    --------
    >>> import tempfile
    >>> out = save_checkpoint(tempfile.mkdtemp(), "step_000000002",
    ...                       tensors={"w": torch.ones(2)}, meta={"step": 2})
    >>> load_checkpoint(out)[1]["step"]
    2
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(meta), indent=1, allow_nan=True)
    cpu = {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}
    atomic_write(folder / f"{stem}.safetensors", lambda tmp: save_file(cpu, tmp))
    atomic_write(folder / f"{stem}.json", lambda tmp: Path(tmp).write_text(text))
    return folder / f"{stem}.json"


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickle).

    Parameters
    ----------
    path : path-like
        The ``.json`` or ``.safetensors`` file, or the stem.

    Returns
    -------
    tensors : dict of str to Tensor
        On CPU.
    meta : dict
        The JSON metadata.

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    ValueError
        If either file is corrupt.

    Examples
    --------
    >>> load_checkpoint("missing")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint missing.json not found...
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    meta_path, tensor_path = stem.with_name(stem.name + ".json"), stem.with_name(
        stem.name + ".safetensors"
    )
    for needed in (meta_path, tensor_path):
        if not needed.is_file():
            raise FileNotFoundError(f"checkpoint {needed} not found (both .json and .safetensors)")
    try:
        return load_file(str(tensor_path)), json.loads(meta_path.read_text())
    except (SafetensorError, json.JSONDecodeError) as error:
        raise ValueError(f"checkpoint {stem} is corrupt: {error}") from None


def network_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network's weights in a checkpoint (its EMA copy when kept) or an exported weights file.

    Parameters
    ----------
    path : path-like
        A trainer checkpoint (``ema.*`` and ``model.*`` tensors, or an EMA-only copy) or
        exported / shipped weights (unprefixed tensors), each with its ``.json`` partner.

    Returns
    -------
    dict of str to Tensor
        State-dict keys of the network (prefix removed), on CPU.

    Raises
    ------
    FileNotFoundError
        If either file is missing.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> tensors = {"model.w": torch.zeros(1), "ema.w": torch.ones(1)}
    >>> network_tensors(save_checkpoint(folder, "best", tensors=tensors, meta={}))
    {'w': tensor([1.])}
    """
    return network_state(load_checkpoint(path)[0])


def network_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's state dict among a checkpoint's tensors: ``ema.*``, else ``model.*``, else all.

    Parameters
    ----------
    tensors : mapping of str to Tensor
        As :func:`load_checkpoint` returns them.

    Returns
    -------
    dict of str to Tensor
        Prefix removed.

    Examples
    --------
    >>> network_state({"model.w": torch.zeros(1), "step": torch.ones(1)})
    {'w': tensor([0.])}
    """
    prefix = next((p for p in ("ema.", "model.") if any(k.startswith(p) for k in tensors)), "")
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete periodic checkpoints (``step_NNNNNNNNN.json``) in a folder, oldest first.

    Parameters
    ----------
    folder : path-like
        The checkpoint folder (may be missing).

    Returns
    -------
    list of Path
        JSON files whose safetensors partner exists, sorted by step.

    Examples
    --------
    >>> list_checkpoints("no-such-folder")
    []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.glob("step_*.json")
        if _STEP_STEM.match(p.stem) and p.with_suffix(".safetensors").is_file()
    ]
    return sorted(found, key=lambda p: int(p.stem[5:]))


def prune_checkpoints(folder: str | os.PathLike, *, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest periodic checkpoints (``best`` is never touched).

    Parameters
    ----------
    folder : path-like
        The checkpoint folder.
    keep_last : int
        How many to keep (>= 1).

    Returns
    -------
    list of Path
        The JSON files removed.

    Raises
    ------
    ValueError
        If ``keep_last < 1``.

    Examples
    --------
    >>> prune_checkpoints("no-such-folder", keep_last=2)
    []
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    removed = list_checkpoints(folder)[:-keep_last]
    for meta_path in removed:
        # JSON first: a checkpoint without its JSON is invisible to list_checkpoints.
        meta_path.unlink(missing_ok=True)
        meta_path.with_suffix(".safetensors").unlink(missing_ok=True)
    return removed


def restore_generator(generator: torch.Generator, state: Sequence[int], *, fallback_seed: int) -> bool:
    """Set a checkpoint's random-generator state, or reseed when it came from another device.

    A CUDA generator's state (16 bytes) does not fit a CPU generator (5056 bytes) and the
    other way round, so a run checkpointed on a GPU and resumed on a CPU (or back) cannot
    continue the same random stream; it is reseeded with ``fallback_seed`` instead, with a
    warning (the resumed run is then reproducible, though not bit-identical to an
    uninterrupted one).

    Parameters
    ----------
    generator : torch.Generator
        The generator to restore, on the device of the resumed run.
    state : sequence of int
        Bytes of ``generator.get_state()`` as saved in the checkpoint's JSON.
    fallback_seed : int
        Seed used when the saved state belongs to another device kind.

    Returns
    -------
    bool
        True if the saved state was restored, False if the generator was reseeded.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(1)
    >>> restore_generator(g, torch.Generator().manual_seed(2).get_state().tolist(), fallback_seed=0)
    True
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     restore_generator(g, [0] * 16, fallback_seed=3)  # a CUDA generator's state
    False
    >>> "reseeded with 3" in str(caught[0].message)
    True
    >>> torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())
    True
    """
    saved = torch.tensor(list(state), dtype=torch.uint8)
    if saved.numel() != generator.get_state().numel():
        generator.manual_seed(fallback_seed)
        warnings.warn(f"the checkpoint's random state is another device's: reseeded with "
                      f"{fallback_seed} (reproducible, not bit-identical to an unbroken run)",
                      stacklevel=2)
        return False
    generator.set_state(saved)
    return True
