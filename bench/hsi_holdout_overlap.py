"""Do the held-out HSI scenes overlap any training cube? A data audit, printed as a table.

Run: ``.venv/bin/python bench/hsi_holdout_overlap.py``.

For each held-out cube of ``bench/hsi_quality.py`` (the other-sensor crops are held out at
x4 only) and each cube a shipped x4 or x2 config trains on, five 48x48 patches of the
held-out cube (its centre and the centres of its four
quadrants) are searched over the training cube in all 8 flips and row/column swaps. The
score of a placement is the normalised cross-correlation (NCC) of patch and window averaged
over four bands (at 20, 40, 60 and 80 % of the band range: the sensors' band sets differ, so
bands are matched by position, not wavelength); the table gives the highest score found. A
patch that is in the training cube scores close to 1 (the same place matches in every band);
distinct scenes of similar land cover score well below. The last row is a positive
control: ``hydice.mat``, the transpose of the training cube ``HYDICE_data.mat``.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.signal import fftconvolve

from volsr.data.hsi import load_cube
from volsr.datasets import shared_data_root
from volsr.train.config import load_config

sys.path.insert(0, "bench")
from hsi_quality import HELD_OUT, OTHER_SENSORS, held_out_cube  # noqa: E402

CONFIGS = ("configs/hsi/attn1d2d/x4/d48.yaml", "configs/hsi/attn1d2d/x2/gpu.yaml")
BAND_FRACTIONS = (0.2, 0.4, 0.6, 0.8)
PATCH = 48
#: A cube known to be a training cube in another orientation: its row must read about 1.
CONTROL = ("hsi/hydice_urban/hydice.mat:data", "hsi/hydice_urban/HYDICE_data.mat:data")


def standardised(image: np.ndarray) -> np.ndarray:
    """``image`` (float64) minus its mean, over its standard deviation."""
    image = image.astype(np.float64)
    return (image - image.mean()) / max(float(image.std()), 1e-12)


def ncc_map(patch: np.ndarray, image: np.ndarray) -> np.ndarray:
    """NCC of the (p, p) ``patch`` with every (p, p) window of the 2-D ``image``."""
    p = standardised(patch)
    window = np.ones_like(p)
    sums = fftconvolve(image, window, mode="valid")
    squares = fftconvolve(image**2, window, mode="valid")
    spread = np.sqrt(np.maximum(squares - sums**2 / p.size, 0.0))
    # A flat window (e.g. the MUUFL crop's constant fill) has no correlation to speak of.
    flat = spread < 1e-3 * np.sqrt(p.size)
    ncc = fftconvolve(image, p[::-1, ::-1], mode="valid") / np.where(flat, 1.0, spread)
    return np.where(flat, 0.0, ncc / np.sqrt(p.size))


def patches(image: np.ndarray) -> list[np.ndarray]:
    """Five ``PATCH``-sized patches: centred on the image and on each quadrant."""
    h, w = image.shape
    centres = [(h // 2, w // 2)] + [(h * a // 4, w * b // 4) for a in (1, 3) for b in (1, 3)]
    return [image[max(0, i - PATCH // 2): max(0, i - PATCH // 2) + PATCH,
                  max(0, j - PATCH // 2): max(0, j - PATCH // 2) + PATCH] for i, j in centres]


def dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and row/column swaps of a 2-D image."""
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [t[:, ::-1] for t in turns]


def bands(cube: np.ndarray) -> list[np.ndarray]:
    """The bands at ``BAND_FRACTIONS`` of ``cube``'s band range, each standardised."""
    return [standardised(cube[:, :, round(f * (cube.shape[2] - 1))]) for f in BAND_FRACTIONS]


def overlap(held: np.ndarray, train: np.ndarray) -> float:
    """Highest band-averaged NCC of any patch of ``held`` in ``train`` (see the module docstring)."""
    held_patches = [patches(image) for image in bands(held)]  # per band: 5 patches
    train_views = [dihedral(image) for image in bands(train)]  # per band: 8 orientations
    best = -1.0
    for turn in range(8):
        for index in range(5):
            maps = [ncc_map(p[index], v[turn]) for p, v in zip(held_patches, train_views)]
            best = max(best, float(np.mean(maps, axis=0).max()))
    return best


def main() -> int:
    """Print the table."""
    training = sorted({spec for path in CONFIGS for spec in load_config(path).data.cubes})
    root = shared_data_root()
    cubes = {spec: load_cube(str(root / spec))[0] for spec in training}
    print(f"command: {' '.join(['python'] + sys.argv)}\n")
    print("| held-out cube | training cube | peak NCC |\n|---|---|---|")
    for held_spec in HELD_OUT + OTHER_SENSORS:
        held = held_out_cube(held_spec)
        for spec, cube in cubes.items():
            if spec != held_spec:
                print(f"| {held_spec} | {spec} | {overlap(held, cube):.3f} |", flush=True)
    control = load_cube(str(root / CONTROL[0]))[0]
    print(f"| {CONTROL[0]} (control) | {CONTROL[1]} | {overlap(control, cubes[CONTROL[1]]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
