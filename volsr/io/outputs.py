"""One writer per output, and an output replaced only by a complete successor.

Three pieces every writer of an output shares (``save``, the engine's stores):

- :func:`output_lock`: a lock file beside the output (``.NAME.volsr-lock``, never inside a
  store where a format's readers look), created exclusively, holding the owner's pid, host
  and process start time. A second run on the same output fails at once naming the owner;
  a lock whose owner is gone (same host, pid dead or reused) is stale and taken over.
- :func:`replace_with`: moves a finished temporary file or directory onto the output. A file
  is replaced atomically (``os.replace``); a directory (a Zarr store) is swapped in two
  renames, old aside then new in, and the old one removed last.
- :func:`clean_leftovers`: what a killed run left beside the output (temporary files, an old
  store moved aside): an old output whose successor never arrived is put back, the rest is
  removed. Called under the lock, so no live run's files are touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from volsr.errors import OutputExistsError

__all__ = [
    "output_lock", "replace_with", "clean_leftovers", "lock_path", "temporary_sibling", "refuse_overlap", "discard",
    "write_text_atomic", "replace_together", "LockedError",
]  # fmt: skip

#: Name endings of what writers leave beside an output while they work.
TEMPORARY_TAG = ".tmp-"
OLD_TAG = ".old-"
_LOCK_SUFFIX = ".volsr-lock"
#: A lock file still empty after this long was left by a writer killed while creating it.
_EMPTY_LOCK_GRACE_S = 10.0
#: Locks held, by lock file and thread, with their depth (a command that saves inside a run
#: re-enters its own lock).
_HELD: dict[tuple[str, int], int] = {}


class LockedError(OutputExistsError):
    """Another live run is writing the same output."""


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of an output: a hidden sibling, ``.NAME.volsr-lock``.

    Parameters
    ----------
    output : str or path
        Output file or store (no key).

    Returns
    -------
    Path

    Examples
    --------
    >>> lock_path("/data/sr.zarr")
    PosixPath('/data/.sr.zarr.volsr-lock')
    """
    path = Path(os.path.abspath(output))
    return path.with_name(f".{path.name}{_LOCK_SUFFIX}")


def temporary_sibling(output: Path, tag: str) -> Path:
    """A hidden sibling of ``output`` for work in progress: ``.NAME.tmp-TAG``.

    Parameters
    ----------
    output : Path
        Final output path.
    tag : str
        Unique part (8 hex digits for :func:`volsr.io.atomic_output`).

    Returns
    -------
    Path

    Examples
    --------
    >>> temporary_sibling(Path("out/sr.h5"), "0123abcd")
    PosixPath('out/.sr.h5.tmp-0123abcd')
    """
    return output.with_name(f".{output.name}{TEMPORARY_TAG}{tag}")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = owner.get("started")
    return started is None or _start_time(pid) in (None, started)


def _read_owner(path: Path) -> dict | None:
    """The lock's owner record; None when the file is empty or torn (a killed creator)."""
    try:
        record = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _stale(path: Path, owner: dict | None) -> bool:
    if owner is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > _EMPTY_LOCK_GRACE_S
    return owner.get("host") == socket.gethostname() and not _alive(owner)


def _create(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    return True


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the output's lock for the block; fail at once if a live run holds it.

    Re-entrant within one process (a run that saves its result through ``save`` takes it
    once). A stale lock (its owner on this host is gone) is taken over; one held on another
    host is respected, and the message says which file to delete if that run is gone.

    Parameters
    ----------
    output : str or path
        Output file or store (no key).

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    LockedError
        If another live run holds the lock.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with output_lock(Path(d) / "sr.zarr") as lock:
    ...         held = lock.exists()
    ...     held, lock.exists()
    (True, False)
    """
    path = lock_path(output)
    key = (str(path), threading.get_ident())  # another thread of this process is another writer
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    with _folder_guard(path.parent):  # judging a lock stale and taking it over is one step
        if not _create(path):
            owner = _read_owner(path)
            if not _stale(path, owner):
                who = "an unknown process" if owner is None else f"pid {owner.get('pid')} on {owner.get('host')}"
                raise LockedError(
                    f"{Path(output)} is being written by another run ({who}); wait for it to finish "
                    f"(if that run is gone, delete {path})"
                )
            path.unlink(missing_ok=True)
            if not _create(path):
                raise LockedError(f"cannot take the lock {path}: another run took it")
    _HELD[key] = 1
    try:
        yield path
    finally:
        del _HELD[key]
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _folder_guard(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder for the moment a lock is judged and taken, so two
    runs finding the same stale lock cannot both take it over."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the flock


def discard(path: Path) -> None:
    """Remove a file or directory tree by first renaming it to a temporary sibling.

    A kill during a long ``rmtree`` then leaves a ``.NAME.tmp-*`` that the next run removes
    (:func:`clean_leftovers`), never a half-deleted tree under a name a run would trust (a
    finished work store with chunks missing).

    Parameters
    ----------
    path : Path
        What to remove (nothing happens if it does not exist).

    Returns
    -------
    None

    Raises
    ------
    OSError
        If the rename fails.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     (Path(d) / "s.zarr").mkdir()
    ...     discard(Path(d) / "s.zarr")
    ...     list(Path(d).iterdir())
    []
    """
    if not (path.exists() or path.is_symlink()):
        return
    doomed = temporary_sibling(path, f"{os.getpid():x}d")
    os.replace(path, doomed)
    _remove(doomed)


def refuse_overlap(output: str | os.PathLike[str], read: Sequence[str | os.PathLike[str]], *, shown: str) -> None:
    """Refuse an output that is (a link to) any file a run reads.

    Parameters
    ----------
    output : str or path
        Output file (no key).
    read : sequence of str or path
        Every file the run reads (:func:`volsr.io.files_read` of each input).
    shown : str
        How the output is named in the message (the user's spelling, with its key).

    Returns
    -------
    None

    Raises
    ------
    OutputExistsError
        If ``output`` resolves to one of ``read``.

    Examples
    --------
    >>> refuse_overlap("/tmp/m.json", ["/tmp/./m.json"], shown="--json /tmp/m.json")
    Traceback (most recent call last):
    ...
    volsr.errors.OutputExistsError: --json /tmp/m.json would replace /tmp/./m.json, which this run reads; write it to another file (volsr never changes its input)
    """
    target = os.path.realpath(output)
    for source in read:
        if os.path.realpath(source) == target:
            raise OutputExistsError(
                f"{shown} would replace {os.fspath(source)}, which this run reads; "
                "write it to another file (volsr never changes its input)"
            )


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a small text file under the output's lock: a temporary sibling, then renamed.

    Parameters
    ----------
    path : str or path
        Destination; replaced only once the new text is complete.
    text : str
        Content (UTF-8).

    Returns
    -------
    None

    Raises
    ------
    LockedError
        If another run holds the output's lock.
    OSError
        If the folder cannot be written.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_text_atomic(Path(d) / "m.json", "{}")
    ...     sorted(p.name for p in Path(d).iterdir())
    ['m.json']
    """
    target = Path(os.path.abspath(path))
    with output_lock(target):
        clean_leftovers(target)
        temporary = temporary_sibling(target, f"{os.getpid():08x}"[-8:])
        try:
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


def replace_with(temporary: Path, output: Path) -> None:
    """Move the complete ``temporary`` onto ``output``, replacing any old output last.

    Parameters
    ----------
    temporary : Path
        A finished file or directory in ``output``'s folder.
    output : Path
        Final path; an existing file is replaced atomically, an existing directory is moved
        aside (``.NAME.old-...``), the new one renamed in, then the old one removed. A kill
        between the two renames leaves the old one aside, which :func:`clean_leftovers`
        (the next run on this output) puts back.

    Returns
    -------
    None

    Raises
    ------
    OSError
        If a rename fails.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     (Path(d) / "new").mkdir(); (Path(d) / "out").mkdir()
    ...     _ = (Path(d) / "new" / "a").write_text("new")
    ...     replace_with(Path(d) / "new", Path(d) / "out")
    ...     sorted(p.name for p in Path(d).iterdir()), (Path(d) / "out" / "a").read_text()
    (['out'], 'new')
    """
    if output.is_symlink() and temporary.is_dir():
        output.unlink()  # the link is replaced, not the directory it points at
    if not (output.is_dir() and not output.is_symlink()):
        os.replace(temporary, output)
        return
    old = output.with_name(f".{output.name}{OLD_TAG}{os.getpid()}")
    os.replace(output, old)
    os.replace(temporary, output)
    _remove(old)


def replace_together(pairs: Sequence[tuple[Path, Path]], output: Path) -> None:
    """Move several complete temporaries onto their files as one change (an ENVI header and
    its binary): all or none, also across a kill.

    A journal beside ``output`` (``.NAME.volsr-swap``) lists the old files moved aside; it is
    written before the first rename and removed after the last. An exception rolls the old
    files back at once; after a kill, :func:`clean_leftovers` (the next run, under the lock)
    rolls them back from the journal. Old files are deleted only once the journal is gone.

    Parameters
    ----------
    pairs : sequence of (Path, Path)
        ``(temporary, final)``; ``output``'s own pair last (the file readers open first).
    output : Path
        The output the lock is held for.

    Returns
    -------
    None

    Raises
    ------
    OSError
        If a rename fails (the old files are back in place).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for name in ("x.hdr", "x.img", "t1", "t2"):
    ...         _ = (Path(d) / name).write_text(name)
    ...     replace_together([(Path(d) / "t2", Path(d) / "x.img"), (Path(d) / "t1", Path(d) / "x.hdr")],
    ...                      Path(d) / "x.hdr")
    ...     sorted(p.name for p in Path(d).iterdir()), (Path(d) / "x.hdr").read_text()
    (['x.hdr', 'x.img'], 't1')
    """
    journal = _journal(output)
    aside = [(final, final.with_name(f".{final.name}{OLD_TAG}{os.getpid()}")) for _, final in pairs
             if final.exists() or final.is_symlink()]
    kept = dict(aside)
    journal.write_text(json.dumps([[str(final), str(kept.get(final, ""))] for _, final in pairs]))
    try:
        for final, old in aside:
            os.replace(final, old)
        for temporary, final in pairs:
            os.replace(temporary, final)
    except BaseException:
        _roll_back(journal)
        raise
    journal.unlink()
    for _, old in aside:
        _remove(old)


def _journal(output: Path) -> Path:
    return output.with_name(f".{output.name}.volsr-swap")


def _roll_back(journal: Path) -> None:
    """Put back every old file a journal lists (the new ones, if renamed in, are dropped)."""
    for final, old in json.loads(journal.read_text() or "[]"):
        if not old:
            _remove(Path(final))  # it did not exist before: none of the new files stays
        elif Path(old).exists():
            _remove(Path(final))
            os.replace(old, final)
    journal.unlink()


def clean_leftovers(output: str | os.PathLike[str]) -> list[Path]:
    """Tidy what killed runs left beside ``output``; call it while holding its lock.

    An old output moved aside by :func:`replace_with` whose successor never arrived is
    renamed back; temporary files and directories (``.NAME.tmp-*``) and old outputs that
    were replaced are removed.

    Parameters
    ----------
    output : str or path
        Output file or store (no key).

    Returns
    -------
    list of Path
        What was removed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / ".x.nii.tmp-0123abcd").write_text("partial")
    ...     [p.name for p in clean_leftovers(Path(d) / "x.nii")], list(Path(d).iterdir())
    (['.x.nii.tmp-0123abcd'], [])
    """
    path = Path(os.path.abspath(output))
    removed = []
    if _journal(path).exists():  # a kill inside replace_together: the old files come back together
        _roll_back(_journal(path))
    for prefix in (OLD_TAG, TEMPORARY_TAG):
        for leftover in sorted(path.parent.glob(f".{_glob_escape(path.name)}{prefix}*")):
            if prefix == OLD_TAG and not path.exists() and not path.is_symlink():
                os.replace(leftover, path)
                continue
            _remove(leftover)
            removed.append(leftover)
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
