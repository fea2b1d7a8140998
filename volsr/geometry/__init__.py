"""Grid geometry: the one owner of every formula about voxel grids.

Conventions (fixed here, used everywhere):

- An affine is a ``(4, 4)`` float64 matrix mapping *voxel centres* ``(i, j, k, 1)`` of
  the spatial array axes, in array order, to world coordinates in mm (RAS+ for NIfTI).
  Volumes with two spatial axes (hyperspectral cubes) use the first two columns; the
  third column is a unit vector.
- Voxel ``i`` covers the continuous interval ``[i - 1/2, i + 1/2]`` in voxel coordinates.
- Resampling a grid of ``n`` voxels to ``n'`` voxels along an axis keeps the field of
  view ``[-1/2, n - 1/2]``. With ``s = n'/n`` (the *effective* scale), output voxel ``o``
  sits at input coordinate ``x = (o + 1/2) / s - 1/2``, hence

  ``A' = A . diag(1/s, 1)`` and the origin moves by ``A[:3, :3] . ((1/s - 1) / 2)``.

  The same formula serves upsampling (``s > 1``) and downsampling (``s < 1``).
- Upsampling by a requested per-axis factor ``f`` gives ``n' = floor(n f + 1/2)``
  (round half up, never below 1); the effective scale ``n'/n`` then differs slightly
  from ``f`` for non-integer factors, and the affine uses the effective scale so that
  the field of view is exactly preserved.
- A thick-slice (or any) downsampling by factor ``f`` keeps ``n_lr = floor(n / f)``
  voxels covering the first ``n_cov = floor(n_lr f + 1/2) <= n`` high-resolution voxels;
  low-resolution voxel ``k`` is centred on the middle of HR voxels ``[k f, (k+1) f)``,
  and upsampling the LR grid by ``f`` lands exactly on the HR grid.
"""

from volsr.geometry.grid import (
    check_affine,
    crop_affine,
    downsampled_grid,
    effective_scale,
    grid_factor,
    input_window,
    integer_factors,
    output_coordinates,
    per_axis,
    resampled_affine,
    resampled_shape,
    sample_coordinates,
    scale_for_target_spacing,
    voxel_spacing,
)
from volsr.geometry.pyramid import pyramid_affine, pyramid_shape, pyramid_transform

__all__ = [
    "check_affine",
    "voxel_spacing",
    "per_axis",
    "scale_for_target_spacing",
    "resampled_shape",
    "effective_scale",
    "resampled_affine",
    "output_coordinates",
    "sample_coordinates",
    "grid_factor",
    "input_window",
    "crop_affine",
    "downsampled_grid",
    "integer_factors",
    "pyramid_shape",
    "pyramid_affine",
    "pyramid_transform",
]
