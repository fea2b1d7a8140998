"""A BIDS dataset's anatomical images, their inherited metadata and their derivatives' names.

BIDS terms used here: a file name is ``key-value`` *entities* joined by ``_``, then a
*suffix* (``T1w``) and an extension; anatomical images live in ``sub-<label>/anat/`` or
``sub-<label>/ses-<label>/anat/``. A JSON *sidecar* applies to an image when it sits in the
image's folder or one above it (dataset, subject, session level), has the same suffix, and
its entities are a subset of the image's; the metadata is the merge of all applicable
sidecars from the top level down, so the nearest (then the more specific) value wins.

A derivative keeps its source's entities and adds ``res-volsr`` (the BIDS derivatives
entity for "resolution of regularly sampled N-dimensional data", which requires a
``Resolution`` sidecar field) at its place in the schema's entity order; ``rec`` stays the
raw acquisition's reconstruction, so one naming rule serves files with and without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from volsr.errors import VolsrError

__all__ = [
    "BIDSError",
    "AnatImage",
    "ENTITY_ORDER",
    "DERIVATIVE_ENTITY",
    "parse_name",
    "read_json",
    "check_dataset",
    "check_output_dir",
    "find_anatomical",
    "sidecar_metadata",
    "derivative_path",
    "bids_uri",
]

#: Entity keys in the order BIDS file names use (BIDS schema ``rules.entities``, 1.10).
ENTITY_ORDER = (
    "sub", "tpl", "ses", "cohort", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce",
    "trc", "stain", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc",
    "hemi", "space", "split", "recording", "chunk", "atlas", "seg", "scale", "res", "den",
    "label", "desc",
)  # fmt: skip
#: The entity every output gets: ``res-volsr``.
DERIVATIVE_ENTITY = ("res", "volsr")
#: Anatomical files that are masks, not images: not super-resolved.
_MASK_SUFFIXES = frozenset({"defacemask"})
_NIFTI = (".nii.gz", ".nii")
_LABEL = re.compile(r"[A-Za-z0-9]+")
_SUFFIX = re.compile(r"[A-Za-z0-9]+")


class BIDSError(VolsrError, ValueError):
    """A BIDS dataset or output folder that cannot be used as it is."""


@dataclasses.dataclass(frozen=True)
class AnatImage:
    """One anatomical NIfTI image of a BIDS dataset.

    Parameters
    ----------
    path : Path
        Absolute path of the image.
    relpath : str
        Path relative to the dataset root, ``/``-separated.
    entities : tuple of (str, str)
        The name's entities in file-name order, ``sub`` first.
    suffix : str
        ``T1w``, ``T2w``, ``FLAIR``, ...

    Examples
    --------
    >>> image = AnatImage(Path("/d/sub-01/anat/sub-01_T1w.nii.gz"), "sub-01/anat/sub-01_T1w.nii.gz",
    ...                   (("sub", "01"),), "T1w")
    >>> image.subject, image.session, image.label
    ('01', None, 'sub-01 T1w')
    """

    path: Path
    relpath: str
    entities: tuple[tuple[str, str], ...]
    suffix: str

    @property
    def subject(self) -> str:
        """The subject label (without ``sub-``)."""
        return dict(self.entities)["sub"]

    @property
    def session(self) -> str | None:
        """The session label (without ``ses-``), or None."""
        return dict(self.entities).get("ses")

    @property
    def label(self) -> str:
        """A short name for messages: ``sub-01 ses-1 acq-fast T1w``."""
        return " ".join([*(f"{k}-{v}" for k, v in self.entities), self.suffix])


def parse_name(name: str) -> tuple[tuple[tuple[str, str], ...], str, str] | None:
    """Split a BIDS file name into entities, suffix and extension.

    Parameters
    ----------
    name : str
        File name without folder, e.g. ``sub-01_acq-fast_T1w.nii.gz``.

    Returns
    -------
    tuple or None
        ``(entities, suffix, extension)`` with entities as ``(key, label)`` pairs in name
        order and the extension from the first dot (``.nii.gz``); None when the name does
        not follow the pattern (a part without ``-``, an empty or non-alphanumeric label).

    Examples
    --------
    >>> parse_name("sub-01_ses-1_T2w.json")
    ((('sub', '01'), ('ses', '1')), 'T2w', '.json')
    >>> parse_name("T1w.json")
    ((), 'T1w', '.json')
    >>> parse_name("dataset_description.json") is None
    True
    """
    stem, dot, rest = name.partition(".")
    *parts, suffix = stem.split("_")
    entities = []
    for part in parts:
        key, dash, label = part.partition("-")
        if not (dash and _LABEL.fullmatch(key) and _LABEL.fullmatch(label)):
            return None
        entities.append((key, label))
    if not _SUFFIX.fullmatch(suffix) or len({k for k, _ in entities}) != len(entities):
        return None
    return tuple(entities), suffix, dot + rest


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or a one-line error naming the file.

    Parameters
    ----------
    path : Path
        A ``.json`` file.

    Returns
    -------
    dict

    Raises
    ------
    BIDSError
        If the file cannot be read, is not JSON, or holds something else than an object.

    Examples
    --------
    >>> read_json(Path("/no/such.json"))
    Traceback (most recent call last):
    ...
    volsr.bids.layout.BIDSError: cannot read /no/such.json: No such file or directory
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise BIDSError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise BIDSError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise BIDSError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def check_dataset(bids_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``dataset_description.json`` of a BIDS dataset, refusing a folder without one.

    Parameters
    ----------
    bids_dir : str or path
        The dataset root.

    Returns
    -------
    dict
        The dataset description.

    Raises
    ------
    BIDSError
        If ``bids_dir`` is not a folder or has no readable ``dataset_description.json``.

    Examples
    --------
    >>> check_dataset("/no/such/dataset")
    Traceback (most recent call last):
    ...
    volsr.bids.layout.BIDSError: BIDS_DIR /no/such/dataset is not a folder
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise BIDSError(f"BIDS_DIR {root} is not a folder")
    description = root / "dataset_description.json"
    if not description.is_file():
        raise BIDSError(f"{root} is not a BIDS dataset: it has no dataset_description.json")
    return read_json(description)


def check_output_dir(bids_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """The resolved output folder, refused inside the dataset except under ``derivatives/``.

    Parameters
    ----------
    bids_dir, out_dir : str or path
        Dataset root and output folder (need not exist).

    Returns
    -------
    Path
        ``out_dir``, absolute with links resolved.

    Raises
    ------
    BIDSError
        If ``out_dir`` is the dataset, ``BIDS_DIR/derivatives`` itself, or inside the
        dataset outside ``derivatives/``; or exists and is not a folder.

    Examples
    --------
    >>> check_output_dir("/data/ds", "/data/ds/derivatives/volsr")
    PosixPath('/data/ds/derivatives/volsr')
    >>> check_output_dir("/data/ds", "/data/ds/sub-01")
    Traceback (most recent call last):
    ...
    volsr.bids.layout.BIDSError: OUT_DIR /data/ds/sub-01 is inside BIDS_DIR /data/ds: write derivatives outside it or under /data/ds/derivatives/ (e.g. /data/ds/derivatives/volsr)
    """
    root, out = Path(bids_dir).resolve(), Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise BIDSError(f"OUT_DIR {out} exists and is not a folder")
    if out == root or root in out.parents:
        parts = out.relative_to(root).parts
        if len(parts) < 2 or parts[0] != "derivatives":
            raise BIDSError(f"OUT_DIR {out} is inside BIDS_DIR {root}: write derivatives outside it or "
                            f"under {root / 'derivatives'}/ (e.g. {root / 'derivatives' / 'volsr'})")
    return out


def _labels(participant_labels: Iterable[str] | None) -> tuple[str, ...] | None:
    if participant_labels is None:
        return None
    labels = []
    for given in participant_labels:
        label = given[4:] if given.startswith("sub-") else given
        if not _LABEL.fullmatch(label):
            raise BIDSError(f"--participant-label must be alphanumeric (with or without sub-), got {given!r}")
        labels.append(label)
    return tuple(dict.fromkeys(labels))


def _image(path: Path, root: Path, subject: str, session: str | None, *, warn: bool) -> AnatImage | None:
    """The image at ``path``, or None (with a warning if ``warn``) when its name breaks BIDS."""
    parsed = parse_name(path.name)
    if parsed is None or parsed[2] not in _NIFTI:
        if parsed is None and warn:
            warnings.warn(f"skipping {path}: not a BIDS file name", stacklevel=3)
        return None
    entities, suffix, _ = parsed
    if entities[:1] != (("sub", subject),) or dict(entities).get("ses") != session:
        where = f"sub-{subject}" + (f"/ses-{session}" if session else "")
        if warn:
            warnings.warn(f"skipping {path}: its sub/ses entities do not match its folder {where}",
                          stacklevel=3)
        return None
    if suffix in _MASK_SUFFIXES:
        return None
    return AnatImage(path=path, relpath=path.relative_to(root).as_posix(), entities=entities, suffix=suffix)


def _anat_folders(subject_dir: Path) -> list[tuple[Path, str | None]]:
    folders = [(subject_dir / "anat", None)]
    for session in sorted(subject_dir.glob("ses-*")):
        if session.is_dir() and _LABEL.fullmatch(session.name[4:]):
            folders.append((session / "anat", session.name[4:]))
    return folders


def find_anatomical(
    bids_dir: str | os.PathLike[str], *, participant_labels: Sequence[str] | None = None
) -> tuple[AnatImage, ...]:
    """Every anatomical NIfTI image of a dataset (``sub-*/[ses-*/]anat/*.nii[.gz]``).

    Hidden files and folders, ``derivatives/`` and anything outside ``sub-*`` folders are
    ignored, and so are deface masks; a file whose name breaks BIDS is skipped with a
    warning.

    Parameters
    ----------
    bids_dir : str or path
        The dataset root.
    participant_labels : sequence of str, optional
        Only these subjects (``01`` or ``sub-01``); default all.

    Returns
    -------
    tuple of AnatImage
        Sorted by subject, session and file name.

    Raises
    ------
    BIDSError
        If a label is malformed, a requested subject has no anatomical image, or the
        dataset has none at all.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     (Path(d) / "sub-01" / "anat").mkdir(parents=True)
    ...     _ = (Path(d) / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"")
    ...     [image.relpath for image in find_anatomical(d)]
    ['sub-01/anat/sub-01_T1w.nii.gz']
    """
    root = Path(bids_dir).resolve()
    labels = _labels(participant_labels)
    images: list[AnatImage] = []
    for subject_dir in sorted(root.glob("sub-*")):
        subject = subject_dir.name[4:]
        if not (subject_dir.is_dir() and _LABEL.fullmatch(subject)):
            continue
        for folder, session in _anat_folders(subject_dir):
            for path in sorted(folder.glob("*.nii*")) if folder.is_dir() else ():
                wanted = labels is None or subject in labels
                image = None if path.name.startswith(".") else _image(path, root, subject, session, warn=wanted)
                images += [image] if image is not None else []
    if not images:
        raise BIDSError(f"no anatomical images in {root} (looked for sub-*/[ses-*/]anat/*.nii[.gz])")
    found = {image.subject for image in images}
    missing = [label for label in labels or () if label not in found]
    if missing:
        have = ", ".join(f"sub-{s}" for s in sorted(found))
        raise BIDSError(f"no anatomical images in {root} for {', '.join(f'sub-{m}' for m in missing)} "
                        f"(subjects with some: {have})")
    return tuple(image for image in images if labels is None or image.subject in labels)


def _applies(path: Path, image: AnatImage) -> int | None:
    """The number of entities of sidecar ``path`` when it applies to ``image``, else None."""
    parsed = parse_name(path.name)
    if parsed is None or parsed[2] != ".json" or parsed[1] != image.suffix:
        return None
    entities = set(parsed[0])
    return len(entities) if entities <= set(image.entities) else None


def sidecar_metadata(bids_dir: str | os.PathLike[str], image: AnatImage) -> dict[str, Any]:
    """The image's metadata by the BIDS inheritance principle (nearest sidecar wins).

    Parameters
    ----------
    bids_dir : str or path
        The dataset root.
    image : AnatImage
        One image of :func:`find_anatomical`.

    Returns
    -------
    dict
        The merged metadata; empty when no sidecar applies.

    Raises
    ------
    BIDSError
        If an applicable sidecar cannot be read or is not a JSON object.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     (Path(d) / "sub-01" / "anat").mkdir(parents=True)
    ...     _ = (Path(d) / "T1w.json").write_text('{"SliceThickness": 4, "EchoTime": 0.1}')
    ...     _ = (Path(d) / "sub-01" / "anat" / "sub-01_T1w.json").write_text('{"SliceThickness": 3}')
    ...     _ = (Path(d) / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"")
    ...     sidecar_metadata(d, find_anatomical(d)[0])
    {'SliceThickness': 3, 'EchoTime': 0.1}
    """
    root = Path(bids_dir).resolve()
    levels = [root, root / f"sub-{image.subject}"]
    if image.session is not None:
        levels.append(levels[-1] / f"ses-{image.session}")
    levels.append(image.path.parent)
    merged: dict[str, Any] = {}
    for folder in dict.fromkeys(levels):
        found = [(count, path) for path in folder.glob("*.json")
                 if not path.name.startswith(".") and (count := _applies(path, image)) is not None]
        for _, path in sorted(found):
            merged.update(read_json(path))
    return merged


def derivative_path(out_dir: str | os.PathLike[str], image: AnatImage, *, extension: str = ".nii.gz") -> Path:
    """Where the super-resolved ``image`` goes: same folders and entities, plus ``res-volsr``.

    Parameters
    ----------
    out_dir : str or path
        The derivative dataset's root.
    image : AnatImage
        The source image.
    extension : str
        ``.nii.gz`` for the image, ``.json`` for its sidecar.

    Returns
    -------
    Path

    Examples
    --------
    >>> image = AnatImage(Path("/d/sub-01/ses-1/anat/sub-01_ses-1_rec-norm_run-2_T2w.nii"),
    ...                   "sub-01/ses-1/anat/sub-01_ses-1_rec-norm_run-2_T2w.nii",
    ...                   (("sub", "01"), ("ses", "1"), ("rec", "norm"), ("run", "2")), "T2w")
    >>> derivative_path("/out", image).as_posix()
    '/out/sub-01/ses-1/anat/sub-01_ses-1_rec-norm_run-2_res-volsr_T2w.nii.gz'
    """
    key, value = DERIVATIVE_ENTITY
    rank = ENTITY_ORDER.index(key)
    kept = [(k, v) for k, v in image.entities if k != key]
    later = [n for n, (k, _) in enumerate(kept) if k in ENTITY_ORDER and ENTITY_ORDER.index(k) > rank]
    at = later[0] if later else len(kept)
    entities = [*kept[:at], (key, value), *kept[at:]]
    name = "_".join([*(f"{k}-{v}" for k, v in entities), image.suffix]) + extension
    folder = Path(out_dir, *Path(image.relpath).parent.parts)
    return folder / name


def bids_uri(image: AnatImage, *, dataset: str = "raw") -> str:
    """The BIDS URI of an image in the source dataset: ``bids:raw:sub-01/anat/...``.

    Parameters
    ----------
    image : AnatImage
        The source image.
    dataset : str
        The dataset's name in the derivative's ``DatasetLinks``.

    Returns
    -------
    str

    Examples
    --------
    >>> bids_uri(AnatImage(Path("/d/x"), "sub-01/anat/sub-01_T1w.nii.gz", (("sub", "01"),), "T1w"))
    'bids:raw:sub-01/anat/sub-01_T1w.nii.gz'
    """
    return f"bids:{dataset}:{image.relpath}"
