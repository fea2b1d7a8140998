"""volsr: super-resolution of MRI volumes and hyperspectral cubes.

Exact geometry (field of view kept, per-axis non-integer scales), real formats (NIfTI, HDF5,
MATLAB, Zarr/OME-Zarr, ENVI), degradation models, metrics with stated conventions, and
interpolation baselines and networks in one model registry.

Submodules are imported on use: ``volsr.io``, ``volsr.geometry``, ``volsr.degrade``,
``volsr.metrics``, ``volsr.models``, ``volsr.engine``. ``volsr.adapt`` is
:func:`volsr.train.adapt.adapt` (self-supervised adaptation to one scan or cube), loaded on
first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "adapt"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``volsr.adapt`` without importing torch at ``import volsr`` (PEP 562)."""
    if name == "adapt":
        from volsr.train.adapt import adapt

        return adapt
    raise AttributeError(f"module 'volsr' has no attribute {name!r}")
