"""A run's state beside its output: the work store, the run a resume continues, the options.

Run state never sits where a format's readers look (DESIGN.md): a run works in
``.NAME.volsr-partial.zarr`` beside its output (its manifest inside), and a finished Zarr
output keeps only its header (``volsr_run``). The refusals that need no planning (an
unfinished run without ``--resume``, a finished non-Zarr output with it) are decided here,
before the model or the input is touched.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from volsr import io
from volsr.engine import progress
from volsr.engine.manifest import MANIFEST_NAME, Manifest, finished_header
from volsr.engine.options import EngineOptions
from volsr.engine.trust import TrustOptions
from volsr.errors import OutputExistsError, ResumeError
from volsr.io.outputs import discard

__all__ = ["RunOptions", "work_store", "unfinished_run", "previous_run", "output_identity", "budget_bytes_for",
           "open_manifest", "note", "phase"]  # fmt: skip


def note(message: str, quiet: bool) -> None:
    """The engine's log line on stderr (plan, budget, resume), unless ``quiet``."""
    if not quiet:
        print(message, file=sys.stderr)  # noqa: T201 - the engine's log line, like tqdm's


def phase(message: str, quiet: bool) -> None:
    """A silent phase's line ("what it is doing now"), for a person at a terminal only: like a
    progress bar it is not part of the output a script reads, where a refusal stays one line."""
    if not quiet and sys.stderr.isatty():
        print(f"{message} ...", file=sys.stderr)  # noqa: T201


#: Name ending of a run's hidden work store, beside its output.
_PARTIAL_SUFFIX = ".volsr-partial.zarr"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything the caller of one :func:`volsr.engine.upsample_to_store` run chose, beside the model and grid."""

    output: str
    engine: EngineOptions
    resume: bool
    overwrite: bool
    announce: tuple[str, ...]
    trust: TrustOptions = TrustOptions()


def work_store(output: Path) -> Path:
    """The hidden work store of a run of ``output``: ``.NAME.volsr-partial.zarr`` beside it."""
    return output.with_name(f".{output.name}{_PARTIAL_SUFFIX}")


def unfinished_run(output: str | os.PathLike[str]) -> Path | None:
    """The work store of an unfinished run of ``output`` (resumable), or None.

    Parameters
    ----------
    output : str or path
        Output spec (``path`` or ``path:key``).

    Returns
    -------
    Path or None

    Raises
    ------
    FormatError
        If the suffix is unknown.

    Examples
    --------
    >>> unfinished_run("/no/such/folder/sr.nii.gz") is None
    True
    """
    store = work_store(io.format_for(output)[1])
    return store if store.is_dir() else None


def previous_run(store: Path, output_path: Path, options: RunOptions) -> tuple[Manifest | None, bool]:
    """The run a resume continues (its manifest, read once) and whether the output is that run,
    finished; refusals that need no planning come here, before any work."""
    if store.exists() and not (options.resume or options.overwrite):
        raise OutputExistsError(f"an earlier run of this output is unfinished ({store}): "
                                "pass --resume to continue it, or --overwrite to start again")
    if output_path.exists() and not (options.resume or options.overwrite):  # again, under the lock
        raise OutputExistsError(f"output exists: {output_path} (pass --overwrite to replace it)")
    if not options.resume:
        return None, False
    if store.exists():
        path = store / MANIFEST_NAME
        if path.exists():
            return Manifest.load(path), False
        record = finished_header(store)  # killed between finishing the store and renaming it
        if record is None:
            raise ResumeError(f"cannot resume: {store} has no {MANIFEST_NAME} (not written by a volsr run)")
        return _finished_manifest(path, record), False
    if not output_path.exists():
        return None, False
    record = finished_header(output_path) if io.format_for(options.output)[0].name == "zarr" else None
    if record is None:
        raise ResumeError(f"cannot resume: {output_path} is a finished output, not an unfinished run "
                         "(nothing to resume; pass --overwrite to replace it)")
    return _finished_manifest(store / MANIFEST_NAME, record), True


def _finished_manifest(path: Path, record: dict) -> Manifest:
    options = record["options"]
    tasks = options.get("tasks")
    if not isinstance(tasks, int) or tasks < 0:
        raise ResumeError(f"cannot resume: the run record of {path.parent} is damaged (tasks {tasks!r}); "
                          "rerun with --overwrite to start again")
    return Manifest(path, record, np.ones(tasks, bool), {"budget_bytes": options.get("budget_bytes")},
                    complete=True)  # fmt: skip


def output_identity(output: str) -> str:
    """The output as a resume compares it: the real path, and the key in one spelling."""
    fmt, path, key = io.format_for(output)
    if key is not None and fmt.name == "hdf5":
        key = "/" + key.strip("/")
    return os.path.realpath(path) + ("" if key is None else f":{key}")


def budget_bytes_for(
    max_memory: str | int | None, previous: Manifest | None, workers: int | None, scheduler: str | None
) -> int:
    """The budget asked for; else the one a resumed run started with (same plan); else the default."""
    if max_memory is not None:
        return progress.parse_size(max_memory)
    recorded = None if previous is None else previous.state.get("budget_bytes")
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    return progress.default_budget(workers=workers, local=scheduler is None)


def open_manifest(
    store: Path, header: dict, previous: Manifest | None, *, overwrite: bool, quiet: bool
) -> Manifest | None:
    """The manifest a resume continues, checked against this run's ``header``; None for a new
    run (an old work store is discarded under ``overwrite``)."""
    if previous is not None:
        manifest = previous
        manifest.check(header)
        if len(manifest.done) != header["options"]["tasks"]:
            raise ResumeError(f"cannot resume: {manifest.path} records {len(manifest.done)} tasks for a plan of "
                             f"{header['options']['tasks']}; rerun with --overwrite to start again")
        note(f"resuming: {int(np.count_nonzero(manifest.done))} of {len(manifest.done)} tasks already done", quiet)
        return manifest
    if store.exists() and overwrite:
        discard(store)
    return None


