"""Interpolation baselines on real data: ICBM152 thick-slice and one AVIRIS cube.

Run: ``.venv/bin/python bench/baselines.py`` (or ``make bench``). Prints Markdown tables.

MRI protocol (the evaluation protocol of DEVELOPERS.md): the template divided by its 99.9th
percentile and clipped to [0, 1]; thick slices along the last array axis with a Gaussian
profile of FWHM = factor (HR voxels); metrics on the HR grid covered by the LR slices: PSNR
(data range 1) over the volume and over the foreground (reference > 0.05), 3-D SSIM.

Hyperspectral protocol: the cube divided by its maximum, cropped to a multiple of r, LR by
antialiased bicubic (MATLAB ``imresize``); mean per-band PSNR (data range 1), SAM (degrees),
ERGAS with the true r.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from volsr import io
from volsr.datasets import icbm152_t1_path, shared_data_root
from volsr.degrade import bicubic_downsample, thick_slice
from volsr.engine import upsample
from volsr.intensity import percentile_normalise
from volsr.metrics import ergas, mpsnr, psnr, sam, ssim
from volsr.volume import Volume

MRI_FACTORS = (2.0, 3.3, 4.0)
MRI_MODELS = ("nearest", "linear", "cubic", "lanczos")
HSI_FACTORS = (2, 4)
HSI_MODELS = ("nearest", "linear", "bicubic", "cubic", "lanczos")
HSI_CUBE = "hsi/sandiego/sandiego.mat:data"


def mri_table() -> list[str]:
    template = io.load(icbm152_t1_path())
    values, _ = percentile_normalise(template.numpy())
    hr = Volume(values, template.affine, template.axes)
    lines = [
        "| factor | model | PSNR (dB) | PSNR fg (dB) | SSIM | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for factor in MRI_FACTORS:
        lr = thick_slice(hr, axis=2, factor=factor)
        for name in MRI_MODELS:
            start = time.perf_counter()
            sr = upsample(lr, scale=(1.0, 1.0, factor), model=name).numpy()
            seconds = time.perf_counter() - start
            ref = hr.numpy()[tuple(slice(0, n) for n in sr.shape)]
            fg = ref > 0.05
            lines.append(
                f"| {factor:g} | {name} | {psnr(ref, sr, data_range=1.0):.2f} | "
                f"{psnr(ref, sr, data_range=1.0, mask=fg):.2f} | "
                f"{ssim(ref, sr, data_range=1.0):.4f} | {seconds:.2f} |"
            )
    return lines


def hsi_table(spec: str) -> list[str]:
    path, key = spec.split(":")
    cube = io.load(f"{shared_data_root() / path}:{key}").numpy().astype(np.float64)
    cube = cube / cube.max()
    lines = [
        "| r | model | MPSNR (dB) | SAM (deg) | ERGAS | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in HSI_FACTORS:
        rows, cols = (n - n % r for n in cube.shape[:2])
        hr = cube[:rows, :cols].astype(np.float32)
        lr = Volume(bicubic_downsample(hr, factors=r, axes=(0, 1)), np.eye(4), ("i", "j", "band"))
        for name in HSI_MODELS:
            start = time.perf_counter()
            sr = upsample(lr, scale=(r, r), model=name).numpy()
            seconds = time.perf_counter() - start
            lines.append(
                f"| {r} | {name} | {mpsnr(hr, sr, data_range=1.0):.2f} | {sam(hr, sr):.3f} | "
                f"{ergas(hr, sr, scale=r):.3f} | {seconds:.2f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hsi-cube", default=HSI_CUBE, help="cube under the shared data folder")
    args = parser.parse_args()
    print(f"command: python bench/baselines.py {' '.join(sys.argv[1:])}".rstrip())
    print("\n## ICBM152 2009a T1, thick-slice along axis 2 (Gaussian FWHM = factor)\n")
    print("\n".join(mri_table()))
    print(f"\n## {Path(args.hsi_cube).name}, normalised by its maximum, LR by MATLAB imresize\n")
    print("\n".join(hsi_table(args.hsi_cube)))


if __name__ == "__main__":
    main()
