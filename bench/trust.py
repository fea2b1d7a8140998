"""Trust outputs on held-out brains and cubes: uncertainty calibration, sparsification, consistency, cost.

Run: ``.venv/bin/python bench/trust.py [--factors 2,4] [--models meta_srgan.t1,cubic]
[--volumes icbm152,chris_t1] [--crop 160] [--noise 0,0.035] [--cubes sandiego,cloth]
[--cube-models attn1d2d,bicubic] [--cube-factors 2,4]``. Prints Markdown, the command first (``--volumes none`` or ``--cubes
none`` leaves a table out).

Protocol (:func:`volsr.train.validation.prepare_case`, as ``bench/mri_quality.py``): HR / P99.9
clipped to [0, 1], centre crop, thick slices along axis 2 with a Gaussian profile of
FWHM = factor; the LR case is written to NIfTI and run through ``upsample_to_store`` (the
``volsr upsample`` path), once plain and once with ``--uncertainty`` and ``--consistency``,
then once with ``--enforce-consistency``. ``--noise``: Rician noise of that share of the
white-matter level (:func:`volsr.noise.white_matter_level`) is added to the HR volume first
(the reference keeps it, as in ``bench/adapt.py``). Columns:

- coverage: share of foreground voxels (reference > 0.05) with ``|SR - HR| <= U``;
- AUSE: area between the sparsification curve by ``U`` and the oracle's, over a random
  order's (:func:`volsr.uncertainty.ause`); Spearman: rank correlation of ``U`` and ``|error|``;
- AUSE oracle (``--noise`` rows of the noise-free template): the AUSE of a width that knows each
  voxel's error but for the added noise no LR voxel saw (:func:`ause_bound`), a reference for
  how far any width can go there, not a strict bound (that noise is taken as one Gaussian; a
  real scan's own noise would count as known, so its rows show ``-``);
- time: seconds with the trust outputs / without (one run each, this machine); a model
  written ``NAME+se`` runs with its self-ensemble on in both;
- consistency: RMS of (our map - (the protocol's own ``thick_slice`` of SR - LR)), the map's
  own RMS; enforced: PSNR / SSIM change of ``--enforce-consistency``.

Cubes (the HSI protocol, ``bench/hsi_quality.py``): the held-out cube over its maximum (the
MUUFL crop's valid rows), LR by MATLAB ``imresize`` bicubic (:func:`volsr.data.hsi.make_pair`),
written to ``.mat`` and run through ``upsample_to_store`` plain and with ``--uncertainty``
(``attn1d2d`` is ``attn1d2d.xF``, self-ensemble on as by default; ``attn1d2d+nose`` runs
``--no-self-ensemble``: the output is one member, the spread over 4 flips); coverage, AUSE and
Spearman over every pixel and band (cubes have no background). Held out from every cube
calibration: both San Diego crops, CAVE and (but for ``attn1d2d.x2``, which trained on them:
left out) the Pavia and MUUFL crops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io
import torch
from scipy import stats

from volsr import io
from volsr.data.hsi import make_pair
from volsr.datasets import icbm152_t1_path, shared_data_root
from volsr.degrade import thick_slice
from volsr.engine import EngineOptions, TrustOptions, upsample, upsample_to_store
from volsr.metrics import psnr, ssim
from volsr.noise import with_white_matter_noise
from volsr.train.validation import ValidationCase, prepare_case
from volsr.uncertainty import ause, coverage
from volsr.volume import Volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hsi_quality import held_out_cube  # noqa: E402  (the protocol's cube, valid rows)

VOLUMES = {"icbm152": None, "chris_t1": "mri/validation/chris_t1.nii.gz"}
#: Volumes without noise of their own: only there is the added noise all the noise (AUSE bound).
CLEAN = ("icbm152",)
FOREGROUND = 0.05
CUBES = {
    "sandiego": "hsi/sandiego/sandiego.mat:data",
    "sandiego_plane": "hsi/sandiego/sandiego_plane.mat:data",
    "cloth": "hsi/cave256/cloth_ms_256.mat",
    "paviaU": "hsi/gatorsense/paviaU_subimg.mat",
    "muufl": "hsi/gatorsense/an_hsi_image_sub_for_demo.mat:hsi_img_sub",
}
#: Cubes ``attn1d2d.x2`` trained on (not held out for it).
TRAINED_X2 = ("paviaU", "muufl")


def _timed(source: str, output: Path | str, *, self_ensemble: bool | None, trust: TrustOptions | None = None,
           **run) -> float:  # fmt: skip
    started = time.perf_counter()
    upsample_to_store(source, output, options=EngineOptions(quiet=True, self_ensemble=self_ensemble), trust=trust, **run)
    return time.perf_counter() - started


def ause_bound(clean: Volume, noisy: Volume, case: ValidationCase, error: np.ndarray, mask: np.ndarray) -> float:
    """AUSE of an oracle width that knows every part of each voxel's error but the added noise no
    LR voxel saw: that noise (the reference's, minus its slice average upsampled by cubic), taken as
    Gaussian of its measured sigma, makes the oracle's width ``E|p - r|`` (``p``: the rest, known).

    No per-voxel width can see the noise of the reference that the LR slices average away, so
    this is a reference for the AUSE a width can reach on a noisier scan of the same brain; not
    a strict bound (Rician noise is not one Gaussian: its spread varies with intensity)."""
    reference = float(np.percentile(np.asarray(noisy.data, np.float64), 99.9))  # prepare_case's normaliser
    start = [(n - c) // 2 for n, c in zip(clean.shape, case.hr.shape)]
    window = tuple(slice(s, s + c) for s, c in zip(start, case.hr.shape))
    added = case.hr - np.clip(np.asarray(clean.data, np.float32)[window] / reference, 0, 1)
    averaged = Volume(np.asarray(thick_slice(added, axis=2, factor=case.scale[2]), np.float32), np.eye(4), ("i", "j", "k"))
    seen = upsample(averaged, scale=(1, 1, case.scale[2]), model="cubic").numpy()
    unseen = added - seen
    known = error + unseen
    sigma = float(np.std(unseen[mask]))
    z = np.abs(known) / sigma
    width = sigma * np.sqrt(2 / np.pi) * np.exp(-(z**2) / 2) + np.abs(known) * (1 - 2 * stats.norm.cdf(-z))
    return ause(width, error, mask)


def row(name: str, path: Path, factor: float, model: str, crop: int, folder: Path, noise: float = 0.0) -> str:
    """One Markdown row (``noise``: Rician sigma as a share of white matter, added to the HR first)."""
    clean = volume = io.load(path)
    if noise > 0:  # as bench/adapt.py: the reference keeps the noise, as a real reference scan would
        volume = with_white_matter_noise(volume, noise)
        name = f"{name} + Rician {noise:g} x WM"
    case = prepare_case(volume, name=name, factor=factor, axis=2, crop=(crop,) * 3)
    source = folder / f"{name}_x{factor:g}.nii.gz"
    io.save(case.lr, source, overwrite=True)
    name_only, _, mode = model.partition("+")
    common = dict(source=str(source), scale=case.scale, model=name_only, overwrite=True,
                  self_ensemble=True if mode == "se" else None)
    plain_s = _timed(output=folder / "plain.nii.gz", **common)
    trust_s = _timed(output=folder / "sr.nii.gz", trust=TrustOptions(uncertainty=folder / "u.nii.gz",
                                                                     consistency=folder / "c.nii.gz"), **common)  # fmt: skip
    _timed(output=folder / "enforced.nii.gz", trust=TrustOptions(enforce_consistency=True), **common)
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
    bound = f"{ause_bound(clean, volume, case, error, mask):.3f}" if noise > 0 and name.startswith(CLEAN) else "-"
    return (f"| {name} | {factor:g} | {model} | {coverage(width, error, mask):.3f} | {ause(width, error, mask):.3f} | "
            f"{bound} | {rho:.3f} | {trust_s:.0f} / {plain_s:.0f} s ({trust_s / plain_s:.1f}x) | "
            f"{float(np.sqrt(np.mean((ours - protocol) ** 2))):.2g} / {float(np.sqrt(np.mean(ours ** 2))):.4f} | "
            f"{gain_psnr:+.2f} dB / {gain_ssim:+.4f} |")  # fmt: skip


def cube_row(name: str, factor: int, model: str, folder: Path) -> str | None:
    """One Markdown row of the cube table (None where the cube is not held out for the model)."""
    base, _, mode = model.partition("+")
    network = base == "attn1d2d"
    if network and factor == 2 and name in TRAINED_X2:
        return None
    registry_name = f"attn1d2d.x{factor}" if network else base
    pair = make_pair(held_out_cube(CUBES[name]), scale=factor)
    scipy.io.savemat(folder / "lr.mat", {"lr": pair.lr})
    common = dict(source=f"{folder / 'lr.mat'}:lr", scale=factor, model=registry_name, overwrite=True,
                  self_ensemble=False if mode == "nose" else None)
    plain_s = _timed(output=f"{folder / 'plain.mat'}:sr", **common)
    trust_s = _timed(output=f"{folder / 'sr.mat'}:sr", trust=TrustOptions(uncertainty=f"{folder / 'u.mat'}:u"), **common)
    width = io.load(f"{folder / 'u.mat'}:u").numpy()
    error = io.load(f"{folder / 'sr.mat'}:sr").numpy() - pair.hr
    rho = stats.spearmanr(width.ravel()[::7], np.abs(error).ravel()[::7]).statistic
    label = registry_name + (f"+{mode}" if mode else "")
    return (f"| {name} | {pair.hr.shape[2]} | {factor} | {label} | {coverage(width, error):.3f} | "
            f"{ause(width, error):.3f} | {rho:.3f} | {trust_s:.1f} / {plain_s:.1f} s ({trust_s / plain_s:.1f}x) |")


def cube_table(names: Sequence[str], factors: Sequence[int], models: Sequence[str], folder: Path) -> None:
    """Print the cube table, row by row."""
    print("\n| cube (held out) | bands | factor | model | coverage (90 %) | AUSE | Spearman | "  # noqa: T201
          "time with / without |\n|---|---|---|---|---|---|---|---|")
    for model in models:  # first-call costs (imports, weights) out of the timings
        for factor in factors:
            warm = Volume(make_pair(held_out_cube(CUBES["paviaU"])[:, :, :8], scale=factor).lr, np.eye(4),
                          ("i", "j", "band"))  # fmt: skip
            base = model.partition("+")[0]
            upsample_to_store(warm, folder / "warm.zarr", scale=factor, overwrite=True,
                              model=f"attn1d2d.x{factor}" if base == "attn1d2d" else base,
                              options=EngineOptions(quiet=True))  # fmt: skip
    for name in names:
        for factor in factors:
            for model in models:
                line = cube_row(name, factor, model, folder)
                if line is not None:
                    print(line, flush=True)  # noqa: T201


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="2,4")
    parser.add_argument("--models", default="meta_srgan.t1,cubic")
    parser.add_argument("--volumes", default="icbm152,chris_t1")
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--noise", default="0", help="Rician sigmas as shares of white matter (MRI rows)")
    parser.add_argument("--cubes", default=",".join(CUBES))
    parser.add_argument("--cube-models", default="attn1d2d,bicubic")
    parser.add_argument("--cube-factors", default="2,4")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("`" + " ".join(["python bench/trust.py", *(argv if argv is not None else sys.argv[1:])]) + "`\n")  # noqa: T201
    with tempfile.TemporaryDirectory() as folder:
        if args.volumes != "none":
            volume_table(args, Path(folder))
        if args.cubes != "none":
            cube_table(args.cubes.split(","), [int(f) for f in args.cube_factors.split(",")],
                       args.cube_models.split(","), Path(folder))  # fmt: skip


def volume_table(args: argparse.Namespace, folder: Path) -> None:
    """Print the MRI table, row by row."""
    print("| volume | factor | model | coverage (90 %) | AUSE | AUSE oracle | Spearman | time with / without | "  # noqa: T201
          "consistency: vs protocol / RMS | enforced: PSNR / SSIM |")
    print("|---|---|---|---|---|---|---|---|---|---|")  # noqa: T201
    warm = prepare_case(io.load(icbm152_t1_path()), name="warm", factor=4, axis=2, crop=(32,) * 3)
    for model in args.models.split(","):  # first-call costs (imports, weights) out of the timings
        upsample_to_store(warm.lr, folder / "warm.zarr", scale=warm.scale, model=model.split("+")[0],
                          overwrite=True, options=EngineOptions(quiet=True))  # fmt: skip
    for name in args.volumes.split(","):
        rel = VOLUMES[name]
        path = icbm152_t1_path() if rel is None else shared_data_root() / rel
        for noise in (float(n) for n in args.noise.split(",")):
            for factor in (float(f) for f in args.factors.split(",")):
                for model in args.models.split(","):
                    print(row(name, path, factor, model, args.crop, folder, noise), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
