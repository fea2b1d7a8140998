"""Validation on whole volumes through the engine: the numbers users will see.

Each validation volume is prepared once: normalised by its 99.9th percentile and clipped to
[0, 1] (the MRI evaluation convention), optionally centre-cropped to keep validation cheap,
and thick-sliced along one axis with a Gaussian slice profile (FWHM = slice spacing). A
model is then scored by upsampling the thick-slice volume with
:func:`volsr.engine.upsample` (the same path as ``volsr upsample``) and comparing with the
HR voxels the LR grid covers. Cubic interpolation is scored once, so that every
validation row also shows the gain over cubic.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from volsr import io
from volsr.degrade import thick_slice
from volsr.engine import EngineOptions, upsample
from volsr.geometry import crop_affine, downsampled_grid
from volsr.intensity import percentile_normalise
from volsr.metrics import psnr, ssim
from volsr.volume import Volume

__all__ = ["ValidationCase", "prepare_case", "VolumeValidator", "VALIDATION_MEMORY"]

#: Memory budget of a validation task (the engine's ``max_memory``).
VALIDATION_MEMORY = "4G"


@dataclasses.dataclass(frozen=True)
class ValidationCase:
    """One prepared validation volume.

    Parameters
    ----------
    name : str
        Key prefix of its metrics.
    lr : Volume
        Thick-slice input (float32, in memory).
    hr : (X, Y, Z) float32 ndarray
        Reference on the grid the LR volume covers, in [0, 1].
    scale : tuple of float
        Per-axis factor from ``lr`` to ``hr`` (exact ``n_hr / n_lr``).
    """

    name: str
    lr: Volume
    hr: np.ndarray
    scale: tuple[float, ...]


def prepare_case(
    volume: Volume,
    *,
    name: str,
    factor: float,
    axis: int | Sequence[int],
    crop: Sequence[int] | None = None,
) -> ValidationCase:
    """Normalise, crop and thick-slice one HR volume into a validation case.

    Parameters
    ----------
    volume : Volume
        HR volume with 3 spatial axes and no band/channel axis.
    name : str
        Name of its metrics.
    factor : float
        Thick-slice factor along ``axis`` (>= 1); Gaussian profile with FWHM = factor.
    axis : int or sequence of int
        Slice axis (spatial axis index); several axes are thick-sliced alike one after the
        other (``(0, 1, 2)``: an isotropic low-resolution volume).
    crop : (3,) sequence of int, optional
        Centre crop (voxels; axes shorter than the crop are kept whole).

    Returns
    -------
    ValidationCase

    Raises
    ------
    ValueError
        If the volume is not 3-D or cannot be normalised (empty).
    GeometryError
        If ``factor < 1`` or the slice axis is too short.

    Examples
    --------
    >>> hr = Volume(np.random.default_rng(0).random((8, 8, 8), np.float32), np.eye(4),
    ...             ("i", "j", "k"))
    >>> case = prepare_case(hr, name="noise", factor=4, axis=2)
    >>> case.lr.shape, case.hr.shape, case.scale
    ((8, 8, 2), (8, 8, 8), (1.0, 1.0, 4.0))
    >>> prepare_case(hr, name="noise", factor=2, axis=(0, 1, 2)).lr.shape
    (4, 4, 4)
    """
    if volume.ndim != 3 or len(volume.spatial_axes) != 3:
        raise ValueError(f"validation volume {name!r} must have 3 spatial axes, got {volume.axes}")
    data, _ = percentile_normalise(np.asarray(volume.data.compute()), percentile=99.9, clip=True)
    affine = volume.affine
    if crop is not None:
        size = [min(int(c), n) for c, n in zip(crop, data.shape)]
        start = [(n - c) // 2 for n, c in zip(data.shape, size)]
        data = data[tuple(slice(s, s + c) for s, c in zip(start, size))]
        affine = crop_affine(affine, start)
    lr = Volume(data, affine, ("i", "j", "k"))
    reference, scale = data, [1.0, 1.0, 1.0]
    for a in (axis,) if isinstance(axis, int) else tuple(axis):
        lr = thick_slice(lr, axis=a, factor=factor, profile="gaussian")
        n_lr, n_cov = downsampled_grid(data.shape[a], factor)
        reference = np.take(reference, np.arange(n_cov), axis=a)
        scale[a] = n_cov / n_lr
    lr = lr.replace(data=np.asarray(lr.data.compute(), dtype=np.float32))
    return ValidationCase(name=name, lr=lr, hr=np.ascontiguousarray(reference),
                          scale=tuple(scale))


def _volume_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".zarr", ".h5"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


class VolumeValidator:
    """Score a model on prepared validation volumes through :func:`volsr.engine.upsample`.

    Parameters
    ----------
    cases : sequence of ValidationCase
        Prepared volumes (see :func:`prepare_case`).
    device : str
        Where the model runs.

    Raises
    ------
    ValueError
        If ``cases`` is empty or two cases share a name.

    Notes
    -----
    ``validator(model)`` returns ``"<name>/psnr"``, ``"<name>/ssim"`` (data range 1),
    ``"<name>/psnr_gain"`` (over cubic), ``"<name>/seconds"`` per volume, and ``"score"``:
    the mean PSNR gain over cubic (the ``best`` checkpoint's criterion).

    Examples
    --------
    >>> hr = Volume(np.random.default_rng(0).random((12, 12, 24), np.float32), np.eye(4),
    ...             ("i", "j", "k"))
    >>> validator = VolumeValidator([prepare_case(hr, name="noise", factor=2, axis=2)])
    >>> from volsr.models import create_model
    >>> round(validator(create_model("cubic"))["noise/psnr_gain"], 6)
    0.0
    """

    def __init__(self, cases: Sequence[ValidationCase], *, device: str = "cpu") -> None:
        names = [case.name for case in cases]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"cases must be non-empty with distinct names, got {names}")
        self.cases, self.device = list(cases), device
        self.cubic = {case.name: self._score(case, "cubic")[0] for case in self.cases}

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | Path],
        *,
        factor: float,
        axis: int,
        crop: Sequence[int] | None = None,
        names: Sequence[str] | None = None,
        device: str = "cpu",
    ) -> VolumeValidator:
        """Open and prepare volume files.

        Parameters
        ----------
        paths : sequence of str or Path
            Volume files readable by :func:`volsr.io.load`.
        factor, axis, crop
            As :func:`prepare_case`.
        names : sequence of str, optional
            Metric names, one per path (default: the file names without suffix).
        device : str
            Where the model runs.

        Returns
        -------
        VolumeValidator

        Raises
        ------
        FileNotFoundError
            If a file does not exist.

        Examples
        --------
        >>> VolumeValidator.from_paths(["missing.nii.gz"], factor=4, axis=2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: validation volume not found: missing.nii.gz
        """
        paths = [Path(p) for p in paths]
        names = [_volume_name(p) for p in paths] if names is None else list(names)
        cases = []
        for path, name in zip(paths, names, strict=True):
            if not path.is_file():
                raise FileNotFoundError(f"validation volume not found: {path}")
            cases.append(prepare_case(io.load(path), name=name, factor=factor, axis=axis,
                                      crop=crop))
        return cls(cases, device=device)

    def _score(self, case: ValidationCase, model: str | nn.Module) -> tuple[dict, float]:
        started = time.perf_counter()
        # Training machines have memory to spare: larger tiles recompute less halo.
        out = upsample(case.lr, scale=case.scale, model=model,
                       options=EngineOptions(device=str(self.device), max_memory=VALIDATION_MEMORY))
        estimate = np.asarray(out.data.compute(), dtype=np.float32)
        seconds = time.perf_counter() - started
        scores = {
            "psnr": psnr(case.hr, estimate, data_range=1.0),
            "ssim": ssim(case.hr, estimate, data_range=1.0),
        }
        return scores, seconds

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` on every case (see the class Notes).

        Parameters
        ----------
        model : torch.nn.Module
            A module with a ``card`` (or a registry name).

        Returns
        -------
        dict of str to float

        Raises
        ------
        ValueError
            If the model does not support the validation factor.

        Examples
        --------
        See the class example.
        """
        metrics: dict[str, float] = {}
        gains = []
        for case in self.cases:
            scores, seconds = self._score(case, model)
            gain = scores["psnr"] - self.cubic[case.name]["psnr"]
            gains.append(gain)
            metrics.update({f"{case.name}/psnr": scores["psnr"], f"{case.name}/ssim": scores["ssim"],
                            f"{case.name}/psnr_gain": gain, f"{case.name}/seconds": seconds})
        metrics["score"] = float(np.mean(gains))
        return metrics
