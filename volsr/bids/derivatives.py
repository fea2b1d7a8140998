"""The JSON of a BIDS derivative dataset written by volsr: dataset description and sidecars.

``dataset_description.json`` declares ``DatasetType: "derivative"``, volsr in
``GeneratedBy``, the raw dataset in ``SourceDatasets`` and, under the name ``raw`` in
``DatasetLinks``, the dataset the sidecars' BIDS URIs (``bids:raw:sub-01/anat/...``) point
into. Each image's sidecar holds the derivative fields (``Description``, ``Sources``,
``SpatialReference``, ``SkullStripped``, ``Resolution``, the last required by the ``res``
entity) and one ``SuperResolution`` object: software and model (with the SHA-256 of its
weights), the SHA-256 of the source image's bytes, per-axis factors, voxel sizes and
shapes, and the acquisition model (mm).

:func:`run_key` is what makes a finished output the same as a requested one: its source
(path and content), factors, model and weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import volsr
from volsr.acquisition import AcquisitionModel
from volsr.bids.layout import AnatImage, BIDSError, bids_uri, read_json
from volsr.io.outputs import LockedError, write_text_atomic

__all__ = ["BIDS_VERSION", "ModelRecord", "dataset_description", "write_dataset_description",
           "file_sidecar", "RunKey", "run_key", "to_text"]

#: The BIDS version the derivatives follow (BIDS URIs and ``DatasetLinks`` need >= 1.8).
BIDS_VERSION = "1.10.0"
_NAME = "volsr"
_DECIMALS = 6


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """The model of a run, as the sidecars record it.

    Parameters
    ----------
    name : str
        Registry name (``linear``, ``meta_srgan.t1``).
    kind : str
        ``interpolation`` or ``network``.
    weights_sha256 : str
        SHA-256 of the weights (:func:`volsr.engine.manifest.model_identity`).

    Examples
    --------
    >>> ModelRecord("linear", "interpolation", "e3b0c442").name
    'linear'
    """

    name: str
    kind: str
    weights_sha256: str


def _location(bids_dir: Path, out_dir: Path) -> str:
    """The raw dataset for ``DatasetLinks``: relative from a nested derivative, else a file URI."""
    if bids_dir / "derivatives" in out_dir.parents:
        return Path(os.path.relpath(bids_dir, out_dir)).as_posix()
    return bids_dir.as_uri()


def dataset_description(
    bids_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], raw: dict[str, Any]
) -> dict[str, Any]:
    """The derivative dataset's ``dataset_description.json`` content.

    Parameters
    ----------
    bids_dir, out_dir : str or path
        Raw dataset root and derivative root (absolute, resolved).
    raw : dict
        The raw dataset's description (its ``Name`` and ``DatasetDOI`` are used).

    Returns
    -------
    dict

    Examples
    --------
    >>> d = dataset_description("/data/ds", "/data/ds/derivatives/volsr", {"Name": "ds"})
    >>> d["DatasetType"], d["DatasetLinks"], d["SourceDatasets"]
    ('derivative', {'raw': '../..'}, [{'URL': 'file:///data/ds'}])
    """
    root, out = Path(bids_dir), Path(out_dir)
    source = {"URL": root.as_uri()}
    if isinstance(raw.get("DatasetDOI"), str):
        source["DOI"] = raw["DatasetDOI"]
    name = raw.get("Name") if isinstance(raw.get("Name"), str) else root.name
    return {
        "Name": f"volsr super-resolution of {name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": _NAME, "Version": volsr.__version__,
            "Description": "super-resolution of anatomical MRI (volsr bids)",
        }],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": _location(root, out)},
    }  # fmt: skip


def _is_ours(existing: dict[str, Any]) -> bool:
    generated = existing.get("GeneratedBy")
    names = [g.get("Name") for g in generated if isinstance(g, dict)] if isinstance(generated, list) else []
    return existing.get("DatasetType") == "derivative" and _NAME in names


def write_dataset_description(
    bids_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], raw: dict[str, Any]
) -> Path:
    """Create or refresh ``OUT_DIR/dataset_description.json``; refuse another dataset's.

    Parameters
    ----------
    bids_dir, out_dir : str or path
        Raw dataset root and derivative root (absolute, resolved; ``out_dir`` is created).
    raw : dict
        The raw dataset's description.

    Returns
    -------
    Path
        The file.

    Raises
    ------
    BIDSError
        If ``out_dir`` holds a dataset description that is not a volsr derivative, or a
        volsr derivative of another dataset.
    OSError
        If the folder cannot be written.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = write_dataset_description(Path(d) / "raw", Path(d) / "out", {"Name": "raw"})
    ...     read_json(path)["GeneratedBy"][0]["Name"]
    'volsr'
    """
    out = Path(out_dir)
    wanted = dataset_description(bids_dir, out, raw)
    path = out / "dataset_description.json"
    if path.exists():
        existing = read_json(path)
        if not _is_ours(existing):
            raise BIDSError(f"OUT_DIR {out} holds another dataset ({path} is not a volsr derivative); "
                            "choose a new folder, e.g. BIDS_DIR/derivatives/volsr")
        if existing.get("SourceDatasets") != wanted["SourceDatasets"]:
            raise BIDSError(f"OUT_DIR {out} holds volsr derivatives of another dataset "
                            f"({existing.get('SourceDatasets')}); choose a new folder")
        if existing == wanted:
            return path
    out.mkdir(parents=True, exist_ok=True)
    for attempt in range(20):  # runs of other participants may be writing the same file
        try:
            write_text_atomic(path, to_text(wanted))
            return path
        except LockedError:
            if attempt == 19:
                raise
            time.sleep(0.1)
    return path


def _rounded(values: Any) -> list[float]:
    return [round(float(v), _DECIMALS) for v in values]


def _shown(values: list[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def file_sidecar(
    image: AnatImage,
    metadata: dict[str, Any],
    *,
    model: ModelRecord,
    factors: tuple[float, ...],
    spacing_in: tuple[float, ...],
    spacing_out: tuple[float, ...],
    shape_in: tuple[int, ...],
    shape_out: tuple[int, ...],
    acquisition: AcquisitionModel,
    source_sha256: str,
) -> dict[str, Any]:
    """The JSON sidecar of one super-resolved image.

    Parameters
    ----------
    image : AnatImage
        The source image.
    metadata : dict
        Its inherited metadata (only ``SkullStripped`` is carried over; default false).
    model : ModelRecord
        The model that ran.
    factors, spacing_in, spacing_out : (D,) tuple of float
        Per-spatial-axis factors and voxel sizes before and after (mm), array order.
    shape_in, shape_out : tuple of int
        Array shapes before and after.
    acquisition : AcquisitionModel
        The source's acquisition model.
    source_sha256 : str
        SHA-256 of the source file's bytes (:func:`volsr.engine.manifest.content_digest`):
        a re-converted source at the same path is another run.

    Returns
    -------
    dict

    Examples
    --------
    >>> from volsr.acquisition import acquisition_from_spacing
    >>> image = AnatImage(Path("/d/x"), "sub-01/anat/sub-01_T1w.nii.gz", (("sub", "01"),), "T1w")
    >>> s = file_sidecar(image, {}, model=ModelRecord("linear", "interpolation", "e3b0"),
    ...                  factors=(1, 1, 4), spacing_in=(1, 1, 4), spacing_out=(1, 1, 1),
    ...                  shape_in=(8, 8, 4), shape_out=(8, 8, 16),
    ...                  acquisition=acquisition_from_spacing((1, 1, 4)), source_sha256="9f86d081")
    >>> s["Sources"], s["SuperResolution"]["ScaleFactors"]
    (['bids:raw:sub-01/anat/sub-01_T1w.nii.gz'], [1.0, 1.0, 4.0])
    """
    source = bids_uri(image)
    before, after, scale = _rounded(spacing_in), _rounded(spacing_out), _rounded(factors)
    return {
        "Description": f"{image.relpath} super-resolved by volsr (model {model.name})",
        "Sources": [source],
        "SpatialReference": source,
        "SkullStripped": metadata.get("SkullStripped") is True,
        "Resolution": f"{_shown(after)} mm voxels, super-resolved from {_shown(before)} mm "
                      f"(factors {_shown(scale)} along the array axes)",
        "SuperResolution": {
            "GeneratedBy": {"Name": _NAME, "Version": volsr.__version__, "Model": model.name,
                            "ModelKind": model.kind, "WeightsSHA256": model.weights_sha256},
            "SourceSHA256": source_sha256,
            "ScaleFactors": scale,
            "InputVoxelSize": before,
            "OutputVoxelSize": after,
            "InputShape": list(shape_in),
            "OutputShape": list(shape_out),
            "AcquisitionModel": acquisition.to_json(),
        },
    }  # fmt: skip


class RunKey(NamedTuple):
    """What identifies an output's run (see :func:`run_key`).

    Examples
    --------
    >>> RunKey(("bids:raw:a",), (1.0, 1.0, 4.0), "linear", "e3b0", "9f86").model
    'linear'
    """

    sources: tuple[str, ...]
    factors: tuple[float, ...]
    model: str
    weights_sha256: str
    source_sha256: str | None  # None: not recorded (a sidecar of an older volsr)


def run_key(sidecar: dict[str, Any] | None) -> RunKey | None:
    """What identifies an output's run: source and its content, factors, model and weights.

    Parameters
    ----------
    sidecar : dict or None
        A sidecar of :func:`file_sidecar` (possibly edited by hand), or None.

    Returns
    -------
    RunKey or None
        None when ``sidecar`` is None or lacks one of the fields; a missing
        ``SourceSHA256`` gives ``source_sha256=None``, which matches no run of this version.

    Examples
    --------
    >>> run_key({"Sources": ["bids:raw:a"]}) is None
    True
    """
    try:
        record = sidecar["SuperResolution"]
        generated = record["GeneratedBy"]
        digest = record.get("SourceSHA256")
        return RunKey(tuple(sidecar["Sources"]), tuple(_rounded(record["ScaleFactors"])), generated["Model"],
                      generated["WeightsSHA256"], digest if isinstance(digest, str) else None)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def to_text(value: dict[str, Any]) -> str:
    """JSON text as written to disk (2-space indent, final newline).

    Parameters
    ----------
    value : dict
        JSON-able.

    Returns
    -------
    str

    Raises
    ------
    TypeError
        If ``value`` holds something JSON cannot encode.

    Examples
    --------
    >>> to_text({"a": 1})
    '{\\n  "a": 1\\n}\\n'
    """
    return json.dumps(value, indent=2) + "\n"
