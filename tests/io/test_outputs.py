"""volsr.io.outputs: one writer per output (lock), replace only by a complete successor."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from volsr.io.outputs import (
    LockedError,
    clean_leftovers,
    lock_path,
    output_lock,
    replace_with,
    temporary_sibling,
)

_HOLD = """
import sys, time
from volsr.io.outputs import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_process_is_refused_at_once_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "o.zarr"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        owner = json.loads(lock_path(out).read_text())
        assert owner["pid"] == holder.pid and owner["host"] == socket.gethostname()
        with pytest.raises(LockedError, match=rf"being written by another run \(pid {holder.pid} on"):
            with output_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock is stale (same host, pid gone) and is taken over.
    assert lock_path(out).exists()
    with output_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_a_lock_held_on_another_host_is_respected_and_the_message_names_the_file(tmp_path):
    out = tmp_path / "o.nii.gz"
    lock_path(out).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": None}))
    with pytest.raises(LockedError, match=r"pid 1 on elsewhere\.example.*delete .*\.o\.nii\.gz\.volsr-lock"):
        with output_lock(out):
            pass


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    out = tmp_path / "o.h5"
    # This process's pid with another start time: the original owner is gone.
    lock_path(out).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "1"}))
    with output_lock(out):
        pass


def test_an_empty_lock_is_stale_only_after_a_grace_period(tmp_path):
    out = tmp_path / "o.zarr"
    lock_path(out).touch()
    with pytest.raises(LockedError, match="an unknown process"):
        with output_lock(out):
            pass
    os.utime(lock_path(out), (0, 0))
    with output_lock(out):
        pass


def test_the_lock_is_reentrant_in_one_process_and_released_on_error(tmp_path):
    out = tmp_path / "o.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with output_lock(out):
            with output_lock(out):
                assert lock_path(out).exists()
            assert lock_path(out).exists()
            raise RuntimeError("boom")
    assert not lock_path(out).exists()


def test_replace_with_swaps_a_directory_and_leaves_nothing_behind(tmp_path):
    old, new = tmp_path / "o.zarr", tmp_path / ".o.zarr.volsr-partial.zarr"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    replace_with(new, old)
    assert (old / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]


def test_clean_leftovers_puts_back_an_old_output_whose_successor_never_arrived(tmp_path):
    out = tmp_path / "o.zarr"
    aside = tmp_path / ".o.zarr.old-1234"
    aside.mkdir()
    (aside / "a").write_text("old")
    temporary_sibling(out, "0123abcd").write_text("partial")
    removed = clean_leftovers(out)
    assert (out / "a").read_text() == "old"
    assert [p.name for p in removed] == [".o.zarr.tmp-0123abcd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]
    # Once the output is back, an old copy beside it is garbage.
    aside.mkdir()
    clean_leftovers(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]


def test_clean_leftovers_touches_only_this_outputs_files(tmp_path):
    out = tmp_path / "o[1].nii"
    others = [tmp_path / ".o1.nii.tmp-0123abcd", tmp_path / ".other.nii.tmp-0123abcd", tmp_path / "o[1].nii"]
    for path in others:
        path.write_text("keep")
    mine = temporary_sibling(out, "89abcdef")
    mine.write_text("partial")
    assert clean_leftovers(out) == [mine]
    assert all(path.exists() for path in others)


def test_paths_are_siblings(tmp_path):
    assert lock_path(tmp_path / "x" / "o.zarr") == Path(tmp_path / "x" / ".o.zarr.volsr-lock")


def test_another_thread_of_this_process_is_another_writer(tmp_path):
    import threading

    out, seen = tmp_path / "t.zarr", []

    def second():
        try:
            with output_lock(out):
                seen.append("took it")
        except LockedError as error:
            seen.append(str(error))

    with output_lock(out):
        worker = threading.Thread(target=second)
        worker.start()
        worker.join()
    assert len(seen) == 1 and "being written by another run" in seen[0]
    assert not lock_path(out).exists()


def test_replace_with_replaces_a_link_to_a_store_not_the_store(tmp_path):
    real, link, new = tmp_path / "real.zarr", tmp_path / "o.zarr", tmp_path / ".o.zarr.tmp-0123abcd"
    real.mkdir()
    (real / "a").write_text("old")
    link.symlink_to(real)
    new.mkdir()
    (new / "a").write_text("new")
    replace_with(new, link)
    assert not link.is_symlink() and (link / "a").read_text() == "new"
    assert (real / "a").read_text() == "old"


def test_discard_renames_before_it_deletes(tmp_path, monkeypatch):
    from volsr.io import outputs

    store = tmp_path / ".o.nii.gz.volsr-partial.zarr"
    (store / "c").mkdir(parents=True)
    (store / "c" / "0").write_text("chunk")

    def killed(path):
        raise KeyboardInterrupt  # a kill in the middle of the delete

    monkeypatch.setattr(outputs, "_remove", killed)
    with pytest.raises(KeyboardInterrupt):
        outputs.discard(store)
    assert not store.exists()  # nothing left under the name a resume trusts
    monkeypatch.undo()
    assert len(clean_leftovers(store)) == 1 and list(tmp_path.iterdir()) == []


def _envi_pair(folder, value, dtype):
    import numpy as np

    from volsr import io
    from volsr.volume import Volume

    cube = Volume(np.full((4, 5, 3), value, dtype), np.eye(4), ("i", "j", "band"))
    io.save(cube, folder / "cube.hdr", overwrite=True)


def test_an_envi_overwrite_failing_between_its_renames_keeps_the_old_pair(tmp_path, monkeypatch):
    import numpy as np

    from volsr import io
    from volsr.io import outputs

    _envi_pair(tmp_path, 1, np.uint16)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace, calls = os.replace, []

    def header_rename_fails(source, target):
        calls.append(Path(target).name)
        if Path(target).name == "cube.hdr" and ".tmp-" in Path(source).name:
            raise KeyboardInterrupt  # Ctrl-C after the binary is in, before the header
        real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", header_rename_fails)
    with pytest.raises(KeyboardInterrupt):
        _envi_pair(tmp_path, 2.5, np.float32)
    monkeypatch.undo()
    assert "cube.img" in calls  # the binary had been renamed in
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert io.load(tmp_path / "cube.hdr").numpy().tolist() == np.full((4, 5, 3), 1).tolist()


def test_a_kill_inside_a_paired_replace_is_rolled_back_by_the_next_run(tmp_path, monkeypatch):
    import numpy as np

    from volsr import io
    from volsr.io import outputs

    _envi_pair(tmp_path, 1, np.uint16)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def killed_at_the_header(source, target):
        if Path(target).name == "cube.hdr" and ".tmp-" in Path(source).name:
            raise SystemExit("killed")  # nothing after this line runs in a real kill
        real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", killed_at_the_header)
    monkeypatch.setattr(outputs, "_roll_back", lambda journal: None)  # a kill runs no handler
    with pytest.raises(SystemExit):
        _envi_pair(tmp_path, 2.5, np.float32)
    monkeypatch.undo()
    assert (tmp_path / ".cube.hdr.volsr-swap").exists()  # the journal of the unfinished swap
    clean_leftovers(tmp_path / "cube.hdr")  # what the next run on this output does first
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert io.load(tmp_path / "cube.hdr").dtype == np.uint16
