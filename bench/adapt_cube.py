"""Self-supervised adaptation of the HSI networks (``volsr upsample --adapt``) on held-out cubes.

Run: ``.venv/bin/python bench/adapt_cube.py [--scales 4,2] [--steps 60] [--cubes sandiego,cloth]``.
Prints Markdown, the command first.

Protocol (``bench/hsi_quality.py``, ``volsr/data/hsi.py``): each cube divided by its maximum
(the MUUFL crop: its valid rows 0-27), LR = MATLAB ``imresize`` bicubic of the part a
multiple of r covers (:func:`volsr.data.hsi.make_pair`), written to ``.mat`` and run through
the command line (``volsr upsample lr.mat:cube sr.mat:sr --scale r [--adapt --adapt-steps
N]``: the shipped ``attn1d2d.xr`` with its self-ensemble, as a user runs it). Outputs clipped
to [0, 1]; MPSNR (band mean, data range 1), SAM (degrees), ERGAS (true r). "vs unadapted":
MPSNR and SAM minus the unadapted network's. Seconds: the whole command (adaptation and
inference) on this machine. Guard: what the adaptation's guard decided on the held-out block
of the LR cube (:mod:`volsr.train.adapt_cube`): kept (the held-out pair's MPSNR gain, the
step) or fell back (the check of best pair MPSNR: its gain, its change of the pair's SAM and
of the re-degraded output's SAM); "too small" where the LR cube has no room for a held-out
block and training patches (:func:`volsr.data.cube_self_pairs.holdout_split`): the run then
uses the unadapted network and says so.
Cubes: those no shipped HSI network trained on (``data_cards/hsi_aviris_hydice_rosis.md``,
``data_cards/cave256.md``; at x2 the x2 network trained on the Pavia and MUUFL crops).
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

import numpy as np
import scipy.io
import torch

from volsr import cli, io
from volsr.data.hsi import make_pair
from volsr.metrics import ergas, mpsnr, sam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hsi_quality import held_out_cube  # noqa: E402  (the protocol's cube, valid rows)

CUBES = {
    "sandiego": "hsi/sandiego/sandiego.mat:data",
    "sandiego_plane": "hsi/sandiego/sandiego_plane.mat:data",
    "paviaU": "hsi/gatorsense/paviaU_subimg.mat",
    "muufl": "hsi/gatorsense/an_hsi_image_sub_for_demo.mat:hsi_img_sub",
    "cloth": "hsi/cave256/cloth_ms_256.mat",
    "chart_toy": "hsi/cave256/chart_and_stuffed_toy_ms_256.mat",
    "apples": "hsi/cave256/real_and_fake_apples_ms_256.mat",
}
#: The x2 network trained on the Pavia and MUUFL crops.
TRAINED_ON = {2: ("paviaU", "muufl"), 4: ()}


def _run(args: list[str]) -> tuple[int, float, str]:
    """Exit status, seconds and the adaptation's log line (or last error line) of one ``volsr upsample``."""
    log = text_io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(log), contextlib.redirect_stdout(text_io.StringIO()):
        status = cli.main(["upsample", *args])
    seconds = time.perf_counter() - started
    lines = log.getvalue().replace("\r", "\n").splitlines()
    if status not in (0, 2):
        raise RuntimeError(f"volsr upsample {' '.join(args)} failed: {log.getvalue()[-500:]}")
    line = next((x for x in lines if x.startswith("adapt: ") and ("steps in" in x or "too small" in x)), "")
    return status, seconds, line if status == 0 else (lines[-1] if lines else "")


def rows(name: str, scale: int, steps: Sequence[int], folder: Path) -> list[str]:
    """The Markdown rows of one cube: the unadapted network, then each step budget."""
    pair = make_pair(held_out_cube(CUBES[name]), scale=scale, name=name)
    lr = folder / f"{name}_x{scale}.mat"
    scipy.io.savemat(lr, {"cube": pair.lr})
    out, base = [], None
    runs = [("unadapted", [])] + [(f"--adapt {n}", ["--adapt", "--adapt-steps", str(n)]) for n in steps]
    for label, extra in runs:
        status, seconds, line = _run([f"{lr}:cube", f"{folder / 'sr.mat'}:sr", "--scale", str(scale),
                                      "--overwrite", *extra])  # fmt: skip
        cells = f"| {name} | {pair.hr.shape[2]} | x{scale} | {label} |"
        if status != 0:
            why = "refused: too small" if "too small" in line else f"refused: {line[-80:]}"
            out.append(f"{cells} | | | | {seconds:.0f} | {why} |")
            continue
        y = np.clip(io.load(f"{folder / 'sr.mat'}:sr").numpy(), 0.0, 1.0)
        value, angle = mpsnr(pair.hr, y, data_range=1.0), sam(pair.hr, y)
        base = (value, angle) if base is None else base
        guard = ""
        if "too small" in line:
            guard = "too small for pairs: ran unadapted"
        elif line and "kept the weights" in line:
            guard = f"{line.split('held-out block ', 1)[-1].split(',')[0]} kept ({line.rsplit('of ', 1)[-1]})"
        elif line:
            guard = "fell back" + (f" ({line.split('(best check: ', 1)[-1].split(')')[0]})" if "best check" in line else "")
        out.append(f"{cells} {value:.3f} | {angle:.4f} | {ergas(pair.hr, y, scale=scale):.4f} | "
                   f"{value - base[0]:+.3f} dB, SAM {angle - base[1]:+.5f} ({100 * (angle / base[1] - 1):+.2f} %) | "
                   f"{seconds:.0f} | {guard} |")  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="4,2")
    parser.add_argument("--steps", default="60")
    parser.add_argument("--cubes", default=",".join(CUBES))
    args = parser.parse_args(argv)
    print("`" + " ".join(["python bench/adapt_cube.py", *(argv if argv is not None else sys.argv[1:])]) + "`\n")
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| cube | bands | scale | model | MPSNR (dB) | SAM (deg) | ERGAS | vs unadapted | seconds | guard |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    steps = [int(s) for s in args.steps.split(",") if s]
    with tempfile.TemporaryDirectory() as folder:
        for scale in (int(s) for s in args.scales.split(",")):
            for name in args.cubes.split(","):
                if name in TRAINED_ON[scale]:
                    continue
                for line in rows(name, scale, steps, Path(folder)):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
