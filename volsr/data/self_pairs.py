"""Training pairs cut from the scan that will be upsampled (self-supervised adaptation).

A thick-slice scan is sharp in-plane. Thick-slicing one of its in-plane axes with the scan's
own slice profile, and swapping that axis into the slice axis's position, gives pairs whose
input looks like the scan does along its slice axis and whose target is the scan itself
(SMORE, Zhao et al. 2021; ECLARE, Remedios et al. 2023). :class:`SelfPairSampler` is a
:class:`~volsr.data.sampler.PatchSampler` over that one volume whose axis permutations
always swap an in-plane axis into the slice position, and whose patches can be kept inside
or outside a slab (the held-out region of the adaptation guard).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from volsr.data._options import check_rng
from volsr.data.pairs import PatchParams
from volsr.data.sampler import PatchSampler, VolumeSpec
from volsr.data.sampler_options import SamplerOptions
from volsr.errors import TooSmallForPairsError

__all__ = ["SelfPairSampler", "Slab", "central_slab"]

#: Draws tried before a patch that respects the slab is given up on.
_MAX_TRIES = 200

#: A half-open range ``(start, stop)`` of volume voxels along ``axis``.
Slab = tuple[int, int, int]


class SelfPairSampler(PatchSampler):
    """Pairs from one thick-slice volume: an in-plane axis thick-sliced into the slice position.

    Parameters
    ----------
    volume : str, path, Volume or (X, Y, Z) ndarray
        The scan (axes ``("i", "j", "k")``), as :class:`~volsr.data.sampler.PatchSampler` takes it.
    slice_axis : int
        The scan's slice axis (0, 1 or 2): the pairs' input is thick along this patch axis.
    factor : float
        Slice spacing / in-plane voxel size of the pairs (>= 1): the upsampling factor the
        scan is asked for along ``slice_axis``.
    thickness_ratio : float
        Slice thickness / slice spacing of the scan (> 0; 1 for contiguous slices).
    profile : {"gaussian", "box"}
        The scan's slice profile.
    patch : int
        Patch edge (voxels, >= 4).
    lr_halo : int
        Extra LR slices on each side of a tile (>= 0).
    slab : (axis, start, stop), optional
        A slab of volume voxels along an in-plane ``axis``.
    inside : bool
        With ``slab``: every voxel a pair reads lies inside the slab (True) or outside it
        (False, conservatively: the slice profile's support counts as read).

    Raises
    ------
    ValueError
        If the slab is not along an in-plane axis; :class:`~volsr.errors.TooSmallForPairsError`
        (a ValueError) if no in-plane axis is long enough for the patch, factor and halo, or
        (on a draw) no patch fits the slab.

    Notes
    -----
    Permutations: patch axis ``d`` is volume axis ``permutation[d]``; every permutation
    used puts an in-plane volume axis at patch position ``slice_axis`` (4 of the 6), keeping
    those whose degraded axis fits. Flips along every axis; no noise, zoom or intensity
    augmentation (the pairs are the scan as it is). Intensities are ``clip(x / P99.9, 0, 1)``
    of the whole scan, as for training.

    Examples
    --------
    >>> x = np.random.default_rng(0).random((40, 40, 10)).astype(np.float32)
    >>> s = SelfPairSampler(x, slice_axis=2, factor=4.0, thickness_ratio=1.0, profile="gaussian", patch=8)
    >>> batch = s.sample_batch(np.random.default_rng(0), batch_size=2)
    >>> tuple(batch["lr"].shape), tuple(batch["hr"].shape)
    ((2, 1, 8, 8, 4), (2, 1, 8, 8, 8))
    """

    def __init__(
        self,
        volume: VolumeSpec,
        *,
        slice_axis: int,
        factor: float,
        thickness_ratio: float,
        profile: str,
        patch: int,
        lr_halo: int = 1,
        slab: Slab | None = None,
        inside: bool = False,
    ) -> None:
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
        if slab is not None and (slab[0] == slice_axis or slab[0] not in (0, 1, 2)):
            raise ValueError(f"the slab must lie along an in-plane axis, got axis {slab[0]} (slice axis {slice_axis})")
        self.slice_axis, self.slab, self.inside = slice_axis, slab, bool(inside)
        self.thickness_ratio = float(thickness_ratio)
        super().__init__([volume], SamplerOptions(
            patch_shape=(patch,) * 3, factor_range=(factor, factor), axes=(slice_axis,),
            thickness_ratio_range=(thickness_ratio, thickness_ratio), profiles=(profile,),
            lr_halo=lr_halo, flip_axes=(0, 1, 2), permute_axes=True,
        ))  # fmt: skip

    def _check_sizes(self) -> None:
        # Overrides the parent's check: the slice axis only ever holds a plain patch axis.
        shape, (patch, factor) = self.shapes[0], (self.options.patch_shape[0], self.options.factor_range[1])
        degraded = patch + (2 * self.options.lr_halo + 1) * factor + 2
        self.permutations = [
            p for p in itertools.permutations(range(3))
            if p[self.slice_axis] != self.slice_axis and shape[p[self.slice_axis]] >= degraded
            and not (self.slab is not None and self.inside and p[self.slice_axis] == self.slab[0])
        ]  # fmt: skip
        if min(shape) < patch or not self.permutations:
            raise TooSmallForPairsError(f"the volume of shape {tuple(shape)} is too small for self-supervised pairs: "
                                        f"patch {patch} at factor {factor:g} needs an in-plane axis of "
                                        f"{math.ceil(degraded)} voxels and {patch} along every axis")  # fmt: skip

    def draw_params(
        self, rng: np.random.Generator, *, factor: float, axis: int, isotropic: bool = False
    ) -> PatchParams:
        """Draw one pair's parameters: a swapping permutation, flips, an origin (see the class).

        Parameters
        ----------
        rng : np.random.Generator
            Source of randomness (consumed).
        factor : float
            Slice factor (the sampler's one factor).
        axis : int
            Patch slice axis (the sampler's ``slice_axis``).
        isotropic : bool
            Must be False (self-supervised pairs are thick along one axis).

        Returns
        -------
        PatchParams

        Raises
        ------
        ValueError
            If ``isotropic`` or no origin respecting the slab is found in a few hundred draws.

        Examples
        --------
        >>> x = np.ones((40, 40, 10), np.float32)
        >>> s = SelfPairSampler(x, slice_axis=2, factor=4.0, thickness_ratio=1.0, profile="gaussian", patch=8)
        >>> s.draw_params(np.random.default_rng(1), factor=4.0, axis=2).permutation[2] != 2
        True
        """
        check_rng(rng)
        if isotropic:
            raise ValueError("self-supervised pairs are thick along one axis (isotropic=False)")
        for _ in range(_MAX_TRIES):
            permutation = self.permutations[int(rng.integers(len(self.permutations)))]
            flips = tuple(bool(rng.random() < 0.5) for _ in range(3))
            origin = self._draw_origin(rng, 0, factor, axis, 1.0, permutation, flips, False)
            if self.slab is not None and self.inside:
                origin = self._into_slab(rng, origin, permutation, flips)
            params = PatchParams(volume=0, origin=origin, axis=axis, factor=factor,
                                 thickness=factor * self.thickness_ratio, profile=self.options.profiles[0],
                                 permutation=permutation, flips=flips)  # fmt: skip
            if self.respects_slab(params):
                return params
        where = "inside" if self.inside else "outside"
        raise TooSmallForPairsError(f"no patch of {self.options.patch_shape[0]} voxels fits {where} the slab {self.slab} "
                                    f"of a volume of shape {self.shapes[0]}")  # fmt: skip

    def _into_slab(self, rng: np.random.Generator, origin: tuple[int, ...], permutation: tuple[int, ...],
                   flips: tuple[bool, ...]) -> tuple[int, ...]:
        # Inside pairs never degrade the slab's axis (see _check_sizes): its range is the patch's.
        axis, low, high = self.slab
        d, n, patch = permutation.index(axis), self.shapes[0][axis], self.options.patch_shape[0]
        low, high = (n - high, n - low) if flips[d] else (low, high)
        moved = list(origin)
        moved[d] = int(rng.integers(low, max(low, high - patch) + 1))
        return tuple(moved)

    def volume_range(self, params: PatchParams, axis: int) -> tuple[int, int]:
        """The range of volume voxels along ``axis`` that a pair reads (its profile's support included).

        Parameters
        ----------
        params : PatchParams
            A pair of this sampler.
        axis : int
            Volume axis.

        Returns
        -------
        (start, stop) : tuple of int
            Half-open, clipped to the volume; along the degraded axis widened by
            ``(lr_halo + 1) * factor + 2 * thickness`` voxels on each side (the slices'
            support, conservatively).

        Examples
        --------
        >>> s = SelfPairSampler(np.ones((40, 40, 10), np.float32), slice_axis=2, factor=4.0,
        ...                     thickness_ratio=1.0, profile="box", patch=8)
        >>> p = PatchParams(volume=0, origin=(2, 3, 12), axis=2, factor=4.0, thickness=4.0, permutation=(2, 1, 0))
        >>> s.volume_range(p, 2), s.volume_range(p, 0)
        ((2, 10), (0, 36))
        """
        d = params.permutation.index(axis)
        n, patch = self.shapes[params.volume][axis], self.options.patch_shape[d]
        margin = math.ceil((self.options.lr_halo + 1) * params.factor + 2 * params.thickness) if d == params.axis else 0
        start, stop = max(params.origin[d] - margin, 0), min(params.origin[d] + patch + margin, n)
        return (n - stop, n - start) if params.flips[d] else (start, stop)

    def respects_slab(self, params: PatchParams) -> bool:
        """Whether a pair lies inside (or outside) the slab, as the sampler was asked.

        Parameters
        ----------
        params : PatchParams

        Returns
        -------
        bool
            True without a slab.

        Examples
        --------
        >>> s = SelfPairSampler(np.ones((40, 40, 10), np.float32), slice_axis=2, factor=4.0,
        ...                     thickness_ratio=1.0, profile="box", patch=8, slab=(1, 16, 24), inside=True)
        >>> s.respects_slab(PatchParams(volume=0, origin=(16, 20, 2), axis=2, factor=4.0, thickness=4.0,
        ...                             permutation=(1, 2, 0)))
        True
        """
        if self.slab is None:
            return True
        axis, low, high = self.slab
        start, stop = self.volume_range(params, axis)
        return (low <= start and stop <= high) if self.inside else (stop <= low or start >= high)


def central_slab(shape: Sequence[int], axis: int, width: int) -> Slab:
    """The slab of ``width`` voxels at the centre of ``axis`` (a held-out region).

    Parameters
    ----------
    shape : (3,) sequence of int
        Volume shape.
    axis : int
        In-plane axis.
    width : int
        Slab width (voxels, <= ``shape[axis]``).

    Returns
    -------
    (axis, start, stop)

    Examples
    --------
    >>> central_slab((100, 80, 20), 0, 20)
    (0, 40, 60)
    """
    start = (shape[axis] - width) // 2
    return axis, start, start + width
