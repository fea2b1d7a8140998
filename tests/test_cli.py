"""The command-line contract: exit status, one-line errors, no partial output, inputs untouched.

Every bad input is its own case. Each runs ``volsr.cli.main`` in-process and checks, besides
the message, that the output folder gains no file (not even a hidden ``.name.tmp-*``) and
that every input keeps its bytes and modification time. One test runs the installed console
script to prove the same at process level.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from volsr import commands
from volsr.cli import build_parser, main
from volsr.models.weights import WEIGHTS_DIR

AFFINE = np.array(
    [[1.0, 0.0, 0.0, -5.0], [0.0, 1.2, 0.0, 3.0], [0.0, 0.0, 1.5, 2.0], [0.0, 0.0, 0.0, 1.0]]
)
SHAPE = (10, 12, 16)
#: Voxels set to NaN/Inf in ``nan.nii.gz`` (the message must give this count).
NONFINITE = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with every (good and bad) input file, shared by the module's tests."""
    folder = tmp_path_factory.mktemp("inputs")
    data = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), folder / "good.nii.gz")
    nib.save(nib.Nifti1Image(data, AFFINE), folder / "good.nii")
    raw = (folder / "good.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (folder / "text.nii").write_text("this is not a NIfTI file\n")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2, 2), np.float32), AFFINE), folder / "five.nii.gz")
    bad = data.copy()
    bad[0, 0, :3] = np.nan
    bad[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(bad, AFFINE), folder / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((3, 0, 4), np.float32), AFFINE), folder / "zero.nii")
    header = bytearray((folder / "good.nii").read_bytes())
    struct.pack_into("<h", header, 252, 0)  # qform_code: unknown
    struct.pack_into("<h", header, 254, 1)  # sform_code: scanner, so nibabel uses the sform
    struct.pack_into("<4f", header, 312, 0.0, 0.0, 0.0, 0.0)  # srow_z = 0: singular
    (folder / "singular.nii").write_bytes(bytes(header))
    (folder / "good.xyz").write_bytes(b"\0" * 64)
    scipy.io.savemat(folder / "cube.mat", {"cube": np.ones((12, 12, 7))})
    with h5py.File(folder / "volume.h5", "w") as handle:
        handle["data"] = data
    zarr_out = main(["convert", str(folder / "good.nii"), str(folder / "good.zarr")])
    assert zarr_out == 0
    (folder / "junk.safetensors").write_bytes(b"not a safetensors file")
    shutil.copy(WEIGHTS_DIR / "meta_srgan_t1.json", folder / "junk.json")  # a valid sidecar
    (folder / "lonely.safetensors").write_bytes(b"no sidecar beside it")
    nib.save(nib.Nifti1Image(data[:, :, 0], AFFINE), folder / "slice.nii.gz")
    with h5py.File(folder / "plain.mat", "w") as handle:  # HDF5 named .mat, not written by MATLAB
        handle["cube"] = np.zeros((4, 5, 6), np.int16)
    return folder


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (hidden ones included): bytes and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _status(argv: list[str]) -> int:
    """``main(argv)``; argparse rejects bad option text with SystemExit (documented)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


Argv = Callable[[Path, Path], list[str]]

BAD_INPUTS: list[tuple[str, Argv, str]] = [
    ("missing-file", lambda i, o: ["convert", str(i / "nope.nii.gz"), str(o / "x.nii.gz")],
     "no such file"),
    ("truncated-gzip", lambda i, o: ["upsample", str(i / "truncated.nii.gz"), str(o / "x.nii.gz"),
                                     "--scale", "2"], "truncated"),
    ("text-named-nii", lambda i, o: ["convert", str(i / "text.nii"), str(o / "x.zarr")],
     "not a readable NIfTI file"),
    ("five-dimensional", lambda i, o: ["convert", str(i / "five.nii.gz"), str(o / "x.nii.gz")],
     "is not 2D, 3D or 4D"),
    ("nonfinite", lambda i, o: ["upsample", str(i / "nan.nii.gz"), str(o / "x.nii.gz"),
                                "--scale", "2"], f"{NONFINITE} NaN/Inf voxels"),
    ("zero-size-axis", lambda i, o: ["convert", str(i / "zero.nii"), str(o / "x.nii.gz")],
     "zero-size axis"),
    ("singular-affine", lambda i, o: ["convert", str(i / "singular.nii"), str(o / "x.nii.gz")],
     "singular"),
    ("unknown-input-suffix", lambda i, o: ["info", str(i / "good.xyz")], "unknown file type"),
    ("unknown-output-suffix", lambda i, o: ["convert", str(i / "good.nii"), str(o / "x.xyz")],
     "unknown file type"),
    ("output-exists", lambda i, o: ["convert", str(i / "good.nii"), str(o / "existing.nii.gz")],
     "output exists"),
    ("missing-output-folder", lambda i, o: ["degrade", str(i / "good.nii"),
                                            str(o / "no" / "x.nii.gz"), "--factor", "1,1,2"],
     "output folder does not exist"),
    ("bad-scale-text", lambda i, o: ["upsample", str(i / "good.nii"), str(o / "x.nii.gz"),
                                     "--scale", "2,x"], "expected comma-separated numbers"),
    ("scale-count", lambda i, o: ["upsample", str(i / "good.nii"), str(o / "x.nii.gz"),
                                  "--scale", "1,2"], "needs 1 or 3 values"),
    ("scale-out-of-range", lambda i, o: ["upsample", str(i / "good.nii"), str(o / "x.nii.gz"),
                                         "--scale", "1,1,32", "--model", "linear"],
     "supports per-axis scales in [0.5, 16.0]"),
    ("unknown-model", lambda i, o: ["upsample", str(i / "good.nii"), str(o / "x.nii.gz"),
                                    "--scale", "2", "--model", "cubc"], "did you mean cubic"),
    ("slice-two-axes", lambda i, o: ["degrade", str(i / "good.nii"), str(o / "x.nii.gz"),
                                     "--factor", "1,2,2", "--method", "slice"],
     "thickens exactly one axis"),
    ("fill-then-bad-scale", lambda i, o: ["upsample", str(i / "nan.nii.gz"), str(o / "x.nii.gz"),
                                          "--fill-nonfinite", "0", "--scale", "32"],
     "supports per-axis scales"),
    ("evaluate-too-small", lambda i, o: ["evaluate", "--reference", str(i / "good.nii"),
                                         "--prediction", str(i / "good.nii.gz")],
     "11-voxel window"),
    ("empty-mat-key", lambda i, o: ["upsample", str(i / "cube.mat") + ":", str(o / "x.mat"),
                                    "--scale", "2"], "empty key after ':'"),
    ("missing-hdf5-key", lambda i, o: ["convert", str(i / "volume.h5") + ":/nokey",
                                       str(o / "x.nii.gz")], "no dataset '/nokey'"),
    # The output is the input: --overwrite must not destroy it (whatever the key or spelling).
    ("output-is-input-zarr", lambda i, o: ["upsample", str(i / "good.zarr"), str(i / "good.zarr"),
                                           "--scale", "2", "--model", "linear", "--overwrite"],
     "would replace the input file"),
    ("output-is-input-nifti", lambda i, o: ["degrade", str(i / "good.nii"), str(i / "." / "good.nii"),
                                            "--factor", "1,1,2", "--overwrite"],
     "would replace the input file"),
    ("output-in-input-hdf5", lambda i, o: ["convert", str(i / "volume.h5") + ":/data",
                                           str(i / "volume.h5") + ":/copy", "--overwrite"],
     "would replace the input file"),
    ("fill-with-nan", lambda i, o: ["upsample", str(i / "nan.nii.gz"), str(o / "x.nii.gz"),
                                    "--scale", "2", "--fill-nonfinite", "nan"],
     "expected a finite number"),
    ("corrupt-weights", lambda i, o: ["upsample", str(i / "good.nii"), str(o / "x.nii.gz"),
                                      "--scale", "2", "--model", str(i / "junk.safetensors")],
     "not a valid safetensors file"),
    ("weights-without-sidecar", lambda i, o: ["upsample", str(i / "good.nii"), str(o / "x.nii.gz"),
                                              "--scale", "2", "--model", str(i / "lonely.safetensors")],
     "weights sidecar not found"),
    ("mri-network-on-an-image", lambda i, o: ["upsample", str(i / "slice.nii.gz"), str(o / "x.nii.gz"),
                                              "--scale", "1,2", "--model", "mdcsrn.t1"],
     "mdcsrn.t1 takes single-channel 3-D volumes; this input has 2 spatial axes"),
    ("degrade-factor-below-1", lambda i, o: ["degrade", str(i / "good.nii"), str(o / "x.nii.gz"),
                                             "--factor", "1,1,-4"], "must be finite and >= 1"),
    ("overlap-without-gaussian-blend", lambda i, o: ["upsample", str(i / "good.nii"), str(o / "x.nii.gz"),
                                                     "--scale", "2", "--model", "linear", "--overlap", "0.5"],
     "--overlap applies to --blend gaussian only"),
    ("evaluate-json-folder-missing", lambda i, o: ["evaluate", "--reference", str(i / "good.nii"),
                                                   "--prediction", str(i / "good.nii"), "--json",
                                                   str(o / "no" / "m.json")], "--json folder does not exist"),
    ("plain-hdf5-named-mat", lambda i, o: ["convert", str(i / "plain.mat") + ":cube", str(o / "x.zarr")],
     "has no MATLAB_class attribute (plain HDF5, not written by MATLAB)"),
    ("demo-missing-parent", lambda i, o: ["demo", str(o / "no" / "demo")], "output folder does not exist"),
    ("evaluate-nonfinite", lambda i, o: ["evaluate", "--reference", str(i / "good.nii"),
                                         "--prediction", str(i / "nan.nii.gz")],
     "NaN/Inf voxels in the prediction; metrics are undefined"),
    # evaluate --json writes a file too: never over one of the files it reads.
    ("evaluate-json-over-reference", lambda i, o: ["evaluate", "--reference", str(i / "good.nii"),
                                                   "--prediction", str(i / "good.nii"), "--json",
                                                   str(i / "." / "good.nii")], "which this run reads"),
    ("evaluate-json-over-mask", lambda i, o: ["evaluate", "--reference", str(i / "good.nii"),
                                              "--prediction", str(i / "good.nii"), "--mask",
                                              str(i / "good.nii.gz"), "--json", str(i / "good.nii.gz")],
     "which this run reads"),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), [pytest.param(a, f, id=name) for name, a, f in BAD_INPUTS]
)
def test_user_error_contract(
    argv: Argv, fragment: str, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "existing.nii.gz").write_bytes(b"keep me")
    arguments = argv(inputs, tmp_path)
    before_inputs, before_outputs = _files(inputs), _files(tmp_path)
    status = _status(arguments)
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"volsr {arguments[0]}: error:")
    assert fragment in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert _files(tmp_path) == before_outputs  # nothing written, no hidden temporaries
    assert _files(inputs) == before_inputs  # inputs keep bytes and mtime


def test_an_unfinished_run_is_named_by_info_and_upsample(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / ".sr.zarr.volsr-partial.zarr"
    work.mkdir()
    assert _status(["info", str(tmp_path / "sr.zarr")]) == 2
    assert "is an unfinished run" in capsys.readouterr().err
    argv = ["upsample", str(inputs / "good.nii"), str(tmp_path / "sr.zarr"), "--scale", "2", "--model", "linear"]
    assert _status(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unfinished" in error and "--resume" in error


def test_overwrite_replaces_an_existing_output(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"old")
    assert main(["convert", str(inputs / "good.nii"), str(target), "--overwrite"]) == 0
    assert "wrote" in capsys.readouterr().out
    expected = nib.load(inputs / "good.nii")
    written = nib.load(target)
    np.testing.assert_array_equal(written.get_fdata(), expected.get_fdata())
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: permission bits do not stop root from writing",
)
def test_read_only_output_folder_is_refused(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        status = main(["convert", str(inputs / "good.nii"), str(folder / "x.nii.gz")])
        contents = list(folder.iterdir())
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("volsr convert: error: output folder is not writable")
    assert contents == []


def test_unwritable_output_folder_is_refused_even_as_root(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same check with os.access answering as it would for a non-root user on a 0o555 folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access

    def access(path: os.PathLike[str] | str, mode: int) -> bool:
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    status = main(["upsample", str(inputs / "good.nii"), str(folder / "x.nii.gz"), "--scale", "2"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [f"volsr upsample: error: output folder is not writable: {folder}"]
    assert list(folder.iterdir()) == []


def test_a_nifti_output_larger_than_memory_is_refused_before_any_work(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import collections

    from volsr.engine import progress

    small = collections.namedtuple("Memory", "total available")(4096, 4096)
    monkeypatch.setattr(progress.psutil, "virtual_memory", lambda: small)
    status = main(["upsample", str(inputs / "good.nii"), str(tmp_path / "x.nii.gz"), "--scale", "2",
                   "--model", "linear", "--max-memory", "1G"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1
    assert "in memory to be written as NIfTI, more than this machine has (4.0 KiB)" in err
    assert list(tmp_path.iterdir()) == []


def test_interrupt_is_one_line_and_says_how_to_resume(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(args: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_upsample", interrupted)
    status = main(["upsample", str(inputs / "good.nii"), str(tmp_path / "x.nii.gz"), "--scale", "2"])
    err = capsys.readouterr().err
    assert status == 130
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("volsr upsample: interrupted") and "--resume" in err


def test_a_warning_is_one_line_without_source(inputs: Path) -> None:
    script = (
        "import sys, warnings\n"
        "from volsr import cli, commands\n"
        "def warns(args):\n"
        "    warnings.warn('careful', UserWarning, stacklevel=1)\n"
        "    return 'done'\n"
        "commands.run_info = warns\n"
        "sys.exit(cli.main(['info', sys.argv[1]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(inputs / "good.nii")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "volsr: warning: careful\n")


def test_os_failure_exits_1_with_system_error(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(args: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(commands, "run_convert", full_disk)
    status = main(["convert", str(inputs / "good.nii"), str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.splitlines() == ["volsr convert: system error: [Errno 28] No space left on device"]


def test_missing_subcommand_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert _status([]) == 2
    assert capsys.readouterr().err.startswith("volsr: error:")
    assert _status(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("info", "convert", "degrade", "upsample", "evaluate", "models", "demo"):
        assert name in out


def test_parser_reads_per_axis_lists() -> None:
    args = build_parser().parse_args(
        ["upsample", "a.nii", "b.zarr", "--scale", "1,1,2.5", "--chunks", "8,8,4"]
    )
    assert args.scale == (1.0, 1.0, 2.5)
    assert args.chunks == (8, 8, 4)
    assert args.target_spacing is None


@pytest.mark.parametrize("chunks", ["0,4,4", "4,x"])
def test_bad_chunks_are_refused(
    chunks: str, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _status(["convert", str(inputs / "good.nii"), str(tmp_path / "x.zarr"),
                      "--chunks", chunks])
    assert status == 2
    assert capsys.readouterr().err.startswith("volsr convert: error: argument --chunks:")
    assert list(tmp_path.iterdir()) == []


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "volsr"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    if shutil.which("volsr"):
        return [str(shutil.which("volsr"))]
    return [sys.executable, "-m", "volsr.cli"]


def test_console_script_exit_status_and_stderr(inputs: Path, tmp_path: Path) -> None:
    command = _console_script()
    failed = subprocess.run(
        [*command, "upsample", str(inputs / "nope.nii.gz"), str(tmp_path / "x.nii.gz"),
         "--scale", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        f"volsr upsample: error: no such file: {inputs / 'nope.nii.gz'}"
    ]
    assert failed.stdout == ""
    assert list(tmp_path.iterdir()) == []
    worked = subprocess.run(
        [*command, "info", str(inputs / "good.nii"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert worked.returncode == 0, worked.stderr
    assert '"shape"' in worked.stdout


def test_stdout_closed_by_the_reader_is_not_an_error(tmp_path: Path) -> None:
    # `volsr info scan.nii.gz | head -1`: the reader may leave before volsr writes.
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), tmp_path / "x.nii")
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "volsr.cli", "info", str(tmp_path / "x.nii")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
