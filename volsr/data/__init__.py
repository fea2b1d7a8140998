"""Training data: HR->LR pair making and MONAI transform chains."""

from __future__ import annotations

from volsr.data.transforms import (
    DEGRADE_PARAMS_KEY,
    RandThickSliceD,
    RandThickSliced,
    ThickSliceD,
    ThickSliced,
    ThickSliceParams,
    apply_thick_slice,
)

__all__ = [
    "DEGRADE_PARAMS_KEY",
    "ThickSliceParams",
    "apply_thick_slice",
    "ThickSliced",
    "RandThickSliced",
    "ThickSliceD",
    "RandThickSliceD",
]
