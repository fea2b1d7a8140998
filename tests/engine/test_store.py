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

from volsr import io
from volsr.cli import main
from volsr.engine import store as store_module
from volsr.engine import upsample_to_store
from volsr.engine.manifest import MANIFEST_NAME
from volsr.errors import OutputExistsError, VolsrError
from volsr.volume import Volume

ROOT = Path(__file__).resolve().parents[2]


def _volume(seed=0, shape=(12, 10, 6)):
    return Volume(np.random.default_rng(seed).random(shape, dtype=np.float32), np.eye(4), ("i", "j", "k"))


def _run_script(out, mode, delay):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/engine/_slow_run.py"), str(out), mode, str(delay)],
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
    while _done(killed) < 5 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert uninterrupted.wait() == 0
    assert 5 <= _done(killed) < 64, "the kill must land mid-run"
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
    kwargs = dict(scale=(1, 1, 2), model="cubic", chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True)
    monkeypatch.setattr(store_module, "write_result", _disk_full_at(3))
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(volume, tmp_path / "a.zarr", **kwargs)
    monkeypatch.setattr(store_module, "write_result", original)
    with pytest.raises(OutputExistsError, match="output exists"):
        upsample_to_store(volume, tmp_path / "a.zarr", **kwargs)
    upsample_to_store(volume, tmp_path / "a.zarr", resume=True, **kwargs)
    upsample_to_store(volume, tmp_path / "b.zarr", **kwargs)
    assert np.array_equal(io.load(tmp_path / "a.zarr").numpy(), io.load(tmp_path / "b.zarr").numpy())


def test_resume_refuses_changed_input_model_or_options(tmp_path):
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    out = tmp_path / "o.zarr"
    upsample_to_store(source, out, scale=(1, 1, 2), model="linear", chunks=(4, 4, 4), quiet=True)
    with pytest.raises(VolsrError, match=r"the options differs .*tile"):
        upsample_to_store(source, out, scale=(1, 1, 2), model="linear", chunks=(4, 4, 4),
                          tile=(4, 4, 4), resume=True, quiet=True)  # fmt: skip
    with pytest.raises(VolsrError, match="the model differs"):
        upsample_to_store(source, out, scale=(1, 1, 2), model="nearest", chunks=(4, 4, 4),
                          resume=True, quiet=True)  # fmt: skip
    io.save(_volume(seed=1), source, overwrite=True)
    with pytest.raises(VolsrError, match="the input differs"):
        upsample_to_store(source, out, scale=(1, 1, 2), model="linear", chunks=(4, 4, 4),
                          resume=True, quiet=True)  # fmt: skip


def test_two_dask_workers_equal_one_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    volume = _volume(shape=(14, 9, 5))
    kwargs = dict(scale=(1, 2, 2.5), model="cubic", chunks=(8, 8, 8), tile=(8, 8, 8), quiet=True)
    one = upsample_to_store(volume, tmp_path / "one.zarr", **kwargs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:  # fmt: skip
        two = upsample_to_store(volume, tmp_path / "two.zarr", scheduler=cluster.scheduler_address, **kwargs)
    np.testing.assert_allclose(io.load(two).numpy(), io.load(one).numpy(), rtol=0, atol=1e-6)


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
    kwargs = dict(scale=(1, 1, 2), model="linear", chunks=(64, 64, 64), tile=(64, 64, 64), quiet=True)
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
    kwargs = dict(scale=(1, 1, 2), model="cubic", chunks=(8, 8, 8), quiet=True)
    monkeypatch.setattr(progress, "default_budget", lambda **_: 2**19)  # 20 tasks
    monkeypatch.setattr(store_module, "write_result", _disk_full_at(2))
    with pytest.raises(OSError, match="No space left"):
        upsample_to_store(volume, tmp_path / "a.zarr", **kwargs)
    first = json.loads((tmp_path / "a.zarr" / MANIFEST_NAME).read_text())
    assert first["state"]["budget_bytes"] == 2**19
    monkeypatch.setattr(store_module, "write_result", original)
    monkeypatch.setattr(progress, "default_budget", lambda **_: 2**32)  # one task, if planned anew
    upsample_to_store(volume, tmp_path / "a.zarr", resume=True, **kwargs)
    upsample_to_store(volume, tmp_path / "b.zarr", max_memory=2**19, **kwargs)
    assert np.array_equal(io.load(tmp_path / "a.zarr").numpy(), io.load(tmp_path / "b.zarr").numpy())
    upsample_to_store(volume, tmp_path / "c.zarr", **kwargs)  # fresh: the new default, one tile
    c = json.loads((tmp_path / "c.zarr" / MANIFEST_NAME).read_text())
    assert c["header"]["options"]["plan"]["tile"] != first["header"]["options"]["plan"]["tile"]
