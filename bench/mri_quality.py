"""MRI thick-slice SR quality: interpolation vs the trained networks, on a clean and a noisy brain.

Run: ``.venv/bin/python bench/mri_quality.py [--factors 2,3,4] [--axes 2 | --isotropic]
[--weights W ...] [--crop X,Y,Z] [--volumes icbm152,chris_t1] [--noise 0,0.035]``. Prints
Markdown (the command first). ``--isotropic`` thick-slices all three axes alike (axis column
``0,1,2``). ``--noise``: Rician noise of that share of the white-matter level
(:func:`volsr.noise.with_white_matter_noise`, seed 0) is added to the HR volume first, and
the reference keeps it, as a real noisy reference scan would.

Volumes (never trained on): the ICBM152 2009a T1 template inside the nilearn wheel (clean,
skull-stripped look) and the real noisy full-head scan ``mri/validation/chris_t1.nii.gz`` of
the shared data folder (validation only).

Protocol (the one of ``volsr/train/validation.py``, :func:`~volsr.train.validation.prepare_case`):
HR / P99.9 clipped to [0, 1]; thick slices along ``axis`` with a Gaussian profile of
FWHM = factor (HR voxels); upsampled through :func:`volsr.engine.upsample` (the
``volsr upsample`` path, whole-volume P99.9 input scaling for the networks); metrics on the HR
grid the LR slices cover: PSNR (data range 1), PSNR on the foreground (reference > 0.05),
3-D SSIM (data range 1); seconds per volume (wall clock, this machine, CPU threads as set);
gain = PSNR - cubic's PSNR on the same row group.

Models: nearest, linear, cubic, every registered ``mdcsrn*`` / ``meta_srgan*`` model (or the
``--networks`` names), and each ``--weights`` file (an export ``NAME.safetensors`` +
``.json``, or a trainer checkpoint ``runs/<run>/checkpoints/step_*.safetensors`` /
``best.safetensors``), loaded without registering. With no weights anywhere the table has
the baselines only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from volsr import io
from volsr.datasets import icbm152_t1_path, shared_data_root
from volsr.engine import EngineOptions, upsample
from volsr.metrics import psnr, ssim
from volsr.models import list_models
from volsr.noise import with_white_matter_noise
from volsr.train.export import load_trained_model
from volsr.train.validation import ValidationCase, prepare_case

BASELINES = ("nearest", "linear", "cubic")
NETWORK_PREFIXES = ("mdcsrn", "meta_srgan")
VOLUMES = {"icbm152": None, "chris_t1": "mri/validation/chris_t1.nii.gz"}
FOREGROUND = 0.05


def models(weights: Sequence[str], only: Sequence[str] | None = None) -> list[str | torch.nn.Module]:
    """Baseline names, registered network names (those in ``only``, if given), then ``weights``."""
    names = [c.name for c in list_models() if c.name.startswith(NETWORK_PREFIXES)
             and (only is None or c.name in only)]
    return [*BASELINES, *names, *(load_trained_model(w) for w in weights)]


def score(case: ValidationCase, model: str | torch.nn.Module, max_memory: str | None = None) -> dict[str, float]:
    """PSNR, foreground PSNR, SSIM and seconds of one model on one prepared case."""
    started = time.perf_counter()
    with torch.no_grad():
        out = upsample(case.lr, scale=case.scale, model=model, options=EngineOptions(max_memory=max_memory))
        estimate = np.asarray(out.data.compute(), dtype=np.float32)
    seconds = time.perf_counter() - started
    fg = case.hr > FOREGROUND
    return {"psnr": psnr(case.hr, estimate, data_range=1.0),
            "psnr_fg": psnr(case.hr, estimate, data_range=1.0, mask=fg),
            "ssim": ssim(case.hr, estimate, data_range=1.0), "seconds": seconds}


def table(name: str, path: str, *, factors: Sequence[float],
          axes: Sequence[int | tuple[int, ...]],
          crop: Sequence[int] | None, compared: Sequence[str | torch.nn.Module],
          max_memory: str | None = None, noise: float = 0.0) -> list[str]:
    """Markdown rows for one volume: every axis x factor x model (``noise``: see ``--noise``)."""
    volume = io.load(path)
    if noise > 0:
        volume = with_white_matter_noise(volume, noise)
        name = f"{name} + Rician {noise:g} x WM"
    lines = [f"\n## {name} (`{path}`, shape {volume.shape}"
             f"{', centre crop ' + 'x'.join(map(str, crop)) if crop else ''})\n",
             "| axis | factor | model | PSNR (dB) | gain vs cubic (dB) | PSNR fg (dB) | SSIM "
             "| seconds |", "|---|---|---|---|---|---|---|---|"]
    for axis in axes:
        for factor in factors:
            case = prepare_case(volume, name=name, factor=factor, axis=axis, crop=crop)
            rows = [(m if isinstance(m, str) else m.card.name, score(case, m, max_memory))
                    for m in compared]
            cubic = dict(rows)["cubic"]["psnr"]
            for label, s in rows:
                where = axis if isinstance(axis, int) else ",".join(map(str, axis))
                lines.append(f"| {where} | {factor:g} | {label} | {s['psnr']:.2f} | "
                             f"{s['psnr'] - cubic:+.2f} | {s['psnr_fg']:.2f} | {s['ssim']:.4f} | "
                             f"{s['seconds']:.1f} |")
            print(lines[-1], file=sys.stderr, flush=True)  # progress on long runs
    return lines


def _numbers(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers, got {text!r}") from None
    return parse


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=_numbers(float), default=(2.0, 3.0, 4.0))
    parser.add_argument("--axes", type=_numbers(int), default=(2,),
                        help="slice axes, e.g. 0,1,2 (default 2)")
    parser.add_argument("--isotropic", action="store_true",
                        help="thick-slice all three axes alike (instead of --axes)")
    parser.add_argument("--weights", action="append", default=[], metavar="PATH",
                        help="export or checkpoint .safetensors to add (repeatable)")
    parser.add_argument("--networks", help="comma-separated registered networks to compare "
                        "(default: every mdcsrn* / meta_srgan*; 'none': baselines and --weights only)")
    parser.add_argument("--volumes", default=",".join(VOLUMES),
                        help=f"comma-separated subset of {', '.join(VOLUMES)}")
    parser.add_argument("--crop", type=_numbers(int), help="centre crop X,Y,Z (faster)")
    parser.add_argument("--noise", type=_numbers(float), default=(0.0,),
                        help="Rician sigmas as shares of white matter, added to the HR volume "
                        "first (the reference keeps them), e.g. 0,0.035")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--max-memory", help="engine memory budget per task, e.g. 4G "
                        "(default: the engine's; larger tiles recompute less halo)")
    args = parser.parse_args(argv)
    if set(args.axes) - {0, 1, 2}:
        parser.error(f"--axes must be among 0, 1, 2, got {args.axes}")
    chosen = args.volumes.split(",")
    if set(chosen) - set(VOLUMES):
        parser.error(f"--volumes must be among {', '.join(VOLUMES)}, got {args.volumes!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"command: python bench/mri_quality.py {' '.join(sys.argv[1:] if argv is None else argv)}"
          .rstrip())
    print(f"\ntorch threads: {torch.get_num_threads()}; thick slices: Gaussian profile, "
          f"FWHM = factor; metrics on the covered HR grid, data range 1 after P99.9 scaling.")
    compared = models(args.weights, None if args.networks is None else args.networks.split(","))
    for name in chosen:
        path = str(icbm152_t1_path()) if VOLUMES[name] is None else str(
            shared_data_root() / VOLUMES[name])
        if VOLUMES[name] is not None and not (shared_data_root() / VOLUMES[name]).is_file():
            print(f"\n## {name}: skipped, {path} not found (set VOLSR_DATA)")
            continue
        axes = [(0, 1, 2)] if args.isotropic else args.axes
        for noise in args.noise:
            print("\n".join(table(name, path, factors=args.factors, axes=axes, crop=args.crop,
                                  compared=compared, max_memory=args.max_memory, noise=noise)),
                  flush=True)


if __name__ == "__main__":
    main()
