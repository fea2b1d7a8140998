"""Where the real data lives: volumes inside installed wheels and the shared data folder.

Nothing is downloaded at run time. The ICBM152 2009a template ships inside the ``nilearn``
wheel; its SHA-256 is pinned so that benchmark numbers always refer to the same voxels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from volsr.errors import FormatError

__all__ = ["ICBM152_T1_SHA256", "icbm152_t1_path", "shared_data_root"]

#: SHA-256 of ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` in nilearn 0.10 - 0.14.
ICBM152_T1_SHA256 = "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6"
_ICBM152_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def icbm152_t1_path(*, verify: bool = True) -> Path:
    """Path of the ICBM152 2009a T1 template (197x233x189, 1 mm, uint8) inside nilearn.

    Parameters
    ----------
    verify : bool
        Check the file's SHA-256 against :data:`ICBM152_T1_SHA256`.

    Returns
    -------
    Path
        The ``.nii.gz`` file (read-only: never modify it).

    Raises
    ------
    FormatError
        If nilearn is not installed, the file is missing, or its checksum differs.

    Examples
    --------
    >>> icbm152_t1_path().name  # doctest: +SKIP
    'mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz'
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FormatError("the ICBM152 template ships with nilearn: pip install 'volsr[data]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / _ICBM152_T1
    if not path.is_file():
        raise FormatError(f"nilearn is installed but {path} is missing")
    if verify and _sha256(path) != ICBM152_T1_SHA256:
        raise FormatError(f"checksum mismatch for {path}: not the pinned ICBM152 2009a file")
    return path


def shared_data_root() -> Path:
    """Folder of the project's shared real data (``$VOLSR_DATA``, else ``../shared/data``).

    Returns
    -------
    Path
        The folder (may not exist on machines without the shared data).

    Examples
    --------
    >>> shared_data_root().name  # doctest: +SKIP
    'data'
    """
    env = os.environ.get("VOLSR_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"
