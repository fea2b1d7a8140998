"""Out-of-core engine benchmark: volsr exact / Gaussian vs MONAI sliding_window_inference.

Run: ``.venv/bin/python bench/engine.py`` (default: the issue's table, ~10 min on 2 cores)
and ``.venv/bin/python bench/engine.py --big`` (adds the 64x input and an 8.6 GB output);
``--memory 8`` prints only peak RSS of volsr exact (``--budgets``) and MONAI at 1x and 8x
the input voxels, the input in a Zarr store (volsr streams it; MONAI loads it whole).

Model: cubic interpolation onto the output grid, then a 5-layer, 32-channel 3-D CNN
(3^3 kernels, zero padding, residual) on that grid: a grid ``"hr"`` model with halo 5,
fixed random weights. MONAI's ``sliding_window_inference`` maps an input ROI to an
output ROI of the same shape, so it runs the way MONAI users run SR: on the cubic-
interpolated whole volume (computed in its subprocess, counted in its time and memory)
with the CNN as the predictor, ROI 64^3, overlap 0.25, Gaussian blending. volsr runs the
same module through ``upsample_to_store`` (``--max-memory 1G``, default tile and chunks); its
card declares ``layout="channels_last"`` (the table first prints
:func:`volsr.engine.layout.time_layouts` of it, the measurement that justifies it). MONAI
runs twice, with the module as it is and with its weights converted to channels-last, so
the gap between volsr and MONAI is not just the layout. The conv rate is the faster
layout's. volsr exact runs at ``--max-memory 1G`` and ``4G``; the throughput
table takes the best of 3 runs of each against the best conv-loop rate measured around them
in the same process (the wall-time table shows the first run, like every other row).
Each row runs in its own subprocess; peak RSS is that process's ``VmHWM`` (taken
before the output is read back for the comparison). The difference is the max abs
difference to the whole-volume forward pass divided by that pass's data range.
TorchIO is not installed and is not a dependency: its GridAggregator row is skipped.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from volsr.engine.layout import apply_layout, time_layouts
from volsr.geometry import output_coordinates, resampled_shape
from volsr.models import ModelCard
from volsr.models.interpolation import SeparableInterpolation

LAYERS = (1, 32, 32, 32, 32, 1)
#: The first volsr exact row's --max-memory (fixed, not the machine-dependent default).
BASE_BUDGET = "1G"
#: The second volsr exact row's --max-memory: larger tiles, less halo recomputed.
BIG_BUDGET = "4G"
#: volsr exact runs (and conv-loop rates around them) behind each throughput row: best of.
THROUGHPUT_RUNS = 3


def _budget_of(name: str) -> str:
    """The --max-memory of a run name ``volsr[-variant]@BUDGET`` (no ``@``: :data:`BASE_BUDGET`)."""
    return name.partition("@")[2] or BASE_BUDGET


class HRCNN(nn.Module):
    """Cubic upsampling, then 5 conv layers (32 channels, 3^3) on the output grid, residual."""

    card = ModelCard(name="bench-hr-cnn", kind="network", grid="hr", halo=len(LAYERS) - 1, scales="real",
                     scale_range=(0.5, 16.0), modality="any", description="bench",
                     layout="channels_last")  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        for n, (a, b) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
            conv = nn.Conv3d(a, b, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2 / (27 * a)) ** 0.5)
                conv.bias.zero_()
            # In-place ReLUs, as inference code writes them (MONAI runs the same module).
            layers += [conv] + ([nn.ReLU(inplace=True)] if n < len(LAYERS) - 2 else [])
        self.body = nn.Sequential(*layers)
        self.up = SeparableInterpolation(method="cubic")

    def refine(self, y: torch.Tensor) -> torch.Tensor:
        """The HR-grid part (what MONAI's predictor runs on a window)."""
        return y + self.body(y)

    def forward(self, x, positions):
        return self.refine(self.up(x, positions))


def flops_per_output_voxel() -> int:
    """Multiply-adds x 2 of the conv layers per output voxel (the interpolation is ignored)."""
    return sum(2 * 27 * a * b for a, b in zip(LAYERS[:-1], LAYERS[1:]))


def _rss_mib() -> float:
    """Peak RSS of this process (MiB): ``VmHWM``, the high-water mark of its own address space.

    Not ``ru_maxrss``: Linux carries that over ``fork`` + ``exec``, so a subprocess started
    by a parent holding 900 MiB reports at least 900 MiB whatever it uses itself.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _method(name: str, shape, scale, workdir: str) -> dict:
    from volsr import io
    from volsr.engine import EngineOptions, upsample_to_store
    from volsr.volume import Volume

    work = Path(workdir)
    net, data = HRCNN().eval(), np.random.default_rng(0).random(shape, dtype=np.float32)
    shape_out = resampled_shape(shape, scale)
    positions = tuple(output_coordinates(n, m) for n, m in zip(shape, shape_out))
    budget = _budget_of(name)

    def run_volsr() -> Path:
        engine = EngineOptions(quiet=True, max_memory=budget, blend="gaussian" if "gauss" in name else "exact")
        return upsample_to_store(Volume(data, np.eye(4), ("i", "j", "k")), work / f"{name}.zarr", scale=scale,
                                 model=net, overwrite=True, options=engine)  # fmt: skip

    rate_before = _conv_rate() if name.startswith("volsr-exact") else None
    start = time.perf_counter()
    if name == "whole":
        with torch.inference_mode():
            out = net(torch.from_numpy(data)[None, None], positions)[0, 0].numpy()
    elif name.startswith("volsr"):
        path = run_volsr()
        out = None
    else:
        from monai.inferers import sliding_window_inference

        if name == "monai-cl":
            apply_layout(net, "channels_last")
        with torch.inference_mode():
            hr = net.up(torch.from_numpy(data)[None, None], positions)
            out = sliding_window_inference(hr, (64, 64, 64), 1, net.refine, overlap=0.25,
                                           mode="gaussian")[0, 0].numpy()  # fmt: skip
    seconds, rss = time.perf_counter() - start, _rss_mib()
    row = {"seconds": seconds, "rss_mib": rss}
    if rate_before is not None:
        # Throughput on a shared machine: the best of THROUGHPUT_RUNS runs against the best
        # conv-loop rate taken before, between and after them, and the CNN alone on the
        # tile's box, all in this process. Other tenants only ever slow a run down, so the
        # best of each is the closest to this machine's own speed (the table's wall time
        # above is the first run, as for every other method).
        rates, best = [rate_before, _conv_rate()], seconds
        for _ in range(THROUGHPUT_RUNS - 1):
            start = time.perf_counter()
            path = run_volsr()
            best = min(best, time.perf_counter() - start)
            rates.append(_conv_rate())
        tile, compute, alone = _model_alone(shape, scale, budget)
        row.update(rates=rates, best_seconds=best, tile=tile, compute=compute, alone=alone)
    if out is None:
        out = io.load(path).numpy()
        shutil.rmtree(path)
    np.save(work / f"{name}.npy", out)
    return row


def _memory_method(name: str, source: str, scale, workdir: str) -> dict:
    """Peak RSS of one method on a Zarr input: volsr reads it chunk by chunk (``name`` is
    ``volsr@BUDGET``), MONAI needs it whole in memory (as its users load it)."""
    from volsr import io
    from volsr.engine import EngineOptions, upsample_to_store

    net = HRCNN().eval()
    start = time.perf_counter()
    if name.startswith("volsr"):
        upsample_to_store(source, Path(workdir) / "mem.zarr", scale=scale, model=net, overwrite=True,
                          options=EngineOptions(quiet=True, max_memory=_budget_of(name)))  # fmt: skip
        shutil.rmtree(Path(workdir) / "mem.zarr")
    else:
        from monai.inferers import sliding_window_inference

        data = io.load(source).numpy()
        positions = tuple(output_coordinates(n, m) for n, m in zip(data.shape, resampled_shape(data.shape, scale)))
        with torch.inference_mode():
            hr = net.up(torch.from_numpy(data)[None, None], positions)
            sliding_window_inference(hr, (64, 64, 64), 1, net.refine, overlap=0.25, mode="gaussian")
    return {"seconds": time.perf_counter() - start, "rss_mib": _rss_mib()}


def _memory_table(shape, scale, workdir: Path, growth: int, budgets: list[str]) -> None:
    """Peak RSS of volsr exact (several --max-memory) and MONAI at 1x and ``growth``x input."""
    print("| input | output GB (float32) | method | peak RSS MiB | ratio to MONAI | wall s |")
    print("|---|---|---|---|---|---|")
    for factor in sorted({1, growth}):
        size = tuple(round(n * factor ** (1 / 3)) for n in shape)
        source = workdir / "mem_in.zarr"
        _make_input(source, size, "float32")
        rows = {name: _spawn("_memory_method", name, str(source), scale, str(workdir))
                for name in ("monai", *(f"volsr@{b}" for b in budgets))}  # fmt: skip
        gigabytes = 4 * np.prod(resampled_shape(size, scale)) / 1e9
        for name, row in rows.items():
            label = "MONAI (0.25, Gaussian)" if name == "monai" else f"volsr exact, --max-memory {name[6:]}"
            ratio = row["rss_mib"] / rows["monai"]["rss_mib"]
            print(f"| {factor}x {size} | {gigabytes:.2f} | {label} | {row['rss_mib']:.0f} | {ratio:.2f} | "
                  f"{row['seconds']:.1f} |")  # fmt: skip
        shutil.rmtree(source, ignore_errors=True)
    print()


def _make_input(path: Path, shape, dtype: str) -> None:
    """A random Zarr input written chunk by chunk (never whole in memory)."""
    import dask.array as da

    from volsr import io
    from volsr.volume import Volume

    data = da.random.default_rng(0).random(shape, chunks=(128, 128, 64), dtype=np.float32)
    if dtype == "uint8":
        data = (data * 255).astype(np.uint8)
    io.save(Volume(data, np.eye(4), ("i", "j", "k")), path, chunks=(128, 128, 64), overwrite=True)


def _size_run(source: str, output: str, scale, chunks) -> dict:
    from volsr.engine import EngineOptions, upsample_to_store

    start = time.perf_counter()
    upsample_to_store(source, output, scale=scale, model="cubic", overwrite=True,
                      options=EngineOptions(quiet=True, chunks=chunks))
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in Path(output).rglob("*") if p.is_file())
    return {"seconds": seconds, "rss_mib": _rss_mib(), "stored_bytes": size}


def _conv_rate() -> float:
    """FLOP/s of a plain Conv3d(32, 32, 3) loop on a 96^3 volume (this machine, now): the
    faster of the channels-first and channels-last layouts."""
    best = 0.0
    for layout in ("contiguous", "channels_last"):
        conv = apply_layout(nn.Conv3d(32, 32, 3, padding=1).eval(), layout)
        x = torch.randn(1, 32, 96, 96, 96)
        with torch.inference_mode():
            conv(x)
            start = time.perf_counter()
            for _ in range(3):
                conv(x)
            seconds = time.perf_counter() - start
        best = max(best, 3 * 2 * 27 * 32 * 32 * 96**3 / seconds)
    return best


def _spawn(function: str, *args) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import engine; "
            f"print(json.dumps(engine.{function}(*{args!r})))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{function}{args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _comparison(shape, scale, workdir: Path) -> dict:
    rows = {name: _spawn("_method", name, shape, scale, str(workdir))
            for name in ("whole", "volsr-exact", f"volsr-exact@{BIG_BUDGET}", "volsr-gaussian", "monai",
                         "monai-cl")}  # fmt: skip
    reference = np.load(workdir / "whole.npy")
    data_range = float(reference.max() - reference.min())
    print("| method | wall s | peak RSS MiB | max abs diff / data range |")
    print("|---|---|---|---|")
    labels = {"whole": "whole-volume pass", "volsr-exact": "volsr exact",
              f"volsr-exact@{BIG_BUDGET}": f"volsr exact, --max-memory {BIG_BUDGET}", "volsr-gaussian":
              "volsr Gaussian (overlap 0.25)", "monai": "MONAI sliding_window_inference (0.25, Gaussian)",
              "monai-cl": "MONAI, the CNN's weights in channels-last"}  # fmt: skip
    for name, row in rows.items():
        diff = float(np.abs(np.load(workdir / f"{name}.npy") - reference).max()) / data_range
        print(f"| {labels[name]} | {row['seconds']:.1f} | {row['rss_mib']:.0f} | {diff:.1e} |")
        (workdir / f"{name}.npy").unlink()
    print("| TorchIO GridAggregator | skipped: not installed (not a dependency) | | |\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="256,256,64", help="LR input shape of the comparison")
    parser.add_argument("--scale", default="1,1,4")
    parser.add_argument("--big", action="store_true", help="add the 64x input and the 8.6 GB output")
    parser.add_argument("--skip-comparison", action="store_true", help="only the size and throughput tables")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--memory", type=int, default=0, metavar="G",
                        help="only the peak-RSS table: volsr vs MONAI at 1x and Gx the input voxels")
    parser.add_argument("--budgets", default="1G,256M", help="volsr --max-memory values of --memory")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    scale = tuple(float(v) for v in args.scale.split(","))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; input {shape} -> x{scale}; "
          f"model: cubic + 5-layer 32-channel 3-D CNN on the output grid (grid 'hr', halo 5)\n")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        workdir = Path(folder)
        if args.memory:
            _memory_table(shape, scale, workdir, args.memory, args.budgets.split(","))
            return
        seconds = _layout_seconds(shape, scale)
        print(f"layout (volsr.engine.layout.time_layouts, one 64^3 output tile, best of 2): channels-first "
              f"{seconds['contiguous']:.3f} s, channels-last {seconds['channels_last']:.3f} s\n")  # fmt: skip
        if not args.skip_comparison:
            rows = _comparison(shape, scale, workdir)
            _throughput_table(rows, np.prod(resampled_shape(shape, scale)))
        _size_table(shape, scale, workdir, args.big)


def _throughput_table(rows: dict, voxels: int) -> None:
    """Each volsr exact row's FLOP rate (best run) against the best conv-loop rate around it."""
    print(f"| volsr exact | conv3d loop GFLOP/s (best of {THROUGHPUT_RUNS + 1} around the runs; all) | "
          f"volsr exact, best of {THROUGHPUT_RUNS} runs: model FLOP per output voxel x output voxels/s | "
          "the CNN alone on one tile's computed box (no engine) | halo factor | "
          "volsr exact / (CNN alone / halo factor) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        if "rates" not in row:
            continue
        rate = max(row["rates"])
        achieved = flops_per_output_voxel() * voxels / row["best_seconds"]
        halo = np.prod(row["compute"]) / np.prod(row["tile"])
        budget = _budget_of(name)
        print(f"| --max-memory {budget} | {rate / 1e9:.1f} ({' / '.join(f'{r / 1e9:.0f}' for r in row['rates'])}) | "
              f"{achieved / 1e9:.1f} ({achieved / rate:.0%}; {row['best_seconds']:.1f} s) | "
              f"{row['alone'] / 1e9:.1f} ({row['alone'] / rate:.0%}) on {tuple(row['compute'])} | "
              f"{halo:.3f} (tile {tuple(row['tile'])}) | {achieved * halo / row['alone']:.0%} |")  # fmt: skip
    print()


def _model_alone(shape, scale, budget: str) -> tuple[tuple[int, ...], tuple[int, ...], float]:
    """The tile volsr exact picks under ``budget``, the box its model
    computes (tile plus halo), and the FLOP rate of the CNN alone on that box: the ceiling
    without the engine's reads, interpolation, crops and writes, and without the halo it
    recomputes."""
    from volsr.engine.progress import parse_size
    from volsr.engine.sizing import plan_run
    from volsr.volume import Volume

    net = apply_layout(HRCNN().eval(), HRCNN.card.layout)
    volume = Volume(np.zeros(shape, np.float32), np.eye(4), ("i", "j", "k"))
    plan, _, _ = plan_run(net, volume, resampled_shape(shape, scale), scale, None, None, "exact", 0.25,
                          parse_size(budget), torch.device("cpu"))  # fmt: skip
    compute = tuple(t + 2 * plan.out_halo for t in plan.tile)
    x = torch.rand(1, 1, *compute)
    with torch.inference_mode():
        net.refine(x)
        seconds = float("inf")
        for _ in range(THROUGHPUT_RUNS):
            start = time.perf_counter()
            net.refine(x)
            seconds = min(seconds, time.perf_counter() - start)
    return plan.tile, compute, flops_per_output_voxel() * float(np.prod(compute)) / seconds


def _layout_seconds(shape, scale) -> dict[str, float]:
    from volsr.engine.plan import make_plan

    net = HRCNN().eval()
    plan = make_plan(net.card, shape, resampled_shape(shape, scale), chunks=(64,) * len(shape),
                     tile=(64,) * len(shape))  # fmt: skip
    return time_layouts(net, plan, 1, torch.device("cpu"))


def _size_table(shape, scale, workdir: Path, big: bool) -> None:
    print("| input | input shape | output GB (float32) | model | wall s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    runs = [(1, shape, scale, "float32"), (8, tuple(2 * n for n in shape), scale, "float32")]
    if big:
        runs += [(64, tuple(4 * n for n in shape), scale, "float32"),
                 ("8 GB", tuple(4 * n for n in shape), (*scale[:-1], 2 * scale[-1]), "uint8")]  # fmt: skip
    for label, size, factors, dtype in runs:
        source, output = workdir / "in.zarr", workdir / "out.zarr"
        _make_input(source, size, dtype)
        chunks = (128, 128, 256)
        row = _spawn("_size_run", str(source), str(output), factors, chunks)
        shape_out = resampled_shape(size, factors)
        gigabytes = 4 * np.prod(shape_out) / 1e9
        print(f"| {label}{'x' if isinstance(label, int) else ''} ({dtype}) | {size} -> {shape_out} | "
              f"{gigabytes:.2f} | cubic x{factors} | {row['seconds']:.1f} | {row['rss_mib']:.0f} |")  # fmt: skip
        shutil.rmtree(output, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)


if __name__ == "__main__":
    main()
