"""Trust outputs on held-out brains: uncertainty calibration, sparsification, consistency, cost.

Run: ``.venv/bin/python bench/trust.py [--factors 2,4] [--models meta_srgan.t1,cubic]
[--volumes icbm152,chris_t1] [--crop 160]``. Prints Markdown, the command first.

Protocol (:func:`volsr.train.validation.prepare_case`, as ``bench/mri_quality.py``): HR / P99.9
clipped to [0, 1], centre crop, thick slices along axis 2 with a Gaussian profile of
FWHM = factor; the LR case is written to NIfTI and run through ``upsample_to_store`` (the
``volsr upsample`` path), once plain and once with ``--uncertainty`` and ``--consistency``,
then once with ``--enforce-consistency``. Columns:

- coverage: share of foreground voxels (reference > 0.05) with ``|SR - HR| <= U``;
- AUSE: area between the sparsification curve by ``U`` and the oracle's, over a random
  order's (:func:`volsr.uncertainty.ause`); Spearman: rank correlation of ``U`` and ``|error|``;
- time: seconds with the trust outputs / without (one run each, this machine); a model
  written ``NAME+se`` runs with its self-ensemble on in both;
- consistency: RMS of (our map - (the protocol's own ``thick_slice`` of SR - LR)), the map's
  own RMS; enforced: PSNR / SSIM change of ``--enforce-consistency``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from volsr import io
from volsr.datasets import icbm152_t1_path, shared_data_root
from volsr.degrade import thick_slice
from volsr.engine import upsample_to_store
from volsr.metrics import psnr, ssim
from volsr.train.validation import prepare_case
from volsr.uncertainty import ause, coverage

VOLUMES = {"icbm152": None, "chris_t1": "mri/validation/chris_t1.nii.gz"}
FOREGROUND = 0.05


def _timed(**kwargs) -> float:
    started = time.perf_counter()
    upsample_to_store(quiet=True, **kwargs)
    return time.perf_counter() - started


def row(name: str, path: Path, factor: float, model: str, crop: int, folder: Path) -> str:
    """One Markdown row."""
    case = prepare_case(io.load(path), name=name, factor=factor, axis=2, crop=(crop,) * 3)
    source = folder / f"{name}_x{factor:g}.nii.gz"
    io.save(case.lr, source, overwrite=True)
    name_only, _, mode = model.partition("+")
    common = dict(source=str(source), scale=case.scale, model=name_only, overwrite=True,
                  self_ensemble=True if mode == "se" else None)
    plain_s = _timed(output=folder / "plain.nii.gz", **common)
    trust_s = _timed(output=folder / "sr.nii.gz", uncertainty=folder / "u.nii.gz", consistency=folder / "c.nii.gz",
                     **common)  # fmt: skip
    _timed(output=folder / "enforced.nii.gz", enforce_consistency=True, **common)
    sr = io.load(folder / "sr.nii.gz").numpy()
    width = io.load(folder / "u.nii.gz").numpy()
    enforced = io.load(folder / "enforced.nii.gz").numpy()
    error = sr - case.hr
    mask = case.hr > FOREGROUND
    lr = np.asarray(case.lr.data, np.float32)
    protocol = np.asarray(thick_slice(sr, axis=2, factor=case.scale[2]), np.float32) - lr
    ours = io.load(folder / "c.nii.gz").numpy()  # the same LR grid: SR has n_lr * factor slices
    rho = stats.spearmanr(width[mask][::7], np.abs(error[mask])[::7]).statistic
    gain_psnr = psnr(case.hr, enforced, data_range=1.0) - psnr(case.hr, sr, data_range=1.0)
    gain_ssim = ssim(case.hr, enforced, data_range=1.0) - ssim(case.hr, sr, data_range=1.0)
    return (f"| {name} | {factor:g} | {model} | {coverage(width, error, mask):.3f} | {ause(width, error, mask):.3f} | "
            f"{rho:.3f} | {trust_s:.0f} / {plain_s:.0f} s ({trust_s / plain_s:.1f}x) | "
            f"{float(np.sqrt(np.mean((ours - protocol) ** 2))):.2g} / {float(np.sqrt(np.mean(ours ** 2))):.4f} | "
            f"{gain_psnr:+.2f} dB / {gain_ssim:+.4f} |")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="2,4")
    parser.add_argument("--models", default="meta_srgan.t1,cubic")
    parser.add_argument("--volumes", default="icbm152,chris_t1")
    parser.add_argument("--crop", type=int, default=160)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("`" + " ".join(["python bench/trust.py", *(argv if argv is not None else sys.argv[1:])]) + "`\n")  # noqa: T201
    print("| volume | factor | model | coverage (90 %) | AUSE | Spearman | time with / without | "  # noqa: T201
          "consistency: vs protocol / RMS | enforced: PSNR / SSIM |")
    print("|---|---|---|---|---|---|---|---|---|")  # noqa: T201
    with tempfile.TemporaryDirectory() as folder:
        warm = prepare_case(io.load(icbm152_t1_path()), name="warm", factor=4, axis=2, crop=(32,) * 3)
        for model in args.models.split(","):  # first-call costs (imports, weights) out of the timings
            upsample_to_store(warm.lr, Path(folder) / "warm.zarr", scale=warm.scale, model=model.split("+")[0], quiet=True,
                              overwrite=True)  # fmt: skip
        for name in args.volumes.split(","):
            rel = VOLUMES[name]
            path = icbm152_t1_path() if rel is None else shared_data_root() / rel
            for factor in (float(f) for f in args.factors.split(",")):
                for model in args.models.split(","):
                    print(row(name, path, factor, model, args.crop, Path(folder)), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
