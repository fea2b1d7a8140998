"""HSI training batches: seconds to assemble one batch on the CPU (is the GPU kept waiting?).

Run: ``.venv/bin/python bench/hsi_batches.py [CONFIG ...] [--batches N] [--threads T]``
(default: the x4 band-window and whole-spectrum GPU configs). Prints a Markdown table.

The HSI trainer draws its batches in the training process (``HSIPatchDataset.batches``),
so a step can go no faster than one batch takes to assemble: cut the patches (all of a
window's bands), rotate / flip / reverse them, and stack them as ``(B, bands, rows, cols)``.
Compare the ``s / batch`` column with the GPU's seconds per step (``.gpu`` probe of the
network alone: 0.03 s for batches of 16 x 24-40 bands and 0.14 s for 16 x 162-224 bands
on an H200, session 8). Loading (reading the cubes, degrading each on its shifted
grids) is timed once; batch ``i`` is a pure function of the seed and ``i``, so every run
times the same batches.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from volsr.train.config import load_config
from volsr.train.cubes import build_cube_dataset

CONFIGS = ("configs/hsi/attn1d2d/x4/d48c.yaml", "configs/hsi/attn1d2d/x4/d48sf.yaml")


def row(path: str, batches: int) -> str:
    """One table row: load seconds, seconds per batch, the batch's shape and megabytes."""
    config = load_config(path)
    started = time.perf_counter()
    dataset = build_cube_dataset(config)
    loaded = time.perf_counter() - started
    dataset.batch(0)  # first touch of the cubes' pages
    started = time.perf_counter()
    sizes = []
    for index in range(1, batches + 1):
        batch = dataset.batch(index)
        sizes.append(batch["hr"].shape[1])
    per_batch = (time.perf_counter() - started) / batches
    megabytes = (batch["hr"].numel() + batch["lr"].numel()) * 4 / 2**20
    return (f"| {path.split('/')[-1]} | {config.data.batch_size} | {min(sizes)}-{max(sizes)} "
            f"| {loaded:.1f} | {per_batch:.4f} | {megabytes:.0f} |")


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [f"`{' '.join(['bench/hsi_batches.py', *sys.argv[1:]])}` ({args.threads} thread(s))", "",
             "| config | batch | bands | load s | s / batch | MB / batch |", "|---|---|---|---|---|---|"]
    lines += [row(path, args.batches) for path in args.configs]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
