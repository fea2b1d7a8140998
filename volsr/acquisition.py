"""The acquisition model of an input: slice thickness, gap, profile and noise level (mm).

One model per input, built once from what is known about the scan and used by everything
that describes or re-degrades the acquisition (adaptation pairs, the consistency map, the
BIDS derivatives' sidecars). :func:`acquisition_for` applies the precedence: explicit flags,
else a BIDS sidecar beside the file (``SliceThickness`` and ``SpacingBetweenSlices``: DICOM
fields, mm, as dcm2niix writes them), else the header's voxel spacing; the slice profile
and the noise level can be estimated from the voxels (:func:`estimate_profile`,
:func:`estimate_noise`), reading a bounded sample of the volume, never all of it.

Conventions: thickness and gap are in mm, one per spatial axis, in affine-column (array)
order. The slice axis is the axis with the largest voxel spacing (the last of them on a tie:
NIfTI files from 2-D acquisitions keep slices on the last axis). Only the slice axis takes
the sidecar's values; every other axis has thickness = voxel spacing and gap 0. The slice
spacing is ``thickness + gap``; a negative gap means overlapping slices. The slice profile
is that of :func:`volsr.degrade.thick_slice`: a Gaussian whose FWHM is the thickness, or a
box as wide as the thickness. The noise sigma is the standard deviation of each Gaussian
component of the (Rician) magnitude noise, in the volume's intensity units.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.ndimage as ndi
from scipy.optimize import minimize_scalar

from volsr.degrade import PROFILES, thick_slice
from volsr.errors import GeometryError, InvalidDataError
from volsr.volume import Volume

__all__ = [
    "AcquisitionModel",
    "acquisition_from_spacing",
    "acquisition_for",
    "sidecar_path",
    "estimate_noise",
    "estimate_profile",
]

Origin = Literal["sidecar", "header", "contiguous", "flag", "estimated"]
ProfileOrigin = Literal["default", "flag", "estimated"]
NoiseOrigin = Literal["unknown", "estimated"]

#: Separable second-difference kernel of Immerkaer's estimator (sum of squares 36).
_LAPLACE = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
#: Normal standard deviation per median absolute deviation.
_MAD_TO_SIGMA = 1.482602218505602
#: Bounded samples: slices (and in-plane voxels per axis) read by :func:`estimate_noise`, block read by
#: :func:`estimate_profile` (in-plane voxels per axis, slices), longest spectrum segment.
_NOISE_SLICES, _NOISE_INPLANE = 16, 512
_BLOCK_INPLANE, _BLOCK_SLICES, _SEGMENT = 160, 128, 64
_MIN_RESIDUALS, _MIN_SEGMENT = 1000, 8


@dataclasses.dataclass(frozen=True)
class AcquisitionModel:
    """Per-axis slice thickness and gap, slice profile and noise level of one acquisition.

    Parameters
    ----------
    thickness : (D,) tuple of float
        Slice thickness per spatial axis (mm, > 0): the FWHM of a Gaussian profile, the
        width of a box.
    gap : (D,) tuple of float
        Gap between slices per spatial axis (mm; negative for overlapping slices).
    slice_axis : int
        Spatial axis of the slices (0 = ``i``).
    thickness_from : {"sidecar", "contiguous", "flag", "estimated"}
        The slice axis's thickness: from the sidecar, assumed equal to the slice spacing,
        given by the caller, or fitted by :func:`estimate_profile`.
    spacing_from : {"sidecar", "header", "flag"}
        The slice axis's slice spacing: from the sidecar, the header's voxel spacing, or
        the caller (thickness and gap both given).
    profile : {"gaussian", "box"}
        Slice profile (see :func:`volsr.degrade.thick_slice`).
    profile_from : {"default", "flag", "estimated"}
        Where the profile comes from ("default": assumed Gaussian).
    noise_sigma : float, optional
        Noise standard deviation per Gaussian component (intensity units, >= 0); None when
        unknown.
    noise_from : {"unknown", "estimated"}
        Where ``noise_sigma`` comes from.

    Raises
    ------
    ValueError
        If ``profile`` is not one of :data:`volsr.degrade.PROFILES` or ``noise_sigma`` is not
        a finite number >= 0.

    Examples
    --------
    >>> model = acquisition_from_spacing((1.0, 1.0, 4.0), slice_thickness=3.0)
    >>> model.thickness, model.gap, model.slice_axis, model.profile
    ((1.0, 1.0, 3.0), (0.0, 0.0, 1.0), 2, 'gaussian')
    """

    thickness: tuple[float, ...]
    gap: tuple[float, ...]
    slice_axis: int
    thickness_from: Origin = "contiguous"
    spacing_from: Origin = "header"
    profile: str = "gaussian"
    profile_from: ProfileOrigin = "default"
    noise_sigma: float | None = None
    noise_from: NoiseOrigin = "unknown"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        sigma = self.noise_sigma
        if sigma is not None and not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"noise_sigma must be finite and >= 0 (intensity units), got {sigma}")

    @property
    def spacing(self) -> tuple[float, ...]:
        """Slice spacing per spatial axis, ``thickness + gap`` (mm)."""
        return tuple(t + g for t, g in zip(self.thickness, self.gap, strict=True))

    def to_json(self) -> dict[str, Any]:
        """The model as BIDS-style JSON (PascalCase keys, lengths in mm).

        ``SliceProfile`` and ``ProfileFrom`` are written only when the profile was given or
        estimated, ``NoiseSigma`` and ``NoiseFrom`` only when the noise level is known: an
        absent key means "Gaussian profile assumed" and "noise unknown".

        Returns
        -------
        dict
            ``SliceAxis``, ``SliceThickness``, ``SliceGap`` (per axis), ``ThicknessFrom``,
            ``SpacingFrom``, and the optional keys above.

        Examples
        --------
        >>> acquisition_from_spacing((1.0, 2.0)).to_json()["SliceThickness"]
        [1.0, 2.0]
        """
        record: dict[str, Any] = {
            "SliceAxis": self.slice_axis,
            "SliceThickness": [round(t, 6) for t in self.thickness],
            "SliceGap": [round(g, 6) for g in self.gap],
            "ThicknessFrom": self.thickness_from,
            "SpacingFrom": self.spacing_from,
        }
        if self.profile_from != "default":
            record.update(SliceProfile=self.profile, ProfileFrom=self.profile_from)
        if self.noise_sigma is not None:
            record.update(NoiseSigma=round(self.noise_sigma, 6), NoiseFrom=self.noise_from)
        return record

    def describe(self) -> str:
        """One line for the log: slice axis, thickness, gap, profile, noise, with origins.

        Returns
        -------
        str

        Examples
        --------
        >>> acquisition_from_spacing((1.0, 1.0, 4.0), slice_thickness=3.5).describe()
        'acquisition: slices along axis 2, thickness 3.5 mm (sidecar), gap 0.5 mm (header spacing), gaussian profile (assumed), noise unknown'
        """
        axis = self.slice_axis
        words = {"contiguous": "= slice spacing", "header": "header spacing", "default": "assumed"}
        noise = "noise unknown" if self.noise_sigma is None else (
            f"noise sigma {self.noise_sigma:.4g} ({self.noise_from})")
        return (f"acquisition: slices along axis {axis}, thickness {self.thickness[axis]:.4g} mm "
                f"({words.get(self.thickness_from, self.thickness_from)}), gap {self.gap[axis]:.4g} mm "
                f"({words.get(self.spacing_from, self.spacing_from)}), {self.profile} profile "
                f"({words.get(self.profile_from, self.profile_from)}), {noise}")


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number of mm, got {value!r}")
    if not (math.isfinite(float(value)) and value > 0):
        raise ValueError(f"{name} must be finite and > 0 mm, got {value!r}")
    return float(value)


def acquisition_from_spacing(
    spacing: Sequence[float],
    *,
    slice_thickness: float | None = None,
    spacing_between_slices: float | None = None,
) -> AcquisitionModel:
    """The acquisition model from the voxel spacing and, where known, the slice facts.

    On the slice axis (largest spacing, the last one on a tie), the slice spacing is
    ``spacing_between_slices`` if given, else the voxel spacing; the thickness is
    ``slice_thickness`` if given, else the slice spacing (contiguous slices); the gap is
    their difference. Every other axis: thickness = voxel spacing, gap 0.

    Parameters
    ----------
    spacing : (D,) sequence of float
        Voxel size per spatial axis (mm, from the header).
    slice_thickness : float, optional
        Slice thickness (mm; BIDS/DICOM ``SliceThickness``).
    spacing_between_slices : float, optional
        Centre-to-centre slice distance (mm; BIDS/DICOM ``SpacingBetweenSlices``).

    Returns
    -------
    AcquisitionModel

    Raises
    ------
    GeometryError
        If ``spacing`` is empty or has a value that is not finite and > 0.
    ValueError
        If ``slice_thickness`` or ``spacing_between_slices`` is not a finite number > 0.

    Examples
    --------
    >>> model = acquisition_from_spacing((1.0, 1.0, 4.0), slice_thickness=3.0,
    ...                                  spacing_between_slices=4.4)
    >>> model.thickness[2], round(model.gap[2], 6), model.spacing_from
    (3.0, 1.4, 'sidecar')
    """
    values = tuple(float(s) for s in spacing)
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise GeometryError(f"spacing must be one finite value > 0 mm per spatial axis, got {values}")
    thickness_mm = None if slice_thickness is None else _positive(slice_thickness, "slice_thickness")
    between = None if spacing_between_slices is None else _positive(spacing_between_slices, "spacing_between_slices")
    axis = _largest_axis(values)
    slice_spacing = values[axis] if between is None else between
    thick = slice_spacing if thickness_mm is None else thickness_mm
    thickness = tuple(thick if n == axis else s for n, s in enumerate(values))
    gap = tuple(slice_spacing - thick if n == axis else 0.0 for n in range(len(values)))
    return AcquisitionModel(
        thickness=thickness, gap=gap, slice_axis=axis,
        thickness_from="contiguous" if thickness_mm is None else "sidecar",
        spacing_from="header" if between is None else "sidecar",
    )  # fmt: skip


def _largest_axis(values: Sequence[float]) -> int:
    """The axis of the largest value, the last one on a tie (relative tolerance 1e-6)."""
    largest = max(values)
    return max(n for n, s in enumerate(values) if math.isclose(s, largest, rel_tol=1e-6))


def sidecar_path(spec: str | os.PathLike[str]) -> Path | None:
    """The BIDS sidecar beside a NIfTI file: same name, ``.json`` for ``.nii``/``.nii.gz``.

    Parameters
    ----------
    spec : str or path
        An input file (``volsr`` specs such as ``file.h5:/key`` have no sidecar).

    Returns
    -------
    Path or None
        The sidecar's path (whether or not it exists), None for other formats.

    Examples
    --------
    >>> sidecar_path("sub-01/anat/sub-01_T1w.nii.gz").as_posix()
    'sub-01/anat/sub-01_T1w.json'
    >>> sidecar_path("cube.zarr") is None
    True
    """
    path = Path(spec)
    for suffix in (".nii.gz", ".nii"):
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".json")
    return None


def _sidecar_facts(spec: str | os.PathLike[str] | None) -> dict[str, float | None]:
    """``slice_thickness`` and ``spacing_between_slices`` (mm) from the sidecar, if any."""
    facts: dict[str, float | None] = {"slice_thickness": None, "spacing_between_slices": None}
    path = None if spec is None else sidecar_path(spec)
    if path is None or not path.is_file():
        return facts
    from volsr.bids.layout import read_json  # here: volsr.bids imports this module

    metadata = read_json(path)
    fields = (("slice_thickness", "SliceThickness"), ("spacing_between_slices", "SpacingBetweenSlices"))
    for key, field in fields:
        if metadata.get(field) is not None:
            try:
                facts[key] = _positive(metadata[field], field)
            except ValueError as error:
                raise InvalidDataError(f"{path}: {error}") from None
    return facts


def _with_flags(model: AcquisitionModel, thickness: float | None, gap: float | None) -> AcquisitionModel:
    """``model`` with the caller's thickness and gap (mm) on its slice axis."""
    if thickness is None and gap is None:
        return model
    axis, spacing = model.slice_axis, model.spacing[model.slice_axis]
    if gap is not None and not (isinstance(gap, (int, float)) and math.isfinite(gap)):
        raise ValueError(f"gap must be a finite number of mm, got {gap!r}")
    if thickness is not None:
        thick = _positive(thickness, "thickness")
    elif spacing - gap <= 0:
        raise ValueError(f"gap = {gap} mm leaves no slice thickness within the slice spacing {spacing:.4g} mm")
    else:
        thick = spacing - gap
    between = spacing if gap is None or thickness is None else thick + gap
    if between <= 0:
        raise ValueError(f"thickness + gap must be > 0 mm, got {thick} + {gap}")
    return dataclasses.replace(
        model, thickness=_on_axis(model.thickness, axis, thick), gap=_on_axis(model.gap, axis, between - thick),
        thickness_from="flag", spacing_from="flag" if between != spacing else model.spacing_from,
    )  # fmt: skip


def _on_axis(values: tuple[float, ...], axis: int, value: float) -> tuple[float, ...]:
    return tuple(value if n == axis else v for n, v in enumerate(values))


def acquisition_for(
    volume: Volume,
    spec: str | os.PathLike[str] | None = None,
    *,
    thickness: float | None = None,
    gap: float | None = None,
    profile: str | None = None,
    estimate_profile: bool = False,
    estimate_noise: bool = True,
) -> AcquisitionModel:
    """The acquisition model of an input: flags, else its BIDS sidecar, else its header.

    The slice axis is the one of largest voxel spacing. Its slice spacing comes from the
    sidecar's ``SpacingBetweenSlices``, else the header, unless ``thickness`` and ``gap``
    are both given; given one of them, the other fills the slice spacing. The thickness
    comes from ``thickness`` (or ``gap``), else a fit (``estimate_profile``), else the
    sidecar's ``SliceThickness``, else the slice spacing (contiguous slices).

    Parameters
    ----------
    volume : Volume
        The input (header spacing; voxels are read only for the estimates, a bounded sample).
    spec : str or path, optional
        The input's file: a ``.nii``/``.nii.gz`` may have a ``.json`` sidecar beside it.
    thickness, gap : float, optional
        Slice thickness (> 0) and gap (mm) on the slice axis.
    profile : {"gaussian", "box"}, optional
        Slice profile; default Gaussian (assumed).
    estimate_profile : bool
        Fit the Gaussian FWHM with :func:`estimate_profile` (not with ``thickness``, ``gap``
        or a box ``profile``).
    estimate_noise : bool
        Estimate the noise sigma with :func:`estimate_noise`.

    Returns
    -------
    AcquisitionModel

    Raises
    ------
    ValueError
        If a flag is invalid or flags conflict; ``InvalidDataError`` for a bad sidecar value
        or a volume the estimates cannot use.

    Examples
    --------
    >>> v = Volume(np.zeros((8, 8, 4)), np.diag([1.0, 1.0, 4.0, 1.0]), ("i", "j", "k"))
    >>> acquisition_for(v, thickness=3.0, estimate_noise=False).describe()
    'acquisition: slices along axis 2, thickness 3 mm (flag), gap 1 mm (header spacing), gaussian profile (assumed), noise unknown'
    """
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if estimate_profile and (thickness is not None or gap is not None or profile == "box"):
        raise ValueError("estimate_profile fits a Gaussian thickness: "
                         "it excludes thickness, gap and a box profile")
    model = _with_flags(acquisition_from_spacing(volume.spacing, **_sidecar_facts(spec)), thickness, gap)
    if profile is not None:
        model = dataclasses.replace(model, profile=profile, profile_from="flag")
    return _with_estimates(model, volume, profile=estimate_profile, noise=estimate_noise)


def _with_estimates(model: AcquisitionModel, volume: Volume, *, profile: bool, noise: bool) -> AcquisitionModel:
    """``model`` with the fitted Gaussian thickness (slice spacing kept) and noise sigma."""
    axis = model.slice_axis
    if profile:
        fwhm = _fit_fwhm(volume, axis)
        model = dataclasses.replace(
            model, thickness=_on_axis(model.thickness, axis, fwhm), profile_from="estimated",
            gap=_on_axis(model.gap, axis, model.spacing[axis] - fwhm), thickness_from="estimated",
        )  # fmt: skip
    if noise:
        model = dataclasses.replace(model, noise_sigma=_noise_sigma(volume, axis), noise_from="estimated")
    return model


def _check_slice_axis(volume: Volume, slice_axis: int | None) -> int:
    count = len(volume.spatial_axes)
    if slice_axis is None:
        return _largest_axis(tuple(float(s) for s in volume.spacing))
    integer = isinstance(slice_axis, (int, np.integer)) and not isinstance(slice_axis, bool)
    if not (integer and 0 <= slice_axis < count):
        raise ValueError(f"slice_axis must be a spatial axis in [0, {count}), got {slice_axis!r}")
    return int(slice_axis)


def _read(volume: Volume, box: dict[int, slice | int]) -> np.ndarray:
    """Spatial axes ``box`` (spatial axis -> index) of ``volume``, the first band or channel."""
    key: list[slice | int] = [0] * volume.ndim
    for d, position in enumerate(volume.spatial_axes):
        key[position] = box.get(d, slice(None))
    return np.asarray(volume.data[tuple(key)].compute(), dtype=np.float64)


def estimate_noise(volume: Volume, *, slice_axis: int | None = None) -> float:
    """The noise sigma of a magnitude MR volume, from the in-plane high-pass residual.

    Immerkaer's estimator made robust: each sampled slice is filtered by the separable
    second difference ``[1, -2, 1] x [1, -2, 1]`` (which cancels linear trends; on white
    noise of std ``sigma`` its output has std ``6 sigma``), and
    ``sigma = 1.4826 MAD(residual) / 6`` over the foreground (voxels of the 5 x 5 mean
    above 20 % of its 99th percentile, eroded by 2 voxels), where Rician noise is nearly
    Gaussian. Reads at most 16 evenly spaced slices, each its central 512 x 512 voxels
    at most (the first band or channel).

    Parameters
    ----------
    volume : Volume
        Magnitude data, 2-D or 3-D spatial axes.
    slice_axis : int, optional
        Spatial axis across the slices (default: largest spacing); ignored for 2-D.

    Returns
    -------
    float
        Sigma of each Gaussian component of the noise (intensity units of ``volume``).

    Raises
    ------
    ValueError
        If ``slice_axis`` is not a spatial axis; ``InvalidDataError`` if the sample has
        fewer than 1000 foreground voxels.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = Volume(100 + 5 * rng.standard_normal((64, 64, 8)), np.eye(4), ("i", "j", "k"))
    >>> round(estimate_noise(v), 1)
    5.0
    """
    return _noise_sigma(volume, _check_slice_axis(volume, slice_axis))


def _noise_sigma(volume: Volume, axis: int) -> float:
    window = {d: _centred(n, _NOISE_INPLANE) for d, n in enumerate(volume.spatial_shape)}
    if len(volume.spatial_axes) == 2:
        images = [_read(volume, window)]
    else:
        count = volume.spatial_shape[axis]
        picks = np.unique(np.linspace(0, count - 1, min(_NOISE_SLICES, count)).round().astype(int))
        images = [_read(volume, {**window, axis: int(k)}) for k in picks]
    images = [np.where(np.isfinite(image), image, 0.0) for image in images]
    smooth = [ndi.uniform_filter(image, 5) for image in images]
    level = 0.2 * np.percentile(np.concatenate([s.ravel() for s in smooth]), 99)
    residual = np.concatenate([
        ndi.correlate(image, _LAPLACE, mode="nearest")[ndi.binary_erosion(s > level, iterations=2)]
        for image, s in zip(images, smooth, strict=True)
    ])  # fmt: skip
    if level <= 0 or residual.size < _MIN_RESIDUALS:
        raise InvalidDataError(
            f"cannot estimate the noise: {residual.size} foreground voxels in the sampled slices "
            f"(need {_MIN_RESIDUALS}; voxels above 20 % of the 99th percentile, eroded by 2)"
        )
    return float(_MAD_TO_SIGMA * np.median(np.abs(residual - np.median(residual))) / 6.0)


def estimate_profile(volume: Volume, *, slice_axis: int | None = None) -> float:
    """The through-plane Gaussian slice FWHM (mm), fitted by matching line spectra.

    The SMORE/ECLARE idea: an in-plane axis shows the object at the in-plane resolution;
    degraded by :func:`volsr.degrade.thick_slice` at the slice spacing with a Gaussian of
    FWHM ``w``, its line power spectrum should match the through-plane one when ``w`` is
    the slice profile. The fit minimises, summed over the in-plane axes, the variance over
    frequency of the log-spectrum difference (a constant offset is free: the other axes'
    blurs scale each line spectrum), on a grid of 40 FWHMs from half the in-plane spacing
    to 3 slice spacings, refined by a bounded scalar search. Reads one central block (at
    most 160 voxels per in-plane axis, 128 slices; the first band or channel). The result
    is the profile on top of the in-plane resolution; noise biases it (flattens spectra).

    Parameters
    ----------
    volume : Volume
        Magnitude data with an isotropic-ish object (any texture).
    slice_axis : int, optional
        Spatial axis across the slices (default: largest spacing); it must not be finer
        than an in-plane axis.

    Returns
    -------
    float
        Slice profile FWHM in mm (the :attr:`AcquisitionModel.thickness` of a Gaussian).

    Raises
    ------
    ValueError
        If ``slice_axis`` is not a spatial axis; ``GeometryError`` if it is finer than an
        in-plane axis; ``InvalidDataError`` if the block has fewer than 8 slices or 8 slice
        spacings in-plane, or no texture.

    Examples
    --------
    >>> from scipy.ndimage import gaussian_filter
    >>> hr = gaussian_filter(np.random.default_rng(0).standard_normal((64, 64, 64)), 1.0)
    >>> lr = thick_slice(hr, axis=2, factor=4.0, thickness=4.0)
    >>> v = Volume(lr, np.diag([1.0, 1.0, 4.0, 1.0]), ("i", "j", "k"))
    >>> bool(abs(estimate_profile(v) - 4.0) < 0.6)
    True
    """
    return _fit_fwhm(volume, _check_slice_axis(volume, slice_axis))


def _fit_fwhm(volume: Volume, axis: int) -> float:
    spacing = [float(s) for s in volume.spacing]
    inplane = [d for d in range(len(spacing)) if d != axis]
    if any(spacing[d] > spacing[axis] * (1 + 1e-6) for d in inplane):
        raise GeometryError(f"slice axis {axis} (spacing {spacing[axis]:.4g} mm) is finer than an "
                            f"in-plane axis: {spacing}")
    limits = [_BLOCK_SLICES if d == axis else _BLOCK_INPLANE for d in range(len(spacing))]
    box = {d: _centred(n, limit) for d, (n, limit) in enumerate(zip(volume.spatial_shape, limits, strict=True))}
    block = _read(volume, box)
    block = np.where(np.isfinite(block), block, 0.0)
    dz = spacing[axis]
    length = min(_SEGMENT, block.shape[axis], *(int(block.shape[d] * spacing[d] / dz) for d in inplane))
    if length < _MIN_SEGMENT:
        raise InvalidDataError(f"cannot fit the slice profile: the block {block.shape} spans {length} slice "
                               f"spacings along some axis (need {_MIN_SEGMENT})")
    target = _log_power(block, axis, length)

    def mismatch(fwhm: float) -> float:
        return float(sum(
            np.var(_log_power(thick_slice(block, axis=d, factor=dz / spacing[d], thickness=fwhm / spacing[d]),
                              d, length) - target) for d in inplane
        ))  # fmt: skip

    grid = np.geomspace(0.5 * min(spacing[d] for d in inplane), 3.0 * dz, 40)
    best = int(np.argmin([mismatch(w) for w in grid]))
    bounds = (grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)])
    fit = minimize_scalar(mismatch, bounds=bounds, method="bounded", options={"xatol": 1e-3 * dz})
    return float(fit.x)


def _centred(n: int, limit: int) -> slice:
    start = (n - min(n, limit)) // 2
    return slice(start, start + min(n, limit))


def _log_power(block: np.ndarray, axis: int, length: int) -> np.ndarray:
    """Log of the mean power spectrum (DC dropped) of Hann-windowed, mean-removed segments
    of ``length`` samples of the lines of ``block`` along ``axis``."""
    lines = np.moveaxis(block, axis, -1)
    count = lines.shape[-1] // length
    segments = lines[..., : count * length].reshape(-1, length)
    segments = (segments - segments.mean(axis=-1, keepdims=True)) * np.hanning(length)
    power = (np.abs(np.fft.rfft(segments, axis=-1)) ** 2).mean(axis=0)[1:]
    if not power.max() > 0:
        raise InvalidDataError("cannot fit the slice profile: the sampled block has no texture "
                               "(constant lines)")
    return np.log(power + 1e-12 * power.max())
