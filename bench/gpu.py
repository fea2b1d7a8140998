"""The engine on an accelerator: volsr exact vs MONAI sliding_window_inference, and one brain.

Run on a machine with a GPU (issue 20, item 10; the CPU gives the same table, slower)::

    .venv/bin/python bench/gpu.py --device cuda            # ~2 min on one H100
    .venv/bin/python bench/gpu.py --device cpu --shape 64,64,16   # a quick check of the script

Table 1: the benchmark CNN of ``bench/engine.py`` (cubic upsampling, then five 32-channel
3^3 convolutions on the output grid; fixed random weights) on a random ``--shape`` input at
``--scale``, run three ways on ``--device``: one whole-volume forward pass (the reference),
volsr exact (``upsample_to_store``, ``--max-memory`` per worker, into a Zarr store), and
MONAI's ``sliding_window_inference`` (ROI 64^3, overlap 0.25, Gaussian) on the cubic-
interpolated volume. Columns: wall seconds (after one warm-up run each), peak accelerator
memory (``torch.cuda.max_memory_allocated``; ``-`` on the CPU) and the max abs difference
to the whole-volume pass over its data range.

Table 2: seconds per 1 mm brain for the default model: the ICBM152 2009a template (shipped
in the nilearn wheel) made into 4 mm slices along its last axis by the thick-slice protocol,
then ``upsample_to_store(..., model=default, device=--device)`` back to 1 mm; wall seconds
with and without the input statistics already known are not separated (one CLI-like run).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import HRCNN  # noqa: E402 - the benchmark CNN, one definition for both benches

from volsr.geometry import output_coordinates, resampled_shape  # noqa: E402


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else "-"


def _timed(run, device: torch.device) -> tuple[float, str, np.ndarray]:
    run()  # warm-up: kernels chosen, caches filled
    _synchronise(device)
    _peak_reset(device)
    start = time.perf_counter()
    out = run()
    _synchronise(device)
    return time.perf_counter() - start, _peak(device), out


def engine_table(shape, scale, device: torch.device, budget: str, workdir: Path) -> list[tuple]:
    """Rows ``(method, seconds, peak memory, difference)`` of table 1."""
    from monai.inferers import sliding_window_inference

    from volsr import io
    from volsr.engine import EngineOptions, upsample_to_store
    from volsr.volume import Volume

    net = HRCNN().eval().to(device)
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    positions = tuple(output_coordinates(n, m) for n, m in zip(shape, resampled_shape(shape, scale), strict=True))
    x = torch.from_numpy(data)[None, None].to(device)

    def whole() -> np.ndarray:
        with torch.inference_mode():
            return net(x, positions)[0, 0].cpu().numpy()

    def volsr_exact() -> np.ndarray:
        path = upsample_to_store(Volume(data, np.eye(4), ("i", "j", "k")), workdir / "volsr.zarr",
                                 scale=scale, model=net, overwrite=True,
                                 options=EngineOptions(quiet=True, max_memory=budget, device=device))
        return io.load(path).numpy()

    def monai() -> np.ndarray:
        with torch.inference_mode():
            hr = net.up(x, positions)
            return sliding_window_inference(hr, (64, 64, 64), 1, net.refine, overlap=0.25,
                                            mode="gaussian")[0, 0].cpu().numpy()  # fmt: skip

    rows, reference = [], None
    for name, run in (("whole-volume pass", whole), (f"volsr exact, --max-memory {budget}", volsr_exact),
                      ("MONAI sliding_window_inference (64^3, 0.25, Gaussian)", monai)):
        seconds, peak, out = _timed(run, device)
        reference = out if reference is None else reference
        spread = float(reference.max() - reference.min()) or 1.0
        rows.append((name, seconds, peak, float(np.abs(out - reference).max()) / spread))
    return rows


def brain_seconds(device: torch.device, workdir: Path) -> tuple[str, tuple[int, ...], float] | None:
    """``(model, LR shape, seconds)`` for the default model on a 4 mm-slice ICBM152 brain."""
    if importlib.util.find_spec("nilearn") is None:
        return None
    from volsr import io
    from volsr.datasets import icbm152_t1_path
    from volsr.degrade import thick_slice
    from volsr.engine import EngineOptions, upsample_to_store
    from volsr.models import default_model_name

    hr = io.load(icbm152_t1_path())
    lr = thick_slice(hr, axis=2, factor=4, thickness=4.0, profile="gaussian")
    source = workdir / "lr.nii.gz"
    io.save(lr, source, overwrite=True)
    model = default_model_name(spectral=False, scale=(1.0, 1.0, 4.0))
    start = time.perf_counter()
    upsample_to_store(source, workdir / "sr.zarr", scale=(1, 1, 4), model=model, overwrite=True,
                      options=EngineOptions(device=device, quiet=True))  # fmt: skip
    _synchronise(device)
    return model, lr.shape, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--shape", default="256,256,64", help="LR input shape of table 1")
    parser.add_argument("--scale", default="1,1,4")
    parser.add_argument("--max-memory", default="8G", help="volsr's budget per worker")
    parser.add_argument("--skip-brain", action="store_true", help="table 1 only")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "bench/gpu.py: error: --device cuda but no CUDA device is available\n")
    shape = tuple(int(v) for v in args.shape.split(","))
    scale = tuple(float(v) for v in args.scale.split(","))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"command: python bench/gpu.py {' '.join(sys.argv[1:])}  ({card}, torch {torch.__version__})")
    workdir = Path(tempfile.mkdtemp(prefix="volsr-gpu-"))
    try:
        print(f"\n| method ({shape} x {args.scale}) | seconds | peak memory | max diff / range |")
        print("|---|---|---|---|")
        for name, seconds, peak, diff in engine_table(shape, scale, device, args.max_memory, workdir):
            print(f"| {name} | {seconds:.2f} | {peak} | {diff:.1e} |")
        brain = None if args.skip_brain else brain_seconds(device, workdir)
        if brain is not None:
            model, lr_shape, seconds = brain
            print(f"\n| default model | LR (4 mm slices) | seconds per 1 mm brain |\n|---|---|---|\n"
                  f"| {model} | {lr_shape} | {seconds:.1f} |")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
