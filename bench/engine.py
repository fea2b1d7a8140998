"""Out-of-core engine benchmark: volsr exact / Gaussian vs MONAI sliding_window_inference.

Run: ``.venv/bin/python bench/engine.py [--shape 96,96,24] [--scale 1,1,4] [--sizes 1,8]``.
Each method runs in its own subprocess (peak RSS from ``ru_maxrss``); the model is a
5-layer, 32-channel 3-D CNN on the LR grid followed by linear upsampling (halo 6), with
fixed random weights. The max abs difference is to one whole-volume forward pass,
relative to the data range (1). TorchIO is not installed in this environment and is not
a dependency: its GridAggregator row is skipped.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from volsr.geometry import output_coordinates, resampled_shape
from volsr.models import ModelCard
from volsr.models.interpolation import SeparableInterpolation


class CNN(nn.Module):
    """5 conv layers (32 channels, 3^3, zero padding) on the LR grid, then linear upsampling."""

    card = ModelCard(name="bench-cnn", kind="network", grid="lr", halo=6, scales="real",
                     scale_range=(0.5, 16.0), modality="any", description="bench")  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        sizes = [1, 32, 32, 32, 32, 1]
        layers: list[nn.Module] = []
        for n, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            conv = nn.Conv3d(a, b, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2 / (27 * a)) ** 0.5)
                conv.bias.zero_()
            layers += [conv] + ([nn.ReLU()] if n < 4 else [])
        self.body = nn.Sequential(*layers)
        self.up = SeparableInterpolation(method="linear")

    def forward(self, x, positions):
        return self.up(x + self.body(x), positions)


def _data(shape):
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def _method(name: str, shape, scale, workdir: Path) -> dict:
    from volsr import io
    from volsr.engine import upsample_to_store
    from volsr.volume import Volume

    net, data = CNN().eval(), _data(shape)
    shape_out = resampled_shape(shape, scale)
    start = time.perf_counter()
    if name == "whole":
        positions = tuple(output_coordinates(n, m) for n, m in zip(shape, shape_out))
        with torch.inference_mode():
            out = net(torch.from_numpy(data)[None, None], positions)[0, 0].numpy()
    elif name.startswith("volsr"):
        path = upsample_to_store(Volume(data, np.eye(4), ("i", "j", "k")), workdir / f"{name}.zarr",
                                 scale=scale, model=net, quiet=True, overwrite=True,
                                 blend="gaussian" if "gauss" in name else "exact")  # fmt: skip
        out = None if name == "volsr-size" else io.load(path).numpy()
    else:
        from monai.inferers import sliding_window_inference

        def predictor(window):
            n = window.shape[2:]
            grid = tuple(output_coordinates(k, round(k * s)) for k, s in zip(n, scale))
            return net(window, grid)

        with torch.inference_mode():
            out = sliding_window_inference(torch.from_numpy(data)[None, None], (64, 64, 16), 1, predictor,
                                           overlap=0.25, mode="gaussian")[0, 0].numpy()  # fmt: skip
    seconds = time.perf_counter() - start
    if out is not None:
        np.save(workdir / f"{name}.npy", out)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "rss_mib": rss}


def _spawn(name, shape, scale, workdir) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import engine; "
            f"print(json.dumps(engine._method({name!r}, {tuple(shape)!r}, {tuple(scale)!r}, "
            f"engine.Path({str(workdir)!r}))))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="96,96,24", help="LR input shape")
    parser.add_argument("--scale", default="1,1,4")
    parser.add_argument("--sizes", default="1,8", help="input size multiples for the RSS table (64 for the big run)")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    scale = tuple(float(v) for v in args.scale.split(","))
    print(f"torch threads {torch.get_num_threads()}, input {shape}, scale {scale}, model 5x32 3-D CNN (halo 6)\n")
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        rows = {name: _spawn(name, shape, scale, workdir) for name in ("whole", "volsr-exact", "volsr-gaussian", "monai")}
        reference = np.load(workdir / "whole.npy")
        print("| method | wall s | peak RSS MiB | max abs diff to whole-volume pass |")
        print("|---|---|---|---|")
        for name, row in rows.items():
            diff = float(np.abs(np.load(workdir / f"{name}.npy") - reference).max())
            print(f"| {name} | {row['seconds']:.2f} | {row['rss_mib']:.0f} | {diff:.2e} |")
        print("| torchio GridAggregator | skipped: TorchIO not installed (not a dependency) | | |\n")
        print("| input size | input shape | volsr exact wall s | peak RSS MiB |")
        print("|---|---|---|---|")
        for multiple in (int(v) for v in args.sizes.split(",")):
            side = round(multiple ** (1 / 3))
            big = (shape[0] * side, shape[1] * side, shape[2] * side) if side ** 3 == multiple else shape
            row = _spawn("volsr-size", big, scale, workdir)
            print(f"| {multiple}x | {big} | {row['seconds']:.1f} | {row['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
