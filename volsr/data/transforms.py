"""MONAI dictionary transforms that make (HR, LR) training pairs with :mod:`volsr.degrade`.

Images are MONAI-style channel-first ``(C, *spatial)`` NumPy arrays, torch tensors or
MONAI ``MetaTensor`` s (whose affine is updated to the LR grid). The random transform
samples a frozen :class:`ThickSliceParams`, then calls the same deterministic code as
:class:`ThickSliced`, and stores the params (as a flat, collate-friendly dict) under
``"degrade_params"`` so that training can log them and reproduce any pair exactly.

Randomness: MONAI seeds a transform through ``set_random_state``, which gives it a legacy
``np.random.RandomState`` (``self.R``; also what ``Compose`` and MONAI's DataLoader worker
seeding set). Each call draws 128 bits from ``self.R`` to seed a fresh
``np.random.Generator``, which samples all parameters; no global state is touched, and the
MONAI seeding protocol keeps working.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple

from volsr.degrade import PROFILES, thick_slice
from volsr.geometry import downsampled_grid, resampled_affine
from volsr.noise import NoiseParams, foreground_mean, rician_noise, sample_noise_params

__all__ = [
    "DEGRADE_PARAMS_KEY",
    "ThickSliceParams",
    "apply_thick_slice",
    "ThickSliced",
    "RandThickSliced",
    "ThickSliceD",
    "RandThickSliceD",
]

#: Output key under which the transforms store the parameters they applied.
DEGRADE_PARAMS_KEY = "degrade_params"

Image = np.ndarray | torch.Tensor


@dataclasses.dataclass(frozen=True, kw_only=True)
class ThickSliceParams:
    """Parameters of one thick-slice (+ optional Rician noise) degradation.

    Parameters
    ----------
    axis : int
        Spatial slice axis (0 = first axis after the channel axis).
    factor : float
        Slice spacing / HR spacing (>= 1).
    thickness : float
        Slice thickness in HR voxels (> 0); ``< factor`` leaves gaps, ``> factor`` overlaps.
    profile : {"gaussian", "box"}
        Slice profile (see :func:`volsr.degrade.thick_slice`).
    noise : NoiseParams, optional
        Rician noise added to the LR image; None for none.

    Raises
    ------
    ValueError
        If a value is out of range or ``profile`` is unknown.

    Examples
    --------
    >>> ThickSliceParams(axis=2, factor=3.0, thickness=3.0).as_dict()["noise_sigma"]
    0.0
    """

    axis: int
    factor: float
    thickness: float
    profile: str = "gaussian"
    noise: NoiseParams | None = None

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or not isinstance(self.axis, int) or self.axis < 0:
            raise ValueError(f"axis must be a spatial axis index >= 0, got {self.axis!r}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"factor must be finite and >= 1, got {self.factor}")
        if not (math.isfinite(self.thickness) and self.thickness > 0):
            raise ValueError(f"thickness must be finite and > 0 HR voxels, got {self.thickness}")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")

    def as_dict(self) -> dict[str, int | float | str]:
        """Flat record for logging and batch collation (no None values).

        Returns
        -------
        dict
            ``axis, factor, thickness, profile, snr_db, noise_sigma, noise_seed``; without
            noise ``snr_db = inf``, ``noise_sigma = 0.0`` and ``noise_seed = -1``.

        Examples
        --------
        >>> ThickSliceParams(axis=0, factor=2.0, thickness=2.0).as_dict()["noise_seed"]
        -1
        """
        noise = self.noise
        return {
            "axis": self.axis,
            "factor": self.factor,
            "thickness": self.thickness,
            "profile": self.profile,
            "snr_db": math.inf if noise is None else noise.snr_db,
            "noise_sigma": 0.0 if noise is None else noise.sigma,
            "noise_seed": -1 if noise is None else noise.seed,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ThickSliceParams:
        """Rebuild params from :meth:`as_dict` output (for example a training log).

        Parameters
        ----------
        record : mapping
            The keys written by :meth:`as_dict`.

        Returns
        -------
        ThickSliceParams
            Equal to the params that wrote ``record``.

        Raises
        ------
        KeyError
            If a key is missing (``ValueError`` for an out-of-range value).

        Examples
        --------
        >>> p = ThickSliceParams(axis=1, factor=2.5, thickness=2.0, profile="box")
        >>> ThickSliceParams.from_dict(p.as_dict()) == p
        True
        """
        noise = None
        if int(record["noise_seed"]) >= 0:
            noise = NoiseParams(
                snr_db=float(record["snr_db"]),
                sigma=float(record["noise_sigma"]),
                seed=int(record["noise_seed"]),
            )
        return cls(
            axis=int(record["axis"]),
            factor=float(record["factor"]),
            thickness=float(record["thickness"]),
            profile=str(record["profile"]),
            noise=noise,
        )


def apply_thick_slice(image: Image, params: ThickSliceParams) -> Image:
    """Degrade one channel-first image: thick slices, then optional Rician noise.

    Parameters
    ----------
    image : (C, *spatial) ndarray, torch.Tensor or MetaTensor
        HR image.
    params : ThickSliceParams
        What to apply.

    Returns
    -------
    (C, *spatial_lr) same type as ``image``
        ``spatial_lr[axis] = floor(n / factor)``; float32 for float32 input, float64
        otherwise; a MetaTensor gets the LR affine, a tensor stays on its device.

    Raises
    ------
    ValueError
        If ``image`` has no spatial axis or ``params.axis`` is not one of them.
    GeometryError
        If the slice axis is shorter than ``params.factor``.

    Examples
    --------
    >>> hr = np.ones((1, 4, 4, 12), np.float32)
    >>> apply_thick_slice(hr, ThickSliceParams(axis=2, factor=3.0, thickness=3.0)).shape
    (1, 4, 4, 4)
    """
    is_tensor = isinstance(image, torch.Tensor)
    array = image.detach().cpu().numpy() if is_tensor else np.asarray(image)
    if array.ndim < 2 or params.axis >= array.ndim - 1:
        raise ValueError(
            f"image must be (C, *spatial) with spatial axis {params.axis}, got shape {array.shape}"
        )
    lr = thick_slice(
        array,
        axis=params.axis + 1,
        factor=params.factor,
        thickness=params.thickness,
        profile=params.profile,
    )
    if params.noise is not None:
        lr = rician_noise(lr, params.noise)
    if not is_tensor:
        return lr
    tensor = torch.from_numpy(np.ascontiguousarray(lr)).to(image.device)
    if not isinstance(image, MetaTensor):
        return tensor
    out = MetaTensor(tensor, meta=dict(image.meta))
    out.affine = _lr_affine(image.affine, array.shape[1:], params)
    return out


def _lr_affine(affine: torch.Tensor, spatial_shape: Sequence[int], params: ThickSliceParams) -> torch.Tensor:
    matrix = np.asarray(affine.detach().cpu().numpy(), dtype=np.float64)
    rank = matrix.shape[0] - 1
    full = np.eye(4)
    full[:rank, :rank] = matrix[:rank, :rank]
    full[:rank, 3] = matrix[:rank, rank]
    covered, lr_shape = list(spatial_shape), list(spatial_shape)
    lr_shape[params.axis], covered[params.axis] = downsampled_grid(
        spatial_shape[params.axis], params.factor
    )
    lr = resampled_affine(full, covered, lr_shape)
    out = np.eye(rank + 1)
    out[:rank, :rank] = lr[:rank, :rank]
    out[:rank, rank] = lr[:rank, 3]
    return torch.as_tensor(out, dtype=affine.dtype)


def _degrade_keys(
    transform: MapTransform,
    data: Mapping[Hashable, Any],
    lr_keys: tuple[Hashable, ...],
    params: ThickSliceParams,
) -> dict[Hashable, Any]:
    out = dict(data)
    for key, lr_key in zip(transform.keys, lr_keys, strict=True):
        if key not in out:
            if transform.allow_missing_keys:
                continue
            raise KeyError(f"key {key!r} is not in the data (keys: {list(out)})")
        out[lr_key] = apply_thick_slice(out[key], params)
    out[DEGRADE_PARAMS_KEY] = params.as_dict()
    return out


def _lr_keys(keys: tuple[Hashable, ...], lr_keys: KeysCollection) -> tuple[Hashable, ...]:
    resolved = ensure_tuple(lr_keys)
    if len(resolved) != len(keys):
        raise ValueError(f"lr_keys needs one key per HR key {keys}, got {resolved}")
    return resolved


class ThickSliced(MapTransform):
    """Deterministic dictionary transform: add the LR image of each HR key.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of the HR images ``(C, *spatial)``; they are kept unchanged.
    params : ThickSliceParams
        Degradation applied to every key.
    lr_keys : str or sequence of str
        Output keys, one per HR key.
    allow_missing_keys : bool
        Skip absent keys instead of raising ``KeyError``.

    Raises
    ------
    ValueError
        If ``lr_keys`` and ``keys`` differ in length.

    Examples
    --------
    >>> t = ThickSliced("hr", params=ThickSliceParams(axis=0, factor=2.0, thickness=2.0))
    >>> out = t({"hr": np.ones((1, 8, 3))})
    >>> out["lr"].shape, out["degrade_params"]["factor"]
    ((1, 4, 3), 2.0)
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        params: ThickSliceParams,
        lr_keys: KeysCollection = "lr",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lr_keys = _lr_keys(self.keys, lr_keys)
        self.params = params

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return _degrade_keys(self, data, self.lr_keys, self.params)


class RandThickSliced(Randomizable, MapTransform):
    """Random thick-slice + Rician degradation; samples :class:`ThickSliceParams` per call.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of the HR images ``(C, *spatial)``; all get the same params.
    factor_range : (2,) tuple of float
        Slice spacing / HR spacing, uniform in ``[low, high]``, ``1 <= low <= high``.
    axes : sequence of int
        Spatial slice axes to choose from (uniformly).
    thickness_ratio_range : (2,) tuple of float
        Thickness / slice spacing, uniform in ``[low, high]`` (> 0). Values below 1 model a
        slice gap of ``(1 - ratio) * factor`` HR voxels, above 1 overlapping slices; this
        one range covers both thickness jitter and gaps.
    profiles : sequence of {"gaussian", "box"}
        Slice profiles to choose from (uniformly).
    snr_db_range : (2,) tuple of float, optional
        SNR in dB (:func:`volsr.noise.sigma_for_snr` convention, reference level measured
        on the first HR key); None adds no noise.
    lr_keys : str or sequence of str
        Output keys, one per HR key.
    allow_missing_keys : bool
        Skip absent keys instead of raising ``KeyError``.

    Raises
    ------
    ValueError
        If a range, axis or profile is invalid.

    Examples
    --------
    >>> t = RandThickSliced("hr", factor_range=(2.0, 3.0), axes=(1,), snr_db_range=(20, 30))
    >>> _ = t.set_random_state(seed=0)
    >>> out = t({"hr": np.ones((1, 4, 12, 4), np.float32)})
    >>> out["lr"].shape[2] in (4, 5, 6), out["degrade_params"]["axis"]
    (True, 1)
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        factor_range: tuple[float, float] = (2.0, 4.0),
        axes: Sequence[int] = (2,),
        thickness_ratio_range: tuple[float, float] = (1.0, 1.0),
        profiles: Sequence[str] = ("gaussian",),
        snr_db_range: tuple[float, float] | None = None,
        lr_keys: KeysCollection = "lr",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lr_keys = _lr_keys(self.keys, lr_keys)
        self.factor_range = _check_range(factor_range, "factor_range", 1.0, inclusive=True)
        self.thickness_ratio_range = _check_range(
            thickness_ratio_range, "thickness_ratio_range", 0.0, inclusive=False
        )
        self.snr_db_range = (
            None
            if snr_db_range is None
            else _check_range(snr_db_range, "snr_db_range", -math.inf, inclusive=False)
        )
        self.axes = tuple(axes)
        if not self.axes or any(
            isinstance(a, bool) or not isinstance(a, int) or a < 0 for a in self.axes
        ):
            raise ValueError(f"axes must be non-empty spatial axis indices >= 0, got {axes!r}")
        self.profiles = tuple(profiles)
        if not self.profiles or any(p not in PROFILES for p in self.profiles):
            raise ValueError(f"profiles must be a non-empty subset of {PROFILES}, got {profiles!r}")
        self.params: ThickSliceParams | None = None

    def randomize(self, data: Image) -> None:
        """Sample :attr:`params` for one HR image (used for the noise reference level).

        Parameters
        ----------
        data : (C, *spatial) ndarray or torch.Tensor
            The first HR image of the call.

        Returns
        -------
        None

        Raises
        ------
        InvalidDataError
            If noise is asked for and ``data`` has no foreground.

        Examples
        --------
        >>> t = RandThickSliced("hr", factor_range=(2.0, 2.0))
        >>> t.set_random_state(seed=0).randomize(np.ones((1, 4, 4, 8)))
        >>> t.params.factor
        2.0
        """
        rng = np.random.default_rng(self.R.randint(0, 2**32, size=4, dtype=np.uint64))
        factor = float(rng.uniform(*self.factor_range))
        axis = int(self.axes[rng.integers(len(self.axes))])
        thickness = factor * float(rng.uniform(*self.thickness_ratio_range))
        profile = self.profiles[rng.integers(len(self.profiles))]
        noise = None
        if self.snr_db_range is not None:
            image = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
            noise = sample_noise_params(
                rng, snr_db_range=self.snr_db_range, reference_level=foreground_mean(image)
            )
        self.params = ThickSliceParams(
            axis=axis, factor=factor, thickness=thickness, profile=profile, noise=noise
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        present = [key for key in self.keys if key in data]
        if not present:
            if self.allow_missing_keys:
                return dict(data)
            raise KeyError(f"none of the keys {self.keys} is in the data (keys: {list(data)})")
        self.randomize(data[present[0]])
        return _degrade_keys(self, data, self.lr_keys, self.params)


def _check_range(
    value: tuple[float, float], name: str, minimum: float, *, inclusive: bool
) -> tuple[float, float]:
    values = tuple(float(v) for v in value)
    above = (lambda v: v >= minimum) if inclusive else (lambda v: v > minimum)
    if len(values) != 2 or not all(math.isfinite(v) and above(v) for v in values):
        bound = f"{'>=' if inclusive else '>'} {minimum}"
        raise ValueError(f"{name} must be two finite values {bound}, got {value!r}")
    if values[0] > values[1]:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return values


#: MONAI-style aliases.
ThickSliceD = ThickSliced
RandThickSliceD = RandThickSliced
