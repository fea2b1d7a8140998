"""upsample_to_store: resume (SIGKILL, full disk), refusals, Dask workers, memory, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.engine.runs import with_engine
from volsr import io
from volsr.cli import main
from volsr.engine import EngineOptions, upsample_to_store
from volsr.engine import store as store_module
from volsr.engine.manifest import MANIFEST_NAME, RUN_ATTRIBUTE, finished_header
from volsr.errors import InvalidDataError, OutputExistsError, VolsrError
from volsr.volume import Volume

ROOT = Path(__file__).resolve().parents[2]


def _volume(seed=0, shape=(12, 10, 6)):
    return Volume(np.random.default_rng(seed).random(shape, dtype=np.float32), np.eye(4), ("i", "j", "k"))


def _run_script(out, mode, delay, seed=5):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/engine/_slow_run.py"), str(out), mode, str(delay), str(seed)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _done(store):
    try:
        record = json.loads((store / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return 0
    return bin(int(record["done"] or "0", 16)).count("1")


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    reference, killed = tmp_path / "ref.zarr", tmp_path / "killed.zarr"
    first = _run_script(killed, "fresh", 0.05)
    uninterrupted = _run_script(reference, "fresh", 0)
    deadline = time.monotonic() + 60
    work = tmp_path / ".killed.zarr.volsr-partial.zarr"
    while _done(work) < 5 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert uninterrupted.wait() == 0
    assert 5 <= _done(work) < 64, "the kill must land mid-run"
    with pytest.raises(VolsrError):
        io.load(killed)  # no OME metadata yet: visibly unfinished
    assert _run_script(killed, "resume", 0).wait() == 0
    a, b = io.load(killed).numpy(), io.load(reference).numpy()
    assert a.tobytes() == b.tobytes()


def _disk_full_at(write: int):
    """A ``write_result`` that fails with ENOSPC at its ``write``-th call."""
    calls, original = [], store_module.write_result

    def failing(array, region, result):
        calls.append(region)
        if len(calls) == write:
            raise OSError(28, "No space left on device")
        original(array, region, result)

    return failing


def test_full_disk_mid_run_then_resume(tmp_path, monkeypatch):
    volume, original = _volume(), store_module.write_result
    kwargs = dict(scale=(1, 1, 2), model="cubic", options=EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True))
    monkeypatch.setattr(store_module, "write_result", _disk_full_at(3))
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(volume, tmp_path / "a.zarr", **kwargs)
    monkeypatch.setattr(store_module, "write_result", original)
    with pytest.raises(OutputExistsError, match="is unfinished .*pass --resume to continue it"):
        upsample_to_store(volume, tmp_path / "a.zarr", **kwargs)
    upsample_to_store(volume, tmp_path / "a.zarr", resume=True, **kwargs)
    upsample_to_store(volume, tmp_path / "b.zarr", **kwargs)
    assert np.array_equal(io.load(tmp_path / "a.zarr").numpy(), io.load(tmp_path / "b.zarr").numpy())


def test_resume_refuses_changed_input_model_or_options(tmp_path):
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    out = tmp_path / "o.zarr"
    upsample_to_store(source, out, scale=(1, 1, 2), model="linear",
                      options=EngineOptions(chunks=(4, 4, 4), quiet=True))
    with pytest.raises(VolsrError, match=r"the options differs .*tile"):
        upsample_to_store(source, out, scale=(1, 1, 2), model="linear", resume=True,
                          options=EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True))  # fmt: skip
    with pytest.raises(VolsrError, match="the model differs"):
        upsample_to_store(source, out, scale=(1, 1, 2), model="nearest", resume=True,
                          options=EngineOptions(chunks=(4, 4, 4), quiet=True))  # fmt: skip
    io.save(_volume(seed=1), source, overwrite=True)
    with pytest.raises(VolsrError, match="the input differs"):
        upsample_to_store(source, out, scale=(1, 1, 2), model="linear", resume=True,
                          options=EngineOptions(chunks=(4, 4, 4), quiet=True))  # fmt: skip


def test_two_dask_workers_equal_one_process(tmp_path):
    import distributed
    volume = _volume(shape=(14, 9, 5))
    kwargs = dict(scale=(1, 2, 2.5), model="cubic", options=EngineOptions(chunks=(8, 8, 8), tile=(8, 8, 8), quiet=True))
    one = upsample_to_store(volume, tmp_path / "one.zarr", **kwargs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:  # fmt: skip
        two = upsample_to_store(volume, tmp_path / "two.zarr", **with_engine(kwargs, scheduler=cluster.scheduler_address))
    np.testing.assert_allclose(io.load(two).numpy(), io.load(one).numpy(), rtol=0, atol=1e-6)


def test_cli_workers_run_on_a_local_cluster_with_max_memory_per_worker(tmp_path, capsys):
    # distributed is a dependency: --workers works on a plain install. --max-memory is each
    # worker's budget: the plan (and the recorded budget) is the same as one process with it.
    source = tmp_path / "in.nii.gz"
    io.save(_volume(shape=(40, 36, 12)), source)
    common = [str(source), "--scale", "1,1,2", "--model", "cubic", "--chunks", "8,8,8", "--max-memory", "512K"]
    assert main(["upsample", common[0], str(tmp_path / "two.zarr"), *common[1:], "--workers", "2"]) == 0
    assert "memory budget per worker" in capsys.readouterr().err
    assert main(["upsample", common[0], str(tmp_path / "one.zarr"), *common[1:]]) == 0
    two, one = finished_header(tmp_path / "two.zarr"), finished_header(tmp_path / "one.zarr")
    assert two["options"]["plan"] == one["options"]["plan"] and two["options"]["tasks"] > 1
    np.testing.assert_array_equal(io.load(tmp_path / "two.zarr").numpy(), io.load(tmp_path / "one.zarr").numpy())


def _traced_peak(source, output, **kwargs):
    tracemalloc.start()
    try:
        upsample_to_store(source, output, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_flat_in_the_volume_size(tmp_path):
    # 4 tasks at 1x, 32 at 8x (same task and tile): anything the engine kept per task or
    # per input chunk (lists, manifest, dask graphs) would show up as growth.
    kwargs = dict(scale=(1, 1, 2), model="linear", options=EngineOptions(chunks=(64, 64, 64), tile=(64, 64, 64), quiet=True))
    rng = np.random.default_rng(4)
    for name, shape in (("1x", (128, 128, 32)), ("8x", (256, 256, 64))):
        volume = Volume(rng.random(shape, dtype=np.float32), np.eye(4), ("i", "j", "k"))
        io.save(volume, tmp_path / f"{name}.zarr", chunks=(64, 64, 32))
    del volume
    upsample_to_store(tmp_path / "1x.zarr", tmp_path / "warm.zarr", **kwargs)  # imports, caches
    small = _traced_peak(tmp_path / "1x.zarr", tmp_path / "sr1.zarr", **kwargs)
    large = _traced_peak(tmp_path / "8x.zarr", tmp_path / "sr8.zarr", **kwargs)
    # One task's buffers: a 64^3 accumulator, weight sum and result (1 MiB each), two
    # input boxes, the encoded chunk; the 8x output alone is 32 MiB.
    assert small < 8 * 2**20, small
    # Flat up to per-task bookkeeping (dask slicing of the input graph, about 64 KiB per
    # task measured): 28 more tasks may add a few MiB, while keeping any whole-volume
    # buffer would add at least the 32 MiB output.
    assert large <= small + 4 * 2**20, (small, large)


def test_cli_errors_are_one_line(tmp_path, capsys):
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    args = ["upsample", str(source), str(tmp_path / "o.zarr"), "--scale", "1,1,2", "--model",
            "linear", "--chunks", "4,4,4", "--quiet"]  # fmt: skip
    assert main(args) == 0
    io.save(_volume(seed=2), source, overwrite=True)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "input differs" in error
    store_module_timeout = "volsr.engine.distributed.CONNECT_TIMEOUT_S"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module_timeout, 1)
        assert main([*args[:2], str(tmp_path / "p.zarr"), *args[3:], "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    assert main([*args[:2], str(tmp_path / "o.nii.gz"), *args[3:], "--blend", "gaussian", "--check-halo"]) == 0
    assert io.load(tmp_path / "o.nii.gz").shape == (12, 10, 12)
    assert not any(p.name.endswith("partial.zarr") for p in tmp_path.iterdir())


def test_the_default_budget_is_half_the_free_memory_shared_among_local_workers(monkeypatch):
    from collections import namedtuple

    from volsr.engine import progress

    memory = namedtuple("memory", "available")
    monkeypatch.setattr(progress.psutil, "virtual_memory", lambda: memory(10 * 2**30))
    assert progress.default_budget() == 5 * 2**30
    assert progress.default_budget(workers=4) == 5 * 2**30 // 4
    assert progress.default_budget(local=False) == 2**30  # a remote cluster's memory is unknown here
    monkeypatch.setattr(progress.psutil, "virtual_memory", lambda: memory(2**29))
    assert progress.default_budget() == 2**30  # never below 1 GiB
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        progress.default_budget(workers=0)


def test_a_resumed_run_keeps_the_default_budget_it_started_with(tmp_path, monkeypatch):
    # The default follows the free memory; a resume on a busier machine must still plan
    # the same tiles (the manifest refuses changed options).
    from volsr.engine import progress

    volume, original = _volume(shape=(40, 32, 16)), store_module.write_result
    kwargs = dict(scale=(1, 1, 2), model="cubic", options=EngineOptions(chunks=(8, 8, 8), quiet=True))
    monkeypatch.setattr(progress, "default_budget", lambda **_: 2**19)  # 20 tasks
    monkeypatch.setattr(store_module, "write_result", _disk_full_at(2))
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(volume, tmp_path / "a.zarr", **kwargs)
    first = json.loads((tmp_path / ".a.zarr.volsr-partial.zarr" / MANIFEST_NAME).read_text())
    assert first["state"]["budget_bytes"] == 2**19
    monkeypatch.setattr(store_module, "write_result", original)
    monkeypatch.setattr(progress, "default_budget", lambda **_: 2**32)  # one task, if planned anew
    upsample_to_store(volume, tmp_path / "a.zarr", resume=True, **kwargs)
    upsample_to_store(volume, tmp_path / "b.zarr", **with_engine(kwargs, max_memory=2**19))
    assert np.array_equal(io.load(tmp_path / "a.zarr").numpy(), io.load(tmp_path / "b.zarr").numpy())
    upsample_to_store(volume, tmp_path / "c.zarr", **kwargs)  # fresh: the new default, one tile
    c = finished_header(tmp_path / "c.zarr")
    assert c["options"]["plan"]["tile"] != first["header"]["options"]["plan"]["tile"]


# --- Never lose data: replace only by a complete successor, one writer, resume only resumes.


def _tree_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_overwrite_interrupted_at_random_points_keeps_the_old_output(tmp_path):
    # Ten kills (SIGKILL and SIGINT) of an --overwrite run, each after a random number of its
    # 64 tasks (0: while it starts): each time the old output is byte for byte what it was,
    # and the last, uninterrupted run replaces it with the complete new output.
    out, work = tmp_path / "o.zarr", tmp_path / ".o.zarr.volsr-partial.zarr"
    assert _run_script(out, "fresh", 0, 1).wait() == 0
    before = _tree_bytes(out)
    rng = np.random.default_rng(19)
    landed = []
    for trial in range(10):
        after_tasks = int(rng.integers(0, 40))  # at least 24 tasks (1.4 s) left: the kill lands mid-run
        run = _run_script(out, "overwrite", 0.06)  # (0.5 s of margin was too little on a loaded machine)
        if after_tasks == 0:
            time.sleep(float(rng.uniform(0.1, 1.0)))
        deadline = time.monotonic() + 60
        while after_tasks and _done(work) < after_tasks and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL if trial % 2 else signal.SIGINT)
        assert run.wait() != 0, f"trial {trial}: the kill must land before the run ends"
        landed.append(_done(work))
        assert _tree_bytes(out) == before, f"trial {trial}: the old output changed"
    assert max(landed) >= 20, landed  # kills landed mid-run, not only at start-up
    assert _run_script(out, "overwrite", 0).wait() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]
    reference = tmp_path / "ref.zarr"
    assert _run_script(reference, "fresh", 0).wait() == 0
    assert io.load(out).numpy().tobytes() == io.load(reference).numpy().tobytes()
    assert _tree_bytes(out) != before


def test_a_second_run_on_an_output_in_use_fails_at_once_and_the_first_finishes(tmp_path, capsys):
    out = tmp_path / "o.zarr"
    first = _run_script(out, "fresh", 0.15)  # ~10 s: the three refusals below land while it runs
    deadline = time.monotonic() + 60
    while not _done(tmp_path / ".o.zarr.volsr-partial.zarr") and time.monotonic() < deadline:
        time.sleep(0.05)
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    started = time.monotonic()
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert main(["upsample", str(source), str(out), "--scale", "1,1,2", "--model", "linear", *extra]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "being written by another run" in error, error
    assert time.monotonic() - started < 30
    assert first.wait() == 0
    reference = tmp_path / "ref.zarr"
    assert _run_script(reference, "fresh", 0).wait() == 0
    assert io.load(out).numpy().tobytes() == io.load(reference).numpy().tobytes()


def test_concurrent_resumes_one_runs_the_other_is_refused_and_the_result_is_exact(tmp_path):
    out = tmp_path / "o.zarr"
    first = _run_script(out, "fresh", 0.05)
    while _done(tmp_path / ".o.zarr.volsr-partial.zarr") < 3 and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumes = [_run_script(out, "resume", 0.02) for _ in range(2)]
    codes = sorted(run.wait() for run in resumes)
    assert codes[0] == 0, codes  # one finished; the other either was refused (exit 1) or found it done
    if codes[1] != 0:
        assert codes[1] == 1
        assert _run_script(out, "resume", 0).wait() == 0
    reference = tmp_path / "ref.zarr"
    assert _run_script(reference, "fresh", 0).wait() == 0
    assert io.load(out).numpy().tobytes() == io.load(reference).numpy().tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr", "ref.zarr"]


def test_a_finished_zarr_output_holds_only_zarr_content_and_its_run_record(tmp_path):
    import warnings

    import zarr

    out = upsample_to_store(_volume(), tmp_path / "o.zarr", scale=(1, 1, 2), model="linear",
                            options=EngineOptions(quiet=True))
    assert not (out / MANIFEST_NAME).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = zarr.open_group(out, mode="r")
        assert group["0"].shape == (12, 10, 12)
    assert group.attrs[RUN_ATTRIBUTE]["model"]["name"] == "linear"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]


def test_resume_of_a_finished_output_only_resumes(tmp_path):
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    kwargs = dict(scale=(1, 1, 2), options=EngineOptions(chunks=(4, 4, 4), quiet=True))
    zarr_out = upsample_to_store(source, tmp_path / "o.zarr", model="linear", **kwargs)
    before = _tree_bytes(zarr_out)
    assert upsample_to_store(source, zarr_out, model="linear", resume=True, **kwargs) == zarr_out  # done
    with pytest.raises(VolsrError, match="the model differs"):
        upsample_to_store(source, zarr_out, model="nearest", resume=True, **kwargs)
    assert _tree_bytes(zarr_out) == before
    for name in ("o.nii.gz", "o.h5:/sr"):
        out = upsample_to_store(source, tmp_path / name, model="linear", **kwargs)
        content = out.read_bytes()
        with pytest.raises(VolsrError, match="is a finished output, not an unfinished run"):
            upsample_to_store(source, tmp_path / name, model="nearest", resume=True, **kwargs)
        assert out.read_bytes() == content


def test_resume_refuses_changed_voxels_with_size_and_mtime_restored(tmp_path):
    source = tmp_path / "in.nii"
    io.save(_volume(), source)
    kwargs = dict(scale=(1, 1, 2), model="cubic", options=EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True))
    original = store_module.write_result
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "write_result", _disk_full_at(3))
        with pytest.raises(OSError, match="No space left"):
            upsample_to_store(source, tmp_path / "o.zarr", **kwargs)
    assert store_module.write_result is original
    stat = source.stat()
    data = bytearray(source.read_bytes())
    data[-5] ^= 0xFF  # one voxel's byte, same size
    source.write_bytes(bytes(data))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(VolsrError, match=r"the input differs .*sha256"):
        upsample_to_store(source, tmp_path / "o.zarr", resume=True, **kwargs)


def test_leftover_temporary_files_are_removed_by_the_next_run(tmp_path):
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    kwargs = dict(scale=(1, 1, 2), model="linear", options=EngineOptions(quiet=True))
    # A kill during the final write leaves a hidden temporary file of the output's size.
    leftover = tmp_path / ".o.nii.gz.tmp-0123abcd"
    leftover.write_bytes(b"\0" * 4096)
    upsample_to_store(source, tmp_path / "o.nii.gz", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "o.nii.gz"]


def test_a_manifest_of_the_wrong_shape_is_refused_in_one_line(tmp_path, capsys):
    volume = _volume()
    kwargs = dict(scale=(1, 1, 2), model="cubic", options=EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True))
    work = tmp_path / ".a.zarr.volsr-partial.zarr"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "write_result", _disk_full_at(3))
        with pytest.raises(OSError, match="No space left"):
            upsample_to_store(volume, tmp_path / "a.zarr", **kwargs)
    good = json.loads((work / MANIFEST_NAME).read_text())
    bad_records = [
        {**good, "tasks": good["tasks"] + 8},
        {**good, "done": good["done"][:-2]},
        {**good, "header": ["not", "sections"]},
        {**good, "state": {**good["state"], "input_scale": "x"}},
        {**good, "volsr_manifest": 1},
        [],
    ]
    for record in bad_records:
        (work / MANIFEST_NAME).write_text(json.dumps(record))
        with pytest.raises(VolsrError, match="cannot resume"):
            upsample_to_store(volume, tmp_path / "a.zarr", resume=True, **kwargs)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_non_finite_outputs_are_never_written(tmp_path):
    from volsr.models import get_card
    from volsr.models.interpolation import SeparableInterpolation

    class Diverges(SeparableInterpolation):
        def forward(self, x, positions):
            y = super().forward(x, positions)
            return y / (y - y)  # 0/0 everywhere

    net = Diverges(method="linear")
    net.card = get_card("linear")
    with pytest.raises(InvalidDataError, match="produced NaN or Inf"):
        upsample_to_store(_volume(), tmp_path / "o.nii.gz", scale=(1, 1, 2), model=net,
                          options=EngineOptions(quiet=True))
    # A float64 input beyond float32's range overflows when read: refused, not written.
    huge = Volume(np.full((6, 5, 4), 1e300), np.eye(4), ("i", "j", "k"))
    with pytest.raises(InvalidDataError, match="produced NaN or Inf"):
        upsample_to_store(huge, tmp_path / "p.nii.gz", scale=(1, 1, 2), model="linear",
                          options=EngineOptions(quiet=True))
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "p.nii.gz").exists()


def test_silent_phases_say_what_they_do_at_a_terminal_only(tmp_path, capsys, monkeypatch):
    from tests.engine.nets import LRNet

    kwargs = dict(scale=(1, 1, 2), model=LRNet(seed=1), options=EngineOptions(chunks=(4, 4, 4)))
    upsample_to_store(_volume(), tmp_path / "a.zarr", **kwargs)
    assert "..." not in capsys.readouterr().err  # not a terminal: no phase lines
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    upsample_to_store(_volume(), tmp_path / "b.zarr", **kwargs)
    err = capsys.readouterr().err
    assert "sizing the tiles: probe forwards measure the model's memory ..." in err
    assert "input statistics: one pass over the input" in err
    upsample_to_store(_volume(), tmp_path / "c.zarr", **with_engine(kwargs, quiet=True))
    assert capsys.readouterr().err == ""


def test_a_run_of_one_task_shows_progress_tile_by_tile(tmp_path, monkeypatch):
    import contextlib

    from volsr.engine import progress

    steps = []

    class Bar:
        def update(self, n):
            steps.append(n)

    monkeypatch.setattr(progress, "progress_bar", lambda total, **_: contextlib.nullcontext(Bar()))
    volume = _volume(shape=(12, 10, 6))
    # One task (chunks hold the whole output) of 3 x 3 x 3 = 27 tiles of 4^3 voxels or less.
    upsample_to_store(volume, tmp_path / "a.zarr", scale=(1, 1, 2), model="linear",
                      options=EngineOptions(chunks=(12, 10, 12), tile=(4, 4, 4), quiet=True))  # fmt: skip
    assert len(steps) == 27 + 1 and steps[-1] == 0  # every tile, then the task's remainder (none)
    assert sum(steps) == 12 * 10 * 12 and all(n > 0 for n in steps[:-1])


def test_resume_takes_the_output_in_any_spelling_and_a_finished_run_keeps_its_budget(tmp_path, monkeypatch):
    from volsr.engine import progress

    source = tmp_path / "in.nii.gz"
    io.save(_volume(shape=(40, 32, 16)), source)
    kwargs = dict(scale=(1, 1, 2), model="cubic", options=EngineOptions(chunks=(8, 8, 8), quiet=True))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(progress, "default_budget", lambda **_: 2**19)  # several tasks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "write_result", _disk_full_at(2))
        with pytest.raises(OSError, match="No space left"):
            upsample_to_store(source, "o.zarr", **kwargs)
    upsample_to_store(source, "./o.zarr", resume=True, **kwargs)  # another spelling: the same output
    monkeypatch.setattr(progress, "default_budget", lambda **_: 2**32)  # the machine got freer
    assert upsample_to_store(source, str(tmp_path / "o.zarr"), resume=True, **kwargs) == tmp_path / "o.zarr"
    assert finished_header(tmp_path / "o.zarr")["options"]["budget_bytes"] == 2**19


def test_an_unfinished_run_is_refused_before_any_planning_or_hashing(tmp_path, monkeypatch):
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    (tmp_path / ".o.zarr.volsr-partial.zarr").mkdir()

    def no_work(*args, **kwargs):
        raise AssertionError("planned or hashed before refusing")

    monkeypatch.setattr(store_module, "plan_run", no_work)
    monkeypatch.setattr(store_module, "input_fingerprint", no_work)
    with pytest.raises(OutputExistsError, match="is unfinished .*--resume"):
        upsample_to_store(source, tmp_path / "o.zarr", scale=(1, 1, 2), model="linear",
                          options=EngineOptions(quiet=True))
    io.save(_volume(), tmp_path / "done.nii.gz")
    with pytest.raises(VolsrError, match="is a finished output, not an unfinished run"):
        upsample_to_store(source, tmp_path / "done.nii.gz", scale=(1, 1, 2), model="linear", resume=True,
                          options=EngineOptions(quiet=True))  # fmt: skip


def test_an_output_inside_an_input_store_is_refused(tmp_path):
    store = tmp_path / "w.zarr"
    io.save(_volume(), store)
    with pytest.raises(OutputExistsError, match="would replace the input file"):
        upsample_to_store(store, store / "sr.zarr", scale=(1, 1, 2), model="linear",
                          options=EngineOptions(quiet=True))
