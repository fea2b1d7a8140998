"""Training data: HR->LR pair making, MONAI transform chains and a lazy patch sampler."""

from __future__ import annotations

from volsr.data.blocks import BlockCache, VolumeStats, read_box, volume_stats
from volsr.data.dataset import PatchDataset
from volsr.data.pairs import PatchParams
from volsr.data.sampler import PatchSampler
from volsr.data.sampler_options import SamplerOptions
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
    "PatchParams",
    "PatchSampler",
    "SamplerOptions",
    "PatchDataset",
    "BlockCache",
    "VolumeStats",
    "read_box",
    "volume_stats",
]
