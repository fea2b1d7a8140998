"""BIDS derivatives mode: super-resolve a BIDS dataset's anatomical images (``volsr bids``).

- :func:`run_participant`: every ``sub-*/[ses-*/]anat/*.nii[.gz]`` image into
  ``OUT_DIR/sub-*/[ses-*/]anat/*_res-volsr_<suffix>.nii.gz`` with a JSON sidecar (sources,
  model, factors, acquisition model) and the derivative's ``dataset_description.json``;
  resumable per file.
- :func:`run_bids`: the same on the command line's parsed arguments.
- :mod:`volsr.bids.layout`: finding images, sidecar inheritance, derivative names.
- :mod:`volsr.bids.derivatives`: the JSON written.
"""

from volsr.bids.derivatives import ModelRecord, dataset_description, file_sidecar
from volsr.bids.layout import (
    AnatImage,
    BIDSError,
    derivative_path,
    find_anatomical,
    sidecar_metadata,
)
from volsr.bids.run import FileResult, run_bids, run_participant

__all__ = [
    "AnatImage",
    "BIDSError",
    "FileResult",
    "ModelRecord",
    "dataset_description",
    "derivative_path",
    "file_sidecar",
    "find_anatomical",
    "run_bids",
    "run_participant",
    "sidecar_metadata",
]
