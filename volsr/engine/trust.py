"""The engine's trust outputs: the uncertainty model of a run, its noise level, the extra files.

The uncertainty is one more array of the same tasks (:class:`volsr.models.trust.WithUncertainty`
returns it beside the output); the consistency map and consistency enforcement are computed
from the finished work store when the outputs are delivered (they need the output across
task borders along the slice axis), chunk by chunk (:mod:`volsr.consistency`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
from torch import nn

from volsr import io
from volsr.acquisition import AcquisitionModel, estimate_noise
from volsr.consistency import consistency_map, enforce_consistency, summary
from volsr.errors import InvalidDataError, TooSmallForPairsError
from volsr.models.trust import WithUncertainty, calibration_for
from volsr.uncertainty import noise_attenuation
from volsr.volume import Volume

__all__ = ["TrustOptions", "with_uncertainty", "scan_noise", "scan_width_scale", "self_pair_quantile",
           "stored_volume", "deliver_trust", "SCAN_PAIRS"]

#: Self-pairs of the per-scan uncertainty check (32^3 patches; about 7 s for meta_srgan.t1 on 2 CPU cores).
SCAN_PAIRS = 32
#: Smallest pair edge of the check (voxels).
MIN_PATCH = 16
#: Foreground of the check: truth above this share of the scan's P99.9 (the protocol's mask).
FOREGROUND = 0.05


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrustOptions:
    """What a run adds to its output (:func:`volsr.engine.upsample_to_store`'s ``trust``).

    Parameters
    ----------
    uncertainty : str or path, optional
        Output spec of the 90 % half-width map of ``|output - truth|`` (the output's grid
        and units; :mod:`volsr.uncertainty`); per pixel and band for a spectral cube.
    consistency : str or path, optional
        Output spec of the consistency map: the output re-acquired by the input's acquisition
        minus the input, on the input's grid (:func:`volsr.consistency.consistency_map`).
    enforce_consistency : bool
        Deliver the nearest volume that re-acquires to the input exactly
        (:func:`volsr.consistency.enforce_consistency`).
    acquisition : AcquisitionModel, optional
        The input's acquisition (thickness, profile) for MRI volumes; default from its
        header and BIDS sidecar.

    Examples
    --------
    >>> TrustOptions(uncertainty="u.nii.gz").outputs
    ['u.nii.gz']
    """

    uncertainty: str | None = None
    consistency: str | None = None
    enforce_consistency: bool = False
    acquisition: AcquisitionModel | None = None

    def __post_init__(self) -> None:
        for name in ("uncertainty", "consistency"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        object.__setattr__(self, "enforce_consistency", bool(self.enforce_consistency))

    @property
    def outputs(self) -> list[str]:
        """The extra output specs."""
        return [spec for spec in (self.uncertainty, self.consistency) if spec is not None]

    def header(self) -> dict:
        """What a resume must match (absent keys: a run without trust outputs, headers as before)."""
        record = {}
        if self.uncertainty is not None:
            record["uncertainty"] = os.path.abspath(self.uncertainty)
        if self.consistency is not None:
            record["consistency"] = os.path.abspath(self.consistency)
        if self.enforce_consistency:
            record["enforce_consistency"] = True
        if record and self.acquisition is not None:
            record["acquisition"] = {"thickness": list(self.acquisition.thickness), "profile": self.acquisition.profile}
        return record


def with_uncertainty(net: nn.Module, volume: Volume, factors: Sequence[float], self_ensemble: bool | None) -> WithUncertainty:
    """``net`` returning its calibrated half-width too (refused for a model without a calibration).

    Parameters
    ----------
    net : torch.nn.Module
        With a ``card``.
    volume : Volume
        The input: a spectral cube (a band axis) takes the card's cube calibration, any
        other volume its MRI one.
    factors : (D,) sequence of float
        The run's factors.
    self_ensemble : bool or None
        As for :func:`volsr.engine.resolve.with_self_ensemble`.

    Returns
    -------
    WithUncertainty

    Raises
    ------
    ValueError
        If the model ships no calibration for the input's modality (one line).

    Examples
    --------
    >>> from volsr.models import create_model
    >>> v = Volume(np.zeros((4, 4, 2), np.float32), np.diag([1, 1, 2, 1.0]), ("i", "j", "k"))
    >>> with_uncertainty(create_model("cubic"), v, (1, 1, 2), None).extra_outputs
    ('uncertainty',)
    >>> cube = Volume(np.zeros((4, 4, 5), np.float32), np.eye(4), ("i", "j", "band"))
    >>> with_uncertainty(create_model("cubic"), cube, (2, 2), None).calibration.modality
    'hsi'
    """
    calibration = calibration_for(net.card, "hsi" if volume.band_axis is not None else "mri")
    ensemble = net.card.self_ensemble if self_ensemble is None else bool(self_ensemble)
    return WithUncertainty(net, factors, calibration, ensemble=ensemble)


def scan_noise(volume: Volume, acquisition: AcquisitionModel | None, factors: Sequence[float]) -> float:
    """Noise sigma a scan on the output grid would have (the input's units; 0 if unknown).

    The input's in-plane noise (``acquisition.noise_sigma``, else
    :func:`volsr.acquisition.estimate_noise`) divided by the
    slice profile's averaging (:func:`volsr.uncertainty.noise_attenuation`) along every
    upsampled axis. 0 for a spectral cube: the cube calibrations have no noise term
    (:mod:`volsr.uncertainty`).

    Parameters
    ----------
    volume : Volume
        The input.
    acquisition : AcquisitionModel or None
        Its thickness (mm) and profile per spatial axis; None only for a spectral cube.
    factors : (D,) sequence of float
        The run's factors.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``acquisition`` is None for an input that is not a spectral cube.

    Examples
    --------
    >>> from volsr.acquisition import acquisition_from_spacing
    >>> rng = np.random.default_rng(0)
    >>> v = Volume(100 + 5 * rng.standard_normal((64, 64, 8)), np.diag([1, 1, 4, 1.0]), ("i", "j", "k"))
    >>> round(scan_noise(v, acquisition_from_spacing((1, 1, 4)), (1, 1, 4)) / 5, 1)  # 1 / 0.408
    2.4
    """
    if volume.band_axis is not None:
        return 0.0
    if acquisition is None:
        raise ValueError("scan_noise needs the acquisition of an MRI volume, got None")
    attenuation = 1.0
    for d, factor in enumerate(factors):
        if factor > 1:
            thickness = acquisition.thickness[d] * factor / float(volume.spacing[d])
            attenuation *= noise_attenuation(thickness, factor, acquisition.profile)
    return _inplane_noise(volume, acquisition) / attenuation


def _inplane_noise(volume: Volume, acquisition: AcquisitionModel) -> float:
    """The scan's in-plane noise sigma (the input's units; 0 where it cannot be estimated)."""
    sigma = acquisition.noise_sigma  # estimated already when the caller showed it
    if sigma is None:
        try:
            sigma = estimate_noise(volume, slice_axis=acquisition.slice_axis)
        except (InvalidDataError, ValueError, ArithmeticError):
            return 0.0  # too little foreground to say: the calibration's other terms remain
    return float(sigma) if math.isfinite(sigma) else 0.0


def scan_width_scale(net: WithUncertainty, volume: Volume, acquisition: AcquisitionModel | None,
                     input_scale: float) -> tuple[float, str]:  # fmt: skip
    """The per-scan factor on ``U`` (:meth:`volsr.uncertainty.Calibration.scan_scale`), and why.

    Runs ``net`` with its uncertainty on :data:`SCAN_PAIRS` pairs cut from the scan's own
    in-plane axes (:func:`self_pair_quantile`). 1.0, without running anything, for a
    calibration without a per-scan step, a spectral cube, a run that upsamples other than
    one axis of a 3-D volume, or a scan too small for the pairs.

    Parameters
    ----------
    net : WithUncertainty
        The run's model with its calibration (its noise and scale are left as they were).
    volume : Volume
        The input.
    acquisition : AcquisitionModel or None
        The input's (None only for a cube).
    input_scale : float
        The engine's intensity scale of the input (the model's units are the input's / it).

    Returns
    -------
    scale : float
        In [0.25, 4].
    described : str
        One line for the log.

    """
    calibration = net.calibration
    upsampled = [d for d, f in enumerate(net.factors) if f > 1]
    if calibration.scan_transfer is None or volume.band_axis is not None or acquisition is None:
        return 1.0, ""
    if len(net.factors) != 3 or len(upsampled) != 1:
        return 1.0, "uncertainty: no per-scan check (it needs one upsampled axis of a 3-D volume)"
    try:
        quantile = self_pair_quantile(net, volume, acquisition, input_scale)
    except TooSmallForPairsError as error:
        return 1.0, f"uncertainty: no per-scan check ({error})"
    scale = calibration.scan_scale(quantile, net.factors[upsampled[0]])
    return scale, (f"uncertainty: per-scan check on {SCAN_PAIRS} pairs from the input's in-plane axes: "
                   f"|error| / U at 90 % = {quantile:.3f} there; U x {scale:.2f}")


def self_pair_quantile(net: WithUncertainty, volume: Volume, acquisition: AcquisitionModel, input_scale: float, *,
                       pairs: int | None = None, patch: int = 32, seed: int = 0) -> float:  # fmt: skip
    """90 % quantile of ``|error| / U`` over the foreground of pairs cut from the scan itself.

    The pairs are those of ``--adapt`` (:class:`volsr.data.self_pairs.SelfPairSampler`: an
    in-plane axis thick-sliced by the scan's acquisition and swapped into the slice axis's
    position; the truth is the scan), in the model's units; the noise term is the scan's
    in-plane noise (the pairs' truth is the scan, noise included). Foreground: truth above
    5 % of the scan's P99.9.

    Parameters
    ----------
    net : WithUncertainty
        The model with its calibration; one upsampled axis among three (``net.factors``).
    volume : Volume
        The scan (3-D, no band axis).
    acquisition : AcquisitionModel
        Its thickness, spacing and profile.
    input_scale : float
        The engine's intensity scale of the scan.
    pairs : int, optional
        Pairs drawn (default :data:`SCAN_PAIRS`).
    patch : int
        Their edge (voxels); at most the scan's shortest axis, at least :data:`MIN_PATCH`.
    seed : int
        Seed of the draw.

    Returns
    -------
    float
        NaN if no foreground voxel was drawn.

    Raises
    ------
    TooSmallForPairsError
        If the scan is too small for the pairs (one line).
    """
    import torch

    from volsr.data.self_pairs import SelfPairSampler  # the data layer, needed only here

    axis = next(d for d, f in enumerate(net.factors) if f > 1)
    patch = min(patch, *volume.spatial_shape)  # a scan of few slices: smaller pairs, not none
    if patch < MIN_PATCH:
        raise TooSmallForPairsError(f"the volume of shape {tuple(volume.spatial_shape)} is too small for "
                                    f"self-supervised pairs: they need {MIN_PATCH} voxels along every axis")  # fmt: skip
    sampler = SelfPairSampler(volume, slice_axis=axis, factor=float(net.factors[axis]), profile=acquisition.profile,
                              thickness_ratio=acquisition.thickness[axis] / float(acquisition.spacing[axis]),
                              patch=patch)  # fmt: skip
    to_model = sampler.stats[0].reference / float(input_scale)  # the sampler's units -> the model's
    kept = (net.noise, net.scale)
    net.with_noise(_inplane_noise(volume, acquisition) / float(input_scale), 1.0)
    rng, ratios = np.random.default_rng([seed, 2]), []
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    try:
        with torch.inference_mode():
            for _ in range(math.ceil((pairs or SCAN_PAIRS) / 4)):
                batch = sampler.sample_batch(rng, batch_size=4)
                result = net(batch["lr"].to(device) * to_model, batch["positions"]).float().cpu().numpy()
                truth = batch["hr"].numpy()
                mask = truth > FOREGROUND
                output, width = result[:, :1] / to_model, result[:, 1:] / to_model
                ratios.append(np.abs(output - truth)[mask] / np.maximum(width[mask], 1e-12))
    finally:
        net.with_noise(*kept)
    ratios = np.concatenate(ratios)
    return float(np.quantile(ratios, net.calibration.level)) if ratios.size else math.nan


def stored_volume(template: Volume, store: Path, name: str) -> Volume:
    """Array ``name`` of a work store as a lazy volume on ``template``'s grid."""
    import zarr
    from zarr.storage import LocalStore

    from volsr.io.zarr_ome import disk_order

    array = zarr.open_group(store=LocalStore(store), mode="r")[name]
    order = disk_order(template.axes)
    data = da.from_zarr(array).transpose(np.argsort(order).tolist())
    return template.replace(data=data.astype(np.float32))


def deliver_trust(output: Volume, source: Volume, trust: TrustOptions, store: Path, template: Volume,
                  quiet: bool) -> Volume:  # fmt: skip
    """Write the extra outputs; return the output to deliver (enforced if asked).

    Parameters
    ----------
    output : Volume
        The finished output (lazy, from the work store).
    source : Volume
        The input.
    trust : TrustOptions
        What to write.
    store : Path
        The work store (holds the uncertainty array).
    template : Volume
        The output's grid and metadata.
    quiet : bool
        No summary line.

    Returns
    -------
    Volume
        ``output``, or its consistency-enforced version.

    Raises
    ------
    OSError, FormatError
        If an output cannot be written (nothing is replaced then).
    """
    from volsr.engine.runstate import note

    acquisition = trust.acquisition if source.band_axis is None else None
    if trust.enforce_consistency:
        output = enforce_consistency(output, source, acquisition).replace(meta=output.meta)
    if trust.uncertainty is not None:
        io.save(stored_volume(template, store, "uncertainty").replace(meta=output.meta), trust.uncertainty,
                overwrite=True)  # fmt: skip
    if trust.consistency is not None:
        io.save(consistency_map(output, source, acquisition), trust.consistency, overwrite=True)
        # The input's scale for the log line, from a strided sample (about 64 voxels per axis).
        sample = np.asarray(source.data[tuple(slice(None, None, max(1, n // 64)) for n in source.shape)])
        scale = float(np.percentile(sample, 99.9))
        note(summary(io.load(trust.consistency).data, scale if scale > 0 else 1.0), quiet)
    return output
