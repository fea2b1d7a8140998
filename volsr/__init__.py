"""volsr: super-resolution of MRI volumes and hyperspectral cubes.

Exact geometry (field of view kept, per-axis non-integer scales), real formats (NIfTI, HDF5,
MATLAB, Zarr/OME-Zarr, ENVI), degradation models, metrics with stated conventions, and
interpolation baselines and networks in one model registry.

Submodules are imported on use: ``volsr.io``, ``volsr.geometry``, ``volsr.degrade``,
``volsr.metrics``, ``volsr.models``, ``volsr.engine``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
