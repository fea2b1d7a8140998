"""The completion manifest: what a run is (input, model, options) and which tasks are done.

Stored as ``volsr_manifest.json`` inside the run's hidden work store (``.NAME.volsr-partial.zarr``
beside the output). Every update writes a temporary file and renames it over the old one
(``os.replace``), so a run killed at any moment leaves either the previous or the next
manifest, never a torn one; a task is marked done only after its chunks are written. A
resumed run compares its header with the stored one and refuses on any difference; the
input is identified by a SHA-256 of its bytes (every file a load reads), so changed voxels
are refused even when size and mtime were restored. A finished Zarr output keeps the
header as the ``volsr_run`` attribute of its root group (no manifest file: only Zarr/OME
content), so a later ``--resume`` can tell a finished run of the same options from others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.base
import numpy as np
from torch import nn

from volsr.errors import ResumeError
from volsr.volume import Volume

__all__ = [
    "MANIFEST_NAME", "RUN_ATTRIBUTE", "Manifest", "input_fingerprint", "model_identity", "content_digest",
    "finished_header", "content_size",
]  # fmt: skip

MANIFEST_NAME = "volsr_manifest.json"
#: Root-group attribute of a finished Zarr output holding its run's header.
RUN_ATTRIBUTE = "volsr_run"
_VERSION = 2
_READ_BYTES = 1 << 22


def _files_under(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(Path(folder) / name for folder, _, names in os.walk(path) for name in names)


def content_size(paths: Sequence[Path]) -> int:
    """Total bytes of files and directory trees, from their sizes (nothing read).

    Parameters
    ----------
    paths : sequence of Path
        Files or directories.

    Returns
    -------
    int

    Raises
    ------
    OSError
        If a file cannot be stat'ed.

    Examples
    --------
    >>> content_size([])
    0
    """
    return sum(path.stat().st_size for root in paths for path in _files_under(root))


def content_digest(paths: list[Path]) -> tuple[str, int]:
    """SHA-256 and total size of the bytes of files and directory trees (Zarr stores).

    Streams each file in 4 MiB reads (memory: one read). A tree's files are hashed in
    sorted order with their relative names, so a renamed chunk changes the digest.

    Parameters
    ----------
    paths : list of Path
        Files or directories, in a fixed order.

    Returns
    -------
    digest : str
        Hex SHA-256.
    size : int
        Bytes read.

    Raises
    ------
    OSError
        If a file cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "a").write_bytes(b"abc")
    ...     content_digest([Path(d) / "a"])[0][:12]
    'ba7816bf8f01'
    """
    digest, size = hashlib.sha256(), 0
    for root in paths:
        for path in _files_under(root):
            if path != root:
                digest.update(str(path.relative_to(root)).encode() + b"\0")
            with open(path, "rb") as handle:
                while block := handle.read(_READ_BYTES):
                    digest.update(block)
                    size += len(block)
    return digest.hexdigest(), size


def input_fingerprint(
    volume: Volume, spec: str | os.PathLike[str] | None, *, allow_external: bool = False
) -> dict[str, Any]:
    """Identify an input: path, a SHA-256 of its bytes (or a content token), shape, dtype, affine.

    Parameters
    ----------
    volume : Volume
        The opened input.
    spec : str, path or None
        Where it was opened from (``path`` or ``path:key``); None for an in-memory volume,
        which is identified by a hash of its dask graph (its data, for NumPy-backed arrays).
        A file's content is read once in full (every file :func:`volsr.io.files_read` names).
    allow_external : bool
        As given to :func:`volsr.io.load` (the files an HDF5 input points at are hashed too).

    Returns
    -------
    dict
        JSON-able.

    Raises
    ------
    OSError
        If a file cannot be read.

    Examples
    --------
    >>> v = Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), ("i", "j", "k"))
    >>> sorted(input_fingerprint(v, None))
    ['affine', 'axes', 'dtype', 'path', 'shape', 'token']
    """
    record: dict[str, Any] = {
        "shape": list(volume.shape),
        "axes": list(volume.axes),
        "dtype": str(volume.dtype),
        "affine": volume.affine.tolist(),
    }
    if spec is None:
        record.update(path=None, token=dask.base.tokenize(volume.data))
        return record
    from volsr.io import files_read, format_for

    _, path, key = format_for(spec)
    sha256, size = content_digest(list(files_read(spec, allow_external=allow_external)))
    record.update(path=str(Path(path).resolve()), key=key, size=size, sha256=sha256)
    return record


def model_identity(net: nn.Module) -> dict[str, Any]:
    """Name, card and a SHA-256 of the weights (state dict) of a model.

    Parameters
    ----------
    net : torch.nn.Module
        With a ``card`` attribute.

    Returns
    -------
    dict
        ``{"name", "class", "card", "weights_sha256"}``, JSON-able.

    Examples
    --------
    >>> from volsr.models import create_model
    >>> model_identity(create_model("cubic"))["weights_sha256"][:8]
    'e3b0c442'
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        values = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{values.dtype}:{tuple(values.shape)}".encode())
        digest.update(values.numpy().tobytes() if values.numel() else b"")
    card = dataclasses.asdict(net.card)
    return {
        "name": net.card.name,
        "class": f"{type(net).__module__}.{type(net).__qualname__}",
        "card": card,
        "weights_sha256": digest.hexdigest(),
    }


def finished_header(store: Path) -> dict[str, Any] | None:
    """The run header a finished Zarr store keeps in its ``volsr_run`` attribute.

    Parameters
    ----------
    store : Path
        A Zarr v3 store (directory).

    Returns
    -------
    dict or None
        ``{"input", "model", "options"}``; None when the store has no such record (not a
        finished volsr run, or not a Zarr v3 store).

    Examples
    --------
    >>> finished_header(Path("/no/such/store.zarr")) is None
    True
    """
    try:
        attributes = json.loads((Path(store) / "zarr.json").read_text()).get("attributes", {})
        record = attributes.get(RUN_ATTRIBUTE)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(record, dict) and all(isinstance(record.get(k), dict) for k in ("input", "model", "options")):
        return record
    return None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix or "value": value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _json_normal(value: Any) -> Any:
    return json.loads(json.dumps(value))


@dataclasses.dataclass
class Manifest:
    """A run's header and per-task completion, saved atomically on every change.

    Parameters
    ----------
    path : Path
        The JSON file.
    header : dict
        ``{"input", "model", "options"}``: what must match for a resume.
    done : (n_tasks,) bool ndarray
        One flag (one byte in memory, one bit on disk) per task.
    state : dict
        Facts computed during the run that a resume reuses (e.g. the intensity scale).
    complete : bool
        True once the final metadata is written.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     m = Manifest.create(Path(d) / MANIFEST_NAME, {"options": {"a": 1}}, 3)
    ...     m.mark(1)
    ...     Manifest.load(Path(d) / MANIFEST_NAME).done.tolist()
    [False, True, False]
    """

    path: Path
    header: dict[str, Any]
    done: np.ndarray
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    complete: bool = False

    @classmethod
    def create(cls, path: Path, header: dict[str, Any], n_tasks: int) -> Manifest:
        """A new manifest with no task done, saved at ``path``."""
        manifest = cls(Path(path), _json_normal(header), np.zeros(int(n_tasks), dtype=bool))
        manifest.save()
        return manifest

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a saved manifest; raise VolsrError if it is not one."""
        try:
            record = json.loads(Path(path).read_text())
            if record.get("volsr_manifest") != _VERSION:
                raise ValueError(f"version {record.get('volsr_manifest')!r}, this volsr writes {_VERSION}")
            bits = np.frombuffer(bytes.fromhex(record["done"]), dtype=np.uint8)
            count = int(record["tasks"])
            if count < 0 or bits.size != (count + 7) // 8:
                raise ValueError(f"{bits.size * 8} task bits for {count} tasks")
            header, state = record["header"], record.get("state", {})
            if not (isinstance(header, dict) and all(isinstance(v, dict) for v in header.values())):
                raise ValueError("its header is not a mapping of sections")
            if not isinstance(state, dict):
                raise ValueError("its state is not a mapping")
            flags = np.unpackbits(bits, count=count, bitorder="little").astype(bool)
            return cls(Path(path), header, flags, state, bool(record.get("complete", False)))
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            raise ResumeError(f"cannot resume: {path} is not a readable volsr manifest ({error})") from None

    def check(self, header: dict[str, Any]) -> None:
        """Refuse (VolsrError) if ``header`` differs from the stored one; say what differs."""
        wanted = _json_normal(header)
        for section in sorted(set(wanted) | set(self.header)):
            old, new = _flatten(self.header.get(section)), _flatten(wanted.get(section))
            changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if not changed:
                continue
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
            raise ResumeError(
                f"cannot resume {self.path.parent}: the {section} differs from the original run"
                f" ({detail}); rerun without --resume (and with --overwrite) to start again"
            )

    def mark(self, index: int) -> None:
        """Record task ``index`` as done (after its chunks are written) and save."""
        self.done[index] = True
        self.save()

    def save(self) -> None:
        """Write atomically: a temporary file in the same folder, renamed over the old one."""
        bits = np.packbits(self.done, bitorder="little")
        record = {
            "volsr_manifest": _VERSION,
            "header": self.header,
            "tasks": len(self.done),
            "done": bits.tobytes().hex(),
            "state": self.state,
            "complete": self.complete,
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record, indent=1))
        os.replace(temporary, self.path)
