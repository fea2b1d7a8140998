"""Self-supervised adaptation (``volsr upsample --adapt``) on held-out brains, clean and noisy.

Run: ``.venv/bin/python bench/adapt.py [--factors 4,2] [--steps 150,400]
[--volumes icbm152,chris_t1] [--noise 0,0.035] [--crop 160]``. Prints Markdown, the command first.

Protocol (:func:`volsr.train.validation.prepare_case`, as ``bench/mri_quality.py``): for a noisy
row, Rician noise of ``noise`` x the white-matter level (:func:`volsr.noise.white_matter_level`)
is added to the whole HR volume first (the reference keeps it, as a real reference scan
would); HR / P99.9 clipped to [0, 1], centre crop, thick slices along axis 2 with a Gaussian
profile of FWHM = factor, written to NIfTI (1 mm in-plane, ``factor`` mm slices) and run through
the command line (``volsr upsample LR SR --scale 1,1,F [--adapt --adapt-steps N]``; the default
model unless ``--model cubic``). Metrics on the HR grid: PSNR (data range 1), PSNR on the
foreground (reference > 0.05), 3-D SSIM; gain = PSNR - cubic's; seconds of the whole command
(adaptation and inference) on this machine; guard: what the adaptation's guard decided
(held-out self-pair gain, kept or fallen back).
"""

from __future__ import annotations

import argparse
import contextlib
import io as text_io
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from volsr import cli, io
from volsr.datasets import icbm152_t1_path, shared_data_root
from volsr.metrics import psnr, ssim
from volsr.noise import with_white_matter_noise
from volsr.train.validation import prepare_case

VOLUMES = {"icbm152": None, "chris_t1": "mri/validation/chris_t1.nii.gz"}
FOREGROUND = 0.05


def _run(args: list[str]) -> tuple[float, str]:
    """Seconds of one ``volsr upsample`` and its adaptation line (empty without --adapt)."""
    log = text_io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(log), contextlib.redirect_stdout(text_io.StringIO()):
        status = cli.main(["upsample", *args])
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"volsr upsample {' '.join(args)} failed: {log.getvalue()[-500:]}")
    line = next((x for x in log.getvalue().replace("\r", "\n").splitlines() if x.startswith("adapt: ") and "steps in" in x), "")
    return seconds, line


def rows(name: str, path: Path, factor: float, noise: float, steps: Sequence[int], crop: int, folder: Path) -> list[str]:
    """The Markdown rows of one case: cubic, the unadapted default model, then each step budget."""
    volume = io.load(path)
    if noise > 0:
        volume = with_white_matter_noise(volume, noise)
    case = prepare_case(volume, name=name, factor=factor, axis=2, crop=(crop,) * 3)
    lr = folder / f"{name}_x{factor:g}.nii.gz"
    io.save(case.lr, lr, overwrite=True)
    mask = case.hr > FOREGROUND
    runs = [("cubic", ["--model", "cubic"]), ("default", [])]
    runs += [(f"--adapt {n}", ["--adapt", "--adapt-steps", str(n)]) for n in steps]
    out, cubic = [], None
    for label, extra in runs:
        seconds, line = _run([str(lr), str(folder / "sr.nii.gz"), "--scale", f"1,1,{factor:g}", "--overwrite", *extra])
        sr = io.load(folder / "sr.nii.gz").numpy()
        value = psnr(case.hr, sr, data_range=1.0)
        cubic = value if cubic is None else cubic
        guard = line.split("held-out pairs ", 1)[-1].split(" (")[0] + (" kept" if "kept" in line else " fell back") if line else ""
        out.append(f"| {name} | {noise:g} | {factor:g} | {label} | {value:.2f} | {psnr(case.hr, sr, data_range=1.0, mask=mask):.2f} | "
                   f"{ssim(case.hr, sr, data_range=1.0):.4f} | {value - cubic:+.2f} | {seconds:.0f} | {guard} |")  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="4")
    parser.add_argument("--steps", default="150,400")
    parser.add_argument("--volumes", default="icbm152,chris_t1")
    parser.add_argument("--noise", default="0,0.035")
    parser.add_argument("--crop", type=int, default=160)
    args = parser.parse_args(argv)
    print("`" + " ".join(["python bench/adapt.py", *(argv if argv is not None else sys.argv[1:])]) + "`\n")  # noqa: T201
    print(f"torch threads: {torch.get_num_threads()}\n")  # noqa: T201
    print("| volume | noise (x WM) | factor | model | PSNR | fg PSNR | SSIM | vs cubic | seconds | guard |")  # noqa: T201
    print("|---|---|---|---|---|---|---|---|---|---|")  # noqa: T201
    steps = [int(s) for s in args.steps.split(",") if s]
    with tempfile.TemporaryDirectory() as folder:
        for name in args.volumes.split(","):
            rel = VOLUMES[name]
            path = icbm152_t1_path() if rel is None else shared_data_root() / rel
            for noise in (float(n) for n in args.noise.split(",")):
                for factor in (float(f) for f in args.factors.split(",")):
                    for line in rows(name, path, factor, noise, steps, args.crop, Path(folder)):
                        print(line, flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
