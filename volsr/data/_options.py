"""Argument checks and option builders shared by the :mod:`volsr.data` modules (private)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from monai.transforms import Compose, RandBiasField, RandScaleIntensity, RandShiftIntensity

from volsr.data.transforms import _check_range
from volsr.degrade import PROFILES

__all__ = [
    "positive_ints",
    "axis_subset",
    "optional_range",
    "intensity_transforms",
    "check_rng",
    "factor_range_option",
    "profile_subset",
    "probability",
]


def positive_ints(values: Sequence[int], name: str, count: int, *, minimum: int) -> tuple[int, ...]:
    items = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if len(items) != count or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in items
    ):
        shown = items[0] if count == 1 and len(items) == 1 else values
        what = "an integer" if count == 1 else f"{count} integers"
        raise ValueError(f"{name} must be {what} >= {minimum}, got {shown!r}")
    return tuple(int(v) for v in items)


def axis_subset(axes: Sequence[int], name: str, *, allow_empty: bool) -> tuple[int, ...]:
    values = tuple(axes)
    if (not values and not allow_empty) or len(set(values)) != len(values) or any(
        isinstance(a, bool) or a not in (0, 1, 2) for a in values
    ):
        raise ValueError(f"{name} must be distinct patch axes from (0, 1, 2), got {axes!r}")
    return tuple(int(a) for a in values)


def optional_range(
    value: tuple[float, float] | None, name: str, minimum: float
) -> tuple[float, float] | None:
    return None if value is None else _check_range(value, name, minimum, inclusive=False)


def intensity_transforms(
    scale_range: tuple[float, float] | None,
    shift_range: tuple[float, float] | None,
    bias_field_range: tuple[float, float] | None,
    bias_field_degree: int,
) -> tuple[Compose | None, RandBiasField | None]:
    transforms = []
    if scale_range is not None:
        low, high = _check_range(scale_range, "scale_range", 0.0, inclusive=False)
        # MONAI multiplies by (1 + factor).
        transforms.append(RandScaleIntensity(factors=(low - 1.0, high - 1.0), prob=1.0))
    if shift_range is not None:
        offsets = _check_range(shift_range, "shift_range", -math.inf, inclusive=False)
        transforms.append(RandShiftIntensity(offsets=offsets, prob=1.0))
    bias = None
    if bias_field_range is not None:
        coeffs = _check_range(bias_field_range, "bias_field_range", -math.inf, inclusive=False)
        (degree,) = positive_ints((bias_field_degree,), "bias_field_degree", 1, minimum=1)
        bias = RandBiasField(degree=degree, coeff_range=coeffs, prob=1.0)
    return (Compose(transforms) if transforms else None), bias


def check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator, got {type(rng).__name__}")


def factor_range_option(value: tuple[float, float], *, integer: bool) -> tuple[float, float]:
    low, high = _check_range(value, "factor_range", 1.0, inclusive=True)
    if integer and math.ceil(low) > high:
        raise ValueError(f"factor_range {value!r} holds no integer factor (integer_factors=True)")
    return low, high


def profile_subset(profiles: Sequence[str]) -> tuple[str, ...]:
    values = tuple(profiles)
    if not values or any(p not in PROFILES for p in values):
        raise ValueError(f"profiles must be a non-empty subset of {PROFILES}, got {profiles!r}")
    return values


def probability(value: float, name: str) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)
