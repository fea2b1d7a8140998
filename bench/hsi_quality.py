"""HSI SR quality: bicubic and other interpolators vs the 1D-2D attention network, x2 and x4.

Run: ``.venv/bin/python bench/hsi_quality.py [--weights-x2 W2] [--weights-x4 W4] [--threads T]``.
Prints a Markdown table per scale.

Protocol (``volsr/data/hsi.py``): each cube divided by its maximum; LR = MATLAB ``imresize``
antialiased bicubic of the covered part (``make_pair``); whole-cube inference; outputs
clipped to [0, 1]; no border crop. Metrics (``volsr.metrics``): MPSNR (mean per-band PSNR,
data range 1), MSSIM (mean per-band SSIM, Gaussian window sigma 1.5), SAM (degrees, zero
spectra skipped), ERGAS with the true r, CC (mean per-band Pearson), seconds per cube.

Cubes: the held-out San Diego AVIRIS scene (both crops; never in the training configs), at
x4 two small scenes of other sensors that no x4 training config names (GatorSense's Pavia
University crop, ROSIS, 103 bands, 50x50 pixels, and MUUFL Gulfport crop, CASI, 72 bands,
rows 0-27 of 51x88: its mask leaves the rest out; the x2 network trained on both) and one
CAVE scene (visible range, 31 bands, never trained on). Network rows appear when
weights are found: ``--weights-xS``, else the shipped model ``attn1d2d.xS``, else the export
of the training config ``runs/attn1d2d_xS/export/attn1d2d_xS.safetensors``. Network rows
run through the engine, as ``volsr upsample cube.mat:key out.mat:key --scale S`` runs them:
the LR cube divided by its maximum over the card's ``input_peak`` and multiplied back,
``+SE`` with the self-ensemble the engine applies by default (the mean over the 8 flips and
row/column swaps of the input, :class:`volsr.models.ensemble.SelfEnsemble`), the other row
with ``--no-self-ensemble``; their seconds include the engine's planning.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from volsr.data.hsi import HSIPair, load_cube, make_pair
from volsr.datasets import shared_data_root
from volsr.engine import EngineOptions, upsample
from volsr.geometry import output_coordinates
from volsr.metrics import cc, ergas, mpsnr, mssim, sam
from volsr.models import create_model, list_models
from volsr.volume import Volume

SCALES = (2, 4)
BASELINES = ("bicubic", "cubic", "lanczos")
HELD_OUT = ("hsi/sandiego/sandiego.mat:data", "hsi/sandiego/sandiego_plane.mat:data")
OTHER_SENSORS = ("hsi/gatorsense/paviaU_subimg.mat",
                 "hsi/gatorsense/an_hsi_image_sub_for_demo.mat:hsi_img_sub")
CAVE = ("hsi/cave256/cloth_ms_256.mat",)
#: Cubes per scale: the x2 network trained on the two other-sensor crops, so only x4 shows them.
CUBES = {2: HELD_OUT + CAVE, 4: HELD_OUT + OTHER_SENSORS + CAVE}
#: Rows kept of a cube whose file marks pixels outside the scene: the MUUFL crop's
#: ``mask_sub`` leaves out a bottom-right triangle (rows 30-50) filled with one constant
#: spectrum with negative values, whose angles (80 degrees against an output clipped to
#: [0, 1]) would swamp the SAM of the 89 % of real pixels.
VALID_ROWS = {"hsi/gatorsense/an_hsi_image_sub_for_demo.mat:hsi_img_sub": slice(0, 28)}


def held_out_cube(spec: str) -> np.ndarray:
    """The cube of ``spec`` (its valid rows), divided by its maximum (the protocol)."""
    cube = load_cube(str(shared_data_root() / spec))[0][VALID_ROWS.get(spec, slice(None))]
    return cube / cube.max()


def network_for(scale: int, weights: str | None) -> str | None:
    """The trained network for ``scale`` (a registry name or a weights file), or None."""
    if weights:
        return weights
    if f"attn1d2d.x{scale}" in {card.name for card in list_models()}:
        return f"attn1d2d.x{scale}"
    export = Path(f"runs/attn1d2d_x{scale}/export/attn1d2d_x{scale}.safetensors")
    return str(export) if export.is_file() else None


class Engine:
    """A network as ``volsr upsample`` runs it: the engine's input scaling, self-ensemble on or off."""

    def __init__(self, model: str, *, self_ensemble: bool) -> None:
        self.model, self.self_ensemble = model, self_ensemble

    def __call__(self, x: torch.Tensor, grid: tuple) -> torch.Tensor:
        cube = Volume(x[0].numpy().transpose(1, 2, 0), np.eye(4), ("i", "j", "band"))
        scale = len(grid[0]) / x.shape[2]
        out = upsample(cube, scale=scale, model=self.model, options=EngineOptions(self_ensemble=self.self_ensemble))
        return torch.from_numpy(out.numpy().transpose(2, 0, 1).copy())[None]


@torch.no_grad()
def score(pair: HSIPair, model: Callable[..., torch.Tensor]) -> dict[str, float]:
    """Metrics and seconds of ``model`` on one cube."""
    h, w, _ = pair.lr.shape
    grid = (output_coordinates(h, h * pair.scale), output_coordinates(w, w * pair.scale))
    x = torch.from_numpy(pair.lr.transpose(2, 0, 1).copy())[None]
    started = time.perf_counter()
    y = model(x, grid)[0].numpy().transpose(1, 2, 0)
    seconds = time.perf_counter() - started
    y = np.clip(y, 0.0, 1.0)
    return {"MPSNR": mpsnr(pair.hr, y, data_range=1.0), "MSSIM": mssim(pair.hr, y, data_range=1.0),
            "SAM": sam(pair.hr, y), "ERGAS": ergas(pair.hr, y, scale=pair.scale),
            "CC": cc(pair.hr, y), "s": seconds}


def table(scale: int, weights: str | None) -> list[str]:
    """Markdown rows for one scale."""
    models = {name: create_model(name) for name in BASELINES}
    network = network_for(scale, weights)
    if network is not None:
        models["attn1d2d"] = Engine(network, self_ensemble=False)
        models["attn1d2d +SE"] = Engine(network, self_ensemble=True)
    lines = [f"### x{scale}", "", "| cube | bands | model | MPSNR (dB) | MSSIM | SAM (deg) "
             "| ERGAS | CC | s |", "|---|---|---|---|---|---|---|---|---|"]
    for spec in CUBES[scale]:
        pair = make_pair(held_out_cube(spec), scale=scale, name=spec)
        for name, model in models.items():
            m = score(pair, model)
            lines.append(f"| {Path(spec.split(':')[0]).stem} | {pair.hr.shape[2]} | {name} "
                         f"| {m['MPSNR']:.2f} | {m['MSSIM']:.4f} | {m['SAM']:.3f} "
                         f"| {m['ERGAS']:.3f} | {m['CC']:.4f} | {m['s']:.2f} |")
    if network is None:
        lines.append(f"\n(no attn1d2d x{scale} weights found: interpolation baselines only)")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for scale in SCALES:
        parser.add_argument(f"--weights-x{scale}", default=None)
    parser.add_argument("--scales", type=int, nargs="+", default=list(SCALES))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for scale in args.scales:
        sys.stdout.write("\n".join(table(scale, getattr(args, f"weights_x{scale}", None))) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
