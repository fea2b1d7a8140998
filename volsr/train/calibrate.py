"""Fit a model's uncertainty calibration on its training volumes (``python -m volsr.train.calibrate``).

Each case is a training volume (relative to the shared data folder), normalised and
thick-sliced by the validation protocol (:func:`volsr.train.validation.prepare_case`), with
Rician noise at a share of its white-matter level first (:func:`volsr.noise.add_rician_noise`);
the model runs through :class:`volsr.models.trust.WithUncertainty` tile by tile
(:func:`volsr.engine.execute.run_task`), and the features and ``|output - reference|`` of the
foreground (reference > 0.05) go to :func:`volsr.uncertainty.fit_calibration`. The noise
feature is what the engine gives a run: :func:`volsr.engine.trust.scan_noise` of the LR input.

Run: ``python -m volsr.train.calibrate --model meta_srgan.t1 --out volsr/models/calibration/meta_srgan_t1.json``
(``--crop 128``; ``--members 8``). Prints one line per case (coverage and AUSE of the final
fit on it) and writes the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from volsr import io
from volsr.acquisition import acquisition_from_spacing
from volsr.datasets import shared_data_root
from volsr.engine.execute import run_task
from volsr.engine.normalise import input_statistics
from volsr.engine.plan import make_plan
from volsr.engine.trust import scan_noise
from volsr.models import create_model
from volsr.models.trust import WithUncertainty
from volsr.noise import add_rician_noise, white_matter_level
from volsr.train.validation import prepare_case
from volsr.uncertainty import FEATURES, Calibration, ause, coverage, fit_calibration

__all__ = ["TRAINING_CASES", "case_features", "main"]

#: (volume under the shared data folder, thick-slice factor, noise as a share of white matter).
#: Single-subject scans only: a template (an average of many brains) has less fine detail
#: than any real scan, and a calibration fitted with the MNI152 templates covered real
#: single-subject scans less (0.79-0.86 at x4) than the templates (0.93-0.96).
TRAINING_CASES = (
    ("mri/MR_Gd.nii.gz", 4.0, 0.0),
    ("mri/MR_Gd.nii.gz", 4.0, 0.02),
    ("mri/MR_Gd.nii.gz", 2.0, 0.035),
    ("mri/MR_Gd.nii.gz", 3.0, 0.05),
    ("mri/ixi_t1_2mm/IXI012-HH-1211_T1.nii.gz", 4.0, 0.0),
    ("mri/ixi_t1_2mm/IXI132-HH-1415_T1.nii.gz", 3.0, 0.035),
    ("mri/ixi_t1_2mm/IXI162-HH-1548_T1.nii.gz", 2.0, 0.02),
    ("mri/ixi_t1_2mm/IXI174-HH-1571_T1.nii.gz", 4.0, 0.02),
    ("mri/ixi_t1_2mm/IXI206-HH-1650_T1.nii.gz", 4.0, 0.035),
    ("mri/ixi_t1_2mm/IXI211-HH-1568_T1.nii.gz", 2.0, 0.0),
)

FOREGROUND = 0.05


class _Probe(WithUncertainty):
    """The wrapper returning its features as extra arrays (what the fit needs)."""

    extra_outputs = ("spread", "slope", "bend")

    def forward(self, x: torch.Tensor, positions) -> torch.Tensor:
        return torch.cat(self.features(x, positions), 1).to(x.dtype)


def case_features(model: str, path: Path, factor: float, noise: float, *, crop: int, members: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Features ``(4, N)`` (scaled units) and ``|error|`` ``(N,)`` on one case's foreground.

    Parameters
    ----------
    model : str
        Registry name.
    path : Path
        HR volume.
    factor : float
        Thick-slice factor along axis 2.
    noise : float
        Rician sigma as a share of white matter (the 90th percentile of the upper 40 %).
    crop : int
        Centre crop edge (voxels).
    members : int
        Flips whose spread is fitted.
    seed : int
        Noise seed.

    Returns
    -------
    features : (4, N) float32 ndarray
    errors : (N,) float32 ndarray
    """
    volume = io.load(path)
    if noise > 0:
        data = np.asarray(volume.data.compute(), np.float32)
        data = add_rician_noise(data, sigma=noise * white_matter_level(data), rng=np.random.default_rng(seed))
        volume = volume.replace(data=data)
    case = prepare_case(volume, name=path.name, factor=factor, axis=2, crop=(crop,) * 3)
    net = create_model(model)
    scale, _ = input_statistics(net.card, case.lr.data)
    placeholder = Calibration(model, dict.fromkeys((*FEATURES, "constant"), 1.0), members=members)
    probe = _Probe(net, case.scale, placeholder).eval()
    noise_out = scan_noise(case.lr, acquisition_from_spacing(case.lr.spacing), case.scale) / scale
    lr = np.asarray(case.lr.data, np.float32)[None] / np.float32(scale)
    plan = make_plan(probe.card, lr.shape[1:], case.hr.shape, chunks=case.hr.shape, tile=(64, 64, 64))
    region = tuple((0, n) for n in case.hr.shape)
    with torch.inference_mode():
        result = run_task(probe, plan, region, lr, tuple((0, n) for n in lr.shape[1:]), device=torch.device("cpu"))
    output, spread, slope, bend = result
    mask = case.hr > FOREGROUND
    features = np.stack([spread[mask], slope[mask], bend[mask], np.full(mask.sum(), noise_out, np.float32)])
    return features.astype(np.float32), np.abs(output - case.hr / np.float32(scale))[mask].astype(np.float32)


def main(argv: Sequence[str] | None = None) -> None:
    """Fit and write the calibration (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = args.data_root or shared_data_root()
    card = create_model(args.model).card
    members = args.members if card.kind == "network" else 1
    cases = [(root / rel, f, n) for rel, f, n in TRAINING_CASES]
    data = []
    for path, factor, noise in cases:
        data.append(case_features(args.model, path, factor, noise, crop=args.crop, members=members))
        print(f"features: {path.name} x{factor:g} noise {noise:g}: {data[-1][1].size} voxels", flush=True)  # noqa: T201
    described = [f"{p.relative_to(root)} x{f:g} noise {n:g} of white matter" for p, f, n in cases]
    calibration = fit_calibration(args.model, [f for f, _ in data], [e for _, e in data], members=members,
                                  factors=[f for _, f, _ in cases], fitted_on=described)  # fmt: skip
    calibration = dataclasses.replace(calibration, fitted_on=(*described, f"centre crop {args.crop}^3, axis 2"))
    for (path, factor, noise), (features, errors) in zip(cases, data, strict=True):
        width = calibration.half_width(*features, factor)
        print(f"{path.name} x{factor:g} noise {noise:g}: coverage {coverage(width, errors):.3f}, "  # noqa: T201
              f"AUSE {ause(width, errors):.3f}")
    Path(args.out).write_text(calibration.to_json(), encoding="utf-8")
    print(f"wrote {args.out}: {calibration.coefficients}")  # noqa: T201


if __name__ == "__main__":
    main()
