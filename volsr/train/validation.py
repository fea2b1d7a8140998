"""One validation protocol for volumes and cubes, through the engine: the numbers users will see.

A case is a held-out LR input (a :class:`~volsr.volume.Volume`: an MRI volume, or a
hyperspectral cube with its band axis) and the HR reference its grid covers. MRI volumes
are prepared by :func:`prepare_case`: normalised by their 99.9th percentile and clipped to
[0, 1] (the MRI evaluation convention), optionally centre-cropped to keep validation cheap,
and thick-sliced along one axis with a Gaussian slice profile (FWHM = slice spacing); cubes
by :func:`cube_case` from the hyperspectral protocol's pair (divided by their maximum,
antialiased bicubic). A model is scored by upsampling each input with
:func:`volsr.engine.upsample` (the same path as ``volsr upsample``) and comparing with the
reference by the metrics of its kind (:data:`PROTOCOLS`: PSNR and SSIM for volumes, MPSNR
and SAM for cubes, whose outputs are clipped to [0, 1] first). The kind's interpolation
baseline is scored once, so every validation row also shows the gain over it; the mean
gain is the ``score`` that picks the ``best`` checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from volsr import io
from volsr.data.hsi import HSIPair
from volsr.degrade import thick_slice
from volsr.engine import EngineOptions, upsample
from volsr.geometry import crop_affine, downsampled_grid
from volsr.intensity import percentile_normalise
from volsr.metrics import mpsnr, psnr, sam, ssim
from volsr.volume import Volume

__all__ = ["ValidationCase", "Protocol", "PROTOCOLS", "prepare_case", "cube_case", "VolumeValidator",
           "VALIDATION_MEMORY"]

#: Memory budget of a validation task (the engine's ``max_memory``).
VALIDATION_MEMORY = "4G"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one kind of case is scored.

    Parameters
    ----------
    baseline : str
        The registry's interpolation every gain is measured against.
    metrics : dict of str to callable
        ``metric(hr, estimate) -> float``; the first one's gain over the baseline is the score.
    clip : bool
        Clip outputs to [0, 1] before the metrics.
    """

    baseline: str
    metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]]
    clip: bool


#: The kinds of case: ``"volume"`` (3 spatial axes) and ``"cube"`` (a band axis).
PROTOCOLS = {
    "volume": Protocol("cubic", {"psnr": lambda hr, y: psnr(hr, y, data_range=1.0),
                                 "ssim": lambda hr, y: ssim(hr, y, data_range=1.0)}, clip=False),
    "cube": Protocol("bicubic", {"mpsnr": lambda hr, y: mpsnr(hr, y, data_range=1.0), "sam": sam}, clip=True),
}


@dataclasses.dataclass(frozen=True)
class ValidationCase:
    """One prepared validation volume.

    Parameters
    ----------
    name : str
        Key prefix of its metrics.
    lr : Volume
        Low-resolution input (float32, in memory): 3 spatial axes, or a cube's 2 and a band axis.
    hr : (X, Y, Z) or (rows, cols, bands) float32 ndarray
        Reference on the grid the LR input covers, in [0, 1] (bands last for a cube).
    scale : tuple of float
        Per spatial axis factor from ``lr`` to ``hr`` (exact ``n_hr / n_lr``).
    """

    name: str
    lr: Volume
    hr: np.ndarray
    scale: tuple[float, ...]

    @property
    def kind(self) -> str:
        """``"cube"`` when the input has a band axis, else ``"volume"`` (a :data:`PROTOCOLS` key)."""
        return "volume" if self.lr.band_axis is None else "cube"


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


def cube_case(pair: HSIPair) -> ValidationCase:
    """A hyperspectral protocol pair (:func:`volsr.data.hsi.make_pair`) as a validation case.

    Parameters
    ----------
    pair : HSIPair
        HR cube (rows, cols, bands) and its LR version; ``pair.name`` a ``path[:key]`` spec.

    Returns
    -------
    ValidationCase
        Named by the spec's file stem; input axes ``("i", "j", "band")``.

    Raises
    ------
    FormatError
        If ``pair.name`` is not a readable ``path[:key]`` spec.

    Examples
    --------
    >>> cube = np.random.default_rng(0).random((8, 8, 5)).astype(np.float32)
    >>> from volsr.data.hsi import make_pair
    >>> case = cube_case(make_pair(cube, scale=2, name="/data/a.mat:x"))
    >>> case.name, case.kind, case.lr.shape, case.scale
    ('a', 'cube', (4, 4, 5), (2.0, 2.0))
    """
    lr = Volume(np.ascontiguousarray(pair.lr, dtype=np.float32), np.eye(4), ("i", "j", "band"))
    _, path, _ = io.format_for(pair.name)  # the readers' own parse of ``path[:key]``
    return ValidationCase(name=_volume_name(path), lr=lr, hr=pair.hr, scale=(float(pair.scale),) * 2)


def _volume_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".zarr", ".h5"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


class VolumeValidator:
    """Score a model on prepared volumes or cubes through :func:`volsr.engine.upsample`.

    Parameters
    ----------
    cases : sequence of ValidationCase
        Prepared volumes (:func:`prepare_case`) or cubes (:func:`cube_case`).
    device : str
        Where the model runs.

    Raises
    ------
    ValueError
        If ``cases`` is empty or two cases share a name.

    Notes
    -----
    ``validator(model)`` returns, per case, each metric of its kind (``"<name>/psnr"``,
    ``"<name>/ssim"`` for volumes, ``"<name>/mpsnr"``, ``"<name>/sam"`` in degrees for cubes;
    data range 1), the first one's gain over the kind's baseline (``"<name>/psnr_gain"``
    over cubic, ``"<name>/mpsnr_gain"`` over bicubic), ``"<name>/seconds"``, and
    ``"score"``: the mean gain (the ``best`` checkpoint's criterion). The model's
    training mode is restored afterwards.

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
        self.baseline = {case.name: self._score(case, PROTOCOLS[case.kind].baseline)[0] for case in self.cases}

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
        protocol = PROTOCOLS[case.kind]
        started = time.perf_counter()
        # Training machines have memory to spare: larger tiles recompute less halo.
        out = upsample(case.lr, scale=case.scale, model=model,
                       options=EngineOptions(device=str(self.device), max_memory=VALIDATION_MEMORY))
        estimate = np.asarray(out.data.compute(), dtype=np.float32)
        if protocol.clip:
            estimate = estimate.clip(0, 1)
        seconds = time.perf_counter() - started
        return {name: metric(case.hr, estimate) for name, metric in protocol.metrics.items()}, seconds

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
        was_training = model.training
        for case in self.cases:
            scores, seconds = self._score(case, model)
            first = next(iter(scores))
            gains.append(scores[first] - self.baseline[case.name][first])
            metrics.update({f"{case.name}/{name}": value for name, value in scores.items()})
            metrics.update({f"{case.name}/{first}_gain": gains[-1], f"{case.name}/seconds": seconds})
        model.train(was_training)  # the engine switched it to evaluation
        metrics["score"] = float(np.mean(gains))
        return metrics
