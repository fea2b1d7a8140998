"""Fit a model's uncertainty calibration on its training data (``python -m volsr.train.calibrate``).

MRI (``--modality mri``, the default): each case is a training volume (relative to the
shared data folder), normalised and thick-sliced by the validation protocol
(:func:`volsr.train.validation.prepare_case`), with Rician noise at a share of its
white-matter level first (:func:`volsr.noise.add_rician_noise`); the model runs through
:class:`volsr.models.trust.WithUncertainty` tile by tile (:func:`volsr.engine.execute.run_task`),
and the features and ``|output - reference|`` of the foreground (reference > 0.05) go to
:func:`volsr.uncertainty.fit_calibration`. The noise feature is what the engine gives a
run: :func:`volsr.engine.trust.scan_noise` of the LR input.

Spectral cubes (``--modality hsi``): each case is a cube that trained the model (for a
baseline: the cubes that trained both HSI networks, at x2 and x4), divided by its maximum
and degraded by the HSI protocol (:func:`volsr.data.hsi.make_pair`: MATLAB ``imresize``
bicubic); the model runs whole-cube as the engine runs it (its input scaling, its
self-ensemble, its output floor), and every pixel and band counts (cubes have no
background). The noise feature is 0 (:func:`volsr.engine.trust.scan_noise` of a cube).

Run: ``python -m volsr.train.calibrate --model meta_srgan.t1 --out volsr/models/calibration/meta_srgan_t1.json``
or ``--model attn1d2d.x4 --modality hsi --out volsr/models/calibration/attn1d2d_x4.json``
(``--crop 128``; ``--members 8``). Prints one line per case (coverage and AUSE of the final
fit on it) and writes the JSON. For an MRI network it then fits the per-scan step
(:func:`scan_transfer`; ``--scan-transfer-only`` fits just that into an existing file).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import torch

from volsr import io
from volsr.acquisition import acquisition_from_spacing
from volsr.data.hsi import load_cube, make_pair
from volsr.datasets import shared_data_root
from volsr.engine.execute import run_task
from volsr.engine.normalise import input_statistics
from volsr.engine.plan import make_plan
from volsr.engine.trust import scan_noise, self_pair_quantile
from volsr.models import create_model, get_card
from volsr.models.trust import WithUncertainty
from volsr.noise import add_rician_noise, white_matter_level
from volsr.train.validation import ValidationCase, prepare_case
from volsr.uncertainty import (
    FEATURES,
    MODALITIES,
    Calibration,
    ause,
    coverage,
    fit_calibration,
    fit_scan_transfer,
)

__all__ = ["TRAINING_CASES", "HSI_TRAINING_CUBES", "BASELINE_FACTORS", "case_features", "cube_cases", "cube_features",
           "scan_transfer", "main"]

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

#: The cubes that trained both shipped HSI networks (their sidecars' training configs, the x4
#: soup's under ``soup_of``; ``tests/train/test_calibrate.py`` checks). Never fitted on: both
#: San Diego crops (the networks' validation), CAVE, ``hydice.mat`` (the transpose of
#: ``HYDICE_data.mat``) and, but for ``attn1d2d.x2``, the Pavia and MUUFL crops below.
HSI_TRAINING_CUBES = (
    *(f"hsi/abu/abu-{scene}.mat:data" for scene in (
        "airport-1", "airport-2", "airport-3", "airport-4", "beach-1", "beach-2", "beach-3",
        "urban-1", "urban-2", "urban-3", "urban-4", "urban-5")),
    "hsi/hydice_urban/HYDICE_data.mat:data",
    "hsi/gatorsense/a_hsi_img_for_VI_demo.mat",
)

#: Per network: its training cubes (``attn1d2d.x2`` also trained on two small other-sensor crops).
_NETWORK_CUBES = {
    "attn1d2d.x2": (*HSI_TRAINING_CUBES, "hsi/gatorsense/paviaU_subimg.mat",
                    "hsi/gatorsense/an_hsi_image_sub_for_demo.mat:hsi_img_sub"),
    "attn1d2d.x4": HSI_TRAINING_CUBES,
}

#: The factors a baseline's cube calibration is fitted at (one ``factor_power`` for both).
BASELINE_FACTORS = (2, 4)


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
    return _case_features(create_model(model), _training_case(path, factor, noise, crop=crop, seed=seed), members)


def _case_features(net: torch.nn.Module, case: ValidationCase, members: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`case_features` of a prepared case."""
    scale, _ = input_statistics(net.card, case.lr.data)
    noise_out = scan_noise(case.lr, acquisition_from_spacing(case.lr.spacing), case.scale) / scale
    lr = np.asarray(case.lr.data, np.float32)[None] / np.float32(scale)
    output, spread, slope, bend = (a[0] for a in _probe_run(net, lr, case.hr.shape, case.scale, members=members,
                                                           ensemble=False, tile=64))  # fmt: skip
    mask = case.hr > FOREGROUND
    features = np.stack([spread[mask], slope[mask], bend[mask], np.full(mask.sum(), noise_out, np.float32)])
    return features.astype(np.float32), np.abs(output - case.hr / np.float32(scale))[mask].astype(np.float32)


def _training_case(path: Path, factor: float, noise: float, *, crop: int, seed: int) -> ValidationCase:
    """One MRI case: Rician noise at ``noise`` x white matter, then the validation protocol."""
    volume = io.load(path)
    if noise > 0:
        data = np.asarray(volume.data.compute(), np.float32)
        data = add_rician_noise(data, sigma=noise * white_matter_level(data), rng=np.random.default_rng(seed))
        volume = volume.replace(data=data)
    return prepare_case(volume, name=path.name, factor=factor, axis=2, crop=(crop,) * 3)


def scan_transfer(calibration: Calibration, root: Path, *, crop: int, seed: int = 0,
                  data: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[float, float]:
    """Fit the calibration's per-scan step (``scan_transfer``) on its own MRI training cases.

    Per case, the 90 % quantile of ``|error| / U`` of the real run (the features of
    :func:`case_features`) and of the scan's self-pairs
    (:func:`volsr.engine.trust.self_pair_quantile`, as a run computes it), then
    :func:`volsr.uncertainty.fit_scan_transfer`. Prints one line per case.

    Parameters
    ----------
    calibration : Calibration
        The fitted coefficients (an MRI calibration of a registry model).
    root : Path
        The shared data folder.
    crop : int
        Centre crop edge (voxels), as the fit's.
    seed : int
        Noise seed, as the fit's.
    data : sequence of (features, errors), optional
        Each case's :func:`case_features` when the caller has them already (the fit's).

    Returns
    -------
    (2,) tuple of float
        ``(t, q)``.
    """
    factors, real, own = [], [], []
    model = create_model(calibration.model).eval()
    for n, (rel, factor, noise) in enumerate(TRAINING_CASES):
        case = _training_case(root / rel, factor, noise, crop=crop, seed=seed)
        features, errors = data[n] if data is not None else _case_features(model, case, calibration.members)
        width = calibration.half_width(*features, factor)
        net = WithUncertainty(model, case.scale, calibration)
        scale, _ = input_statistics(net.card, case.lr.data)
        factors.append(factor)
        real.append(float(np.quantile(errors / np.maximum(width, 1e-12), calibration.level)))
        own.append(self_pair_quantile(net, case.lr, acquisition_from_spacing(case.lr.spacing), scale))
        print(f"scan transfer: {Path(rel).name} x{factor:g} noise {noise:g}: real {real[-1]:.3f}, "  # noqa: T201
              f"self-pairs {own[-1]:.3f}, ratio {real[-1] / own[-1]:.3f}", flush=True)
    return fit_scan_transfer(factors, real, own)


def _probe_run(net: torch.nn.Module, lr: np.ndarray, shape_out: Sequence[int], factors: Sequence[float], *,
               members: int, ensemble: bool, tile: int) -> tuple[np.ndarray, ...]:  # fmt: skip
    """``(output, spread, slope, bend)``, each ``(C, *shape_out)``, of ``net`` on a scaled ``(C, *spatial)`` input."""
    placeholder = Calibration(net.card.name, dict.fromkeys((*FEATURES, "constant"), 1.0), members=members)
    probe = _Probe(net, factors, placeholder, ensemble=ensemble).eval()
    plan = make_plan(probe.card, lr.shape[1:], shape_out, chunks=shape_out, tile=(tile,) * len(shape_out))
    region = tuple((0, n) for n in shape_out)
    with torch.inference_mode():
        result = run_task(probe, plan, region, lr, tuple((0, n) for n in lr.shape[1:]), device=torch.device("cpu"))
    return tuple(np.split(result, 4))


def cube_cases(model: str) -> list[tuple[str, int]]:
    """``(cube spec under the shared data folder, factor)`` pairs a cube calibration is fitted on.

    Parameters
    ----------
    model : str
        Registry name: a shipped HSI network (its training cubes at its factor) or an
        interpolation baseline (:data:`HSI_TRAINING_CUBES` at :data:`BASELINE_FACTORS`).

    Returns
    -------
    list of (str, int)

    Raises
    ------
    ValueError
        If ``model`` is a network whose training cubes are not known here.

    Examples
    --------
    >>> cube_cases("attn1d2d.x4")[0], len(cube_cases("bicubic"))
    (('hsi/abu/abu-airport-1.mat:data', 4), 28)
    """
    card = get_card(model)
    if card.kind == "interpolation":
        return [(spec, factor) for factor in BASELINE_FACTORS for spec in HSI_TRAINING_CUBES]
    if model not in _NETWORK_CUBES:
        raise ValueError(f"no training cubes known for {model!r} (known: {', '.join(_NETWORK_CUBES)})")
    return [(spec, int(card.scale_range[0])) for spec in _NETWORK_CUBES[model]]


def cube_features(model: str, cube: np.ndarray, factor: int, *, members: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(4, N)`` (scaled units) and ``|error|`` ``(N,)`` of every pixel and band of one cube.

    Parameters
    ----------
    model : str
        Registry name.
    cube : (rows, cols, bands) ndarray
        HR cube divided by its maximum (:func:`volsr.data.hsi.load_cube`).
    factor : int
        Spatial factor (rows and columns); LR by :func:`volsr.data.hsi.make_pair`.
    members : int
        Flips whose spread is fitted (the self-ensemble's symmetries when the card runs it).

    Returns
    -------
    features : (4, N) float32 ndarray
        Spread, slope, bend and noise (0) per output pixel and band, ``N = bands * rows * cols``
        of the covered HR cube.
    errors : (N,) float32 ndarray

    Raises
    ------
    ValueError
        As :func:`volsr.data.hsi.make_pair`.

    Examples
    --------
    >>> f, e = cube_features("bicubic", np.random.default_rng(0).random((8, 8, 3)), 2, members=1)
    >>> f.shape, e.shape, float(f[0].max())
    ((4, 192), (192,), 0.0)
    """
    pair = make_pair(cube, scale=factor)
    net = create_model(model)
    lr = np.ascontiguousarray(pair.lr.transpose(2, 0, 1))
    scale, floor = input_statistics(net.card, da.from_array(lr))
    lr /= np.float32(scale)
    output, spread, slope, bend = _probe_run(net, lr, pair.hr.shape[:2], (factor, factor), members=members,
                                             ensemble=net.card.self_ensemble, tile=1024)  # fmt: skip
    if floor is not None:  # the engine's floor (ClampedBelow), for an input with no negative value
        output = np.maximum(output, np.float32(floor))
    features = np.stack([spread.ravel(), slope.ravel(), bend.ravel(), np.zeros(spread.size, np.float32)])
    errors = np.abs(output - pair.hr.transpose(2, 0, 1) / np.float32(scale)).ravel()
    return features.astype(np.float32), errors.astype(np.float32)


def _fit_data(args: argparse.Namespace, root: Path, members: int) -> tuple[list, list, list[float], list[str]]:
    """Per case: features and errors, its factor, its description (printed as each is done)."""
    data, factors, described = [], [], []
    if args.modality == "hsi":
        for spec, factor in cube_cases(args.model):
            data.append(cube_features(args.model, load_cube(str(root / spec))[0], factor, members=members))
            factors.append(float(factor))
            described.append(f"{spec} x{factor}")
            print(f"features: {described[-1]}: {data[-1][1].size} pixel-bands", flush=True)  # noqa: T201
        return data, factors, described, ["cube / its maximum, LR by MATLAB imresize bicubic, whole cube"]
    for rel, factor, noise in TRAINING_CASES:
        data.append(case_features(args.model, root / rel, factor, noise, crop=args.crop, members=members))
        factors.append(factor)
        described.append(f"{rel} x{factor:g} noise {noise:g} of white matter")
        print(f"features: {Path(rel).name} x{factor:g} noise {noise:g}: {data[-1][1].size} voxels", flush=True)  # noqa: T201
    return data, factors, described, [f"centre crop {args.crop}^3, axis 2"]


def main(argv: Sequence[str] | None = None) -> None:
    """Fit and write the calibration (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--modality", choices=MODALITIES, default="mri")
    parser.add_argument("--scan-transfer-only", action="store_true",
                        help="keep the coefficients of --out and fit only its per-scan step (MRI)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = args.data_root or shared_data_root()
    if args.scan_transfer_only:
        calibration = Calibration.load(args.out)
        fitted = scan_transfer(calibration, root, crop=args.crop)
        Path(args.out).write_text(dataclasses.replace(calibration, scan_transfer=fitted).to_json(), encoding="utf-8")
        print(f"wrote {args.out}: scan_transfer {fitted}")  # noqa: T201
        return
    card = create_model(args.model).card
    members = args.members if card.kind == "network" else 1
    data, factors, described, protocol = _fit_data(args, root, members)
    calibration = fit_calibration(args.model, [f for f, _ in data], [e for _, e in data], members=members,
                                  factors=factors, modality=args.modality)  # fmt: skip
    calibration = dataclasses.replace(calibration, fitted_on=(*described, *protocol))
    for name, factor, (features, errors) in zip(described, factors, data, strict=True):
        width = calibration.half_width(*features, factor)
        print(f"{name}: coverage {coverage(width, errors):.3f}, AUSE {ause(width, errors):.3f}")  # noqa: T201
    if args.modality == "mri" and card.kind == "network":
        fitted = scan_transfer(calibration, root, crop=args.crop, data=data)
        calibration = dataclasses.replace(calibration, scan_transfer=fitted)
    Path(args.out).write_text(calibration.to_json(), encoding="utf-8")
    print(f"wrote {args.out}: {calibration.coefficients}")  # noqa: T201


if __name__ == "__main__":
    main()
