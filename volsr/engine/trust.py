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
from volsr.errors import InvalidDataError
from volsr.models.trust import WithUncertainty, calibration_for
from volsr.uncertainty import noise_attenuation
from volsr.volume import Volume

__all__ = ["TrustOptions", "with_uncertainty", "scan_noise", "stored_volume", "deliver_trust"]


@dataclasses.dataclass(frozen=True)
class TrustOptions:
    """What a run adds to its output.

    Parameters
    ----------
    uncertainty : str, optional
        Output spec of the 90 % half-width map (the output's grid and units).
    consistency : str, optional
        Output spec of the consistency map (the input's grid and units).
    enforce : bool
        Deliver the consistency-enforced output (:func:`volsr.consistency.enforce_consistency`).
    acquisition : AcquisitionModel, optional
        The input's acquisition (thickness, profile) for MRI volumes; default from the header.
    """

    uncertainty: str | None = None
    consistency: str | None = None
    enforce: bool = False
    acquisition: AcquisitionModel | None = None

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
        if self.enforce:
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
        The input (a spectral cube is refused: the shipped calibrations are fitted on MRI).
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
        If the model ships no calibration, or the input is a spectral cube.

    Examples
    --------
    >>> from volsr.models import create_model
    >>> v = Volume(np.zeros((4, 4, 2), np.float32), np.diag([1, 1, 2, 1.0]), ("i", "j", "k"))
    >>> with_uncertainty(create_model("cubic"), v, (1, 1, 2), None).extra_outputs
    ('uncertainty',)
    """
    calibration = calibration_for(net.card)
    if volume.band_axis is not None:
        raise ValueError(f"--uncertainty: the calibration of {net.card.name!r} was fitted on MRI volumes; "
                         "spectral cubes have no calibration yet")  # fmt: skip
    ensemble = net.card.self_ensemble if self_ensemble is None else bool(self_ensemble)
    return WithUncertainty(net, factors, calibration, ensemble=ensemble)


def scan_noise(volume: Volume, acquisition: AcquisitionModel, factors: Sequence[float]) -> float:
    """Noise sigma a scan on the output grid would have (the input's units; 0 if unknown).

    The input's in-plane noise (``acquisition.noise_sigma``, else
    :func:`volsr.acquisition.estimate_noise`) divided by the
    slice profile's averaging (:func:`volsr.uncertainty.noise_attenuation`) along every
    upsampled axis.

    Parameters
    ----------
    volume : Volume
        The input.
    acquisition : AcquisitionModel
        Its thickness (mm) and profile per spatial axis.
    factors : (D,) sequence of float
        The run's factors.

    Returns
    -------
    float

    Raises
    ------
    None

    Examples
    --------
    >>> from volsr.acquisition import acquisition_from_spacing
    >>> rng = np.random.default_rng(0)
    >>> v = Volume(100 + 5 * rng.standard_normal((64, 64, 8)), np.diag([1, 1, 4, 1.0]), ("i", "j", "k"))
    >>> round(scan_noise(v, acquisition_from_spacing((1, 1, 4)), (1, 1, 4)) / 5, 1)  # 1 / 0.408
    2.4
    """
    sigma = acquisition.noise_sigma  # estimated already when the caller showed it
    if sigma is None:
        try:
            sigma = estimate_noise(volume, slice_axis=acquisition.slice_axis)
        except (InvalidDataError, ValueError, ArithmeticError):
            return 0.0  # too little foreground to say: the calibration's other terms remain
    attenuation = 1.0
    for d, factor in enumerate(factors):
        if factor > 1:
            thickness = acquisition.thickness[d] * factor / float(volume.spacing[d])
            attenuation *= noise_attenuation(thickness, factor, acquisition.profile)
    return float(sigma / attenuation) if math.isfinite(sigma) else 0.0


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
    if trust.enforce:
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
