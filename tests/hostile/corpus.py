"""A corpus of hostile inputs for the ``volsr`` command line, and the runner that judges them.

Issue: "Never lose data, never read what it should not". Each :class:`Case` writes its input
files into an empty folder (and, for cases about files volsr must not follow, into the
sibling folder :func:`outside`) and returns the ``volsr`` arguments. :func:`run_case` runs
them in a separate process (timeout, address-space limit), either the console script
(:class:`ConsoleScript`) or a fork of an interpreter that imported volsr once
(:class:`ForkServer`, ~1 s per case instead of ~3), and checks the contract:

- a user error exits 2 with exactly one line on stderr and no traceback, and leaves no file
  behind (no output, no hidden ``.NAME.tmp-*`` or ``.NAME.volsr-partial.zarr``);
- a valid input exits 0 and writes only its output;
- a system failure exits 1 with one line (a failure of the case unless it expects it);
- every file that existed before the run (inputs, and an existing output a refusal must
  keep) has the same bytes afterwards, in the case folder and in the outside folder;
- a timeout is a hang, a negative return code a crash (signal);
- a case marked ``foreign`` succeeding means volsr read a file outside what it was given.

Used by ``tests/test_hostile.py`` (parametrised over :data:`CASES`) and ``bench/hostile.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import scipy.io

__all__ = ["CASES", "Case", "ConsoleScript", "ForkServer", "Launcher", "Outcome", "outside", "run_case"]

#: Seconds a case may run before it counts as a hang.
TIMEOUT_S = 60.0
#: Address-space limit of each run (bytes): a runaway allocation fails instead of swapping
#: the machine. Override with ``VOLSR_HOSTILE_AS_BYTES`` (0: no limit).
ADDRESS_SPACE = int(os.environ.get("VOLSR_HOSTILE_AS_BYTES", 4 << 30))
SHAPE = (8, 8, 4)
LINEAR = ["--scale", "2", "--model", "linear", "--quiet"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile input.

    Parameters
    ----------
    name : str
        Short id (pytest id, table row).
    make : callable ``(folder) -> argv``
        Writes the inputs into ``folder`` (an empty folder; :func:`outside` gives a sibling
        for files that are not the user's) and returns the arguments after ``volsr``.
    expect : {"refused", "ok", "either"}
        Exit 2 (a clean refusal), exit 0, or either of them.
    output : str or None
        The output path, relative to ``folder``: after a success, new files may appear only
        under it. Files that exist before the run must keep their bytes in every case.
    foreign : bool
        A success would mean volsr read a file it was not given (outside the folder).
    interrupted : bool
        The case is an interrupted run: a hidden partial store may stay after a failure.
    """

    name: str
    make: Callable[[Path], list[str]]
    expect: str = "refused"
    output: str | None = "o.zarr"
    foreign: bool = False
    interrupted: bool = False


@dataclasses.dataclass
class Outcome:
    """What one run did. ``problems`` is empty when the case passed."""

    name: str
    returncode: int | None
    seconds: float
    stderr: str
    problems: list[str]
    kinds: set[str]

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


# ----------------------------------------------------------------------------------- helpers


def outside(folder: Path) -> Path:
    """The sibling folder for files that are not among the user's inputs (created)."""
    place = folder.parent / f"{folder.name}-outside"
    place.mkdir(exist_ok=True)
    return place


def _ramp(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / np.prod(shape)) + 0.1


def _nii(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> str:
    image = nib.Nifti1Image(_ramp() if data is None else data, np.eye(4) if affine is None else affine)
    nib.save(image, path)
    return str(path)


def _h5(folder: Path, name: str = "d", *, data: np.ndarray | None = None, file: str = "v.h5") -> str:
    with h5py.File(folder / file, "w") as handle:
        handle.create_dataset(name, data=_ramp() if data is None else data)
    return f"{folder / file}:/{name}"


def _setup(argv: list[str]) -> None:
    """Run volsr in-process to prepare a case (an earlier run); fail loudly if it fails."""
    from volsr.cli import main

    status = main(argv)
    if status != 0:
        raise RuntimeError(f"setup run failed with status {status}: volsr {' '.join(argv)}")


def _upsample(folder: Path, source: str, *extra: str, output: str = "o.zarr") -> list[str]:
    return ["upsample", source, f"{folder}{os.sep}{output}", *LINEAR, *extra]


def _zarr_image(path: Path, *, attrs: dict | None, shape: tuple[int, ...] = SHAPE,
                data: np.ndarray | None = None, chunks: tuple[int, ...] = (4, 4, 4),
                zarr_format: int = 3) -> None:
    """A foreign (not volsr-written) OME-Zarr group with its image at ``0``."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    array = group.create_array("0", shape=shape, chunks=chunks, dtype="f4", fill_value=0.0)
    if data is not None:
        array[...] = data
    if attrs is not None:
        group.attrs.update(attrs)


def _ngff(axes: list, version: str = "0.5", datasets: list | None = None) -> dict:
    scale = [{"type": "scale", "scale": [1.0] * len(axes)}]
    multiscale = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]
                  if datasets is None else datasets}
    return {"ome": {"version": version, "multiscales": [multiscale]}}


_ZYX = [{"name": n, "type": "space", "unit": "millimeter"} for n in "zyx"]


def _envi(folder: Path, *, fields: dict[str, str] | None = None, truncate: int = 0) -> str:
    data = _ramp().astype("<f4")  # lines x samples x bands, written BIP
    header = {"samples": "8", "lines": "8", "bands": "4", "header offset": "0",
              "file type": "ENVI Standard", "data type": "4", "interleave": "bip",
              "byte order": "0"}
    header.update(fields or {})
    text = "ENVI\n" + "".join(f"{k} = {v}\n" for k, v in header.items())
    (folder / "cube.hdr").write_text(text)
    raw = data.tobytes()
    (folder / "cube.img").write_bytes(raw[: len(raw) - truncate])
    return str(folder / "cube.hdr")


# ----------------------------------------------------------------------------------- HDF5


def _h5_external_raw(folder: Path) -> list[str]:
    raw = outside(folder) / "raw.bin"
    data = _ramp().astype("<f4")
    data.tofile(raw)
    with h5py.File(folder / "ext.h5", "w") as handle:
        handle.create_dataset("d", shape=SHAPE, dtype="<f4", external=[(str(raw), 0, data.nbytes)])
    return _upsample(folder, f"{folder / 'ext.h5'}:/d")


def _h5_external_link(folder: Path) -> list[str]:
    _h5(outside(folder), file="other.h5")
    with h5py.File(folder / "link.h5", "w") as handle:
        handle["d"] = h5py.ExternalLink(str(outside(folder) / "other.h5"), "/d")
    return _upsample(folder, f"{folder / 'link.h5'}:/d")


def _vds(path: Path, source: Path) -> None:
    layout = h5py.VirtualLayout(shape=SHAPE, dtype="f4")
    layout[...] = h5py.VirtualSource(str(source), "d", shape=SHAPE)
    with h5py.File(path, "w") as handle:
        handle.create_virtual_dataset("d", layout, fillvalue=0.0)


def _h5_vds_outside(folder: Path) -> list[str]:
    _h5(outside(folder), file="src.h5")
    _vds(folder / "vds.h5", outside(folder) / "src.h5")
    return _upsample(folder, f"{folder / 'vds.h5'}:/d")


def _h5_vds_missing(folder: Path) -> list[str]:
    _vds(folder / "vds.h5", folder / "missing.h5")
    return _upsample(folder, f"{folder / 'vds.h5'}:/d")


def _h5_vds_source_as_output(folder: Path) -> list[str]:
    _h5(folder, file="src.h5")
    _vds(folder / "vds.h5", folder / "src.h5")
    return ["upsample", f"{folder / 'vds.h5'}:/d", f"{folder / 'src.h5'}:/sr", *LINEAR, "--overwrite"]


def _h5_null(folder: Path) -> list[str]:
    with h5py.File(folder / "v.h5", "w") as handle:
        handle.create_dataset("d", data=h5py.Empty("f4"))
    return _upsample(folder, f"{folder / 'v.h5'}:/d")


def _h5_data(data: Callable[[], np.ndarray]) -> Callable[[Path], list[str]]:
    return lambda folder: _upsample(folder, _h5(folder, data=data()))


def _h5_output_key(key: str) -> Callable[[Path], list[str]]:
    return lambda folder: _upsample(folder, _nii(folder / "v.nii.gz"), output=f"o.h5:{key}")


HDF5_CASES = [
    Case("h5-external-raw-outside", _h5_external_raw, foreign=True),
    Case("h5-external-link-outside", _h5_external_link, foreign=True),
    Case("h5-vds-source-outside", _h5_vds_outside, foreign=True),
    Case("h5-vds-missing-source", _h5_vds_missing),
    Case("h5-vds-source-is-output", _h5_vds_source_as_output, output="src.h5"),
    Case("h5-null-dataspace", _h5_null),
    Case("h5-scalar", _h5_data(lambda: np.float32(1.5))),
    Case("h5-complex", _h5_data(lambda: _ramp().astype(np.complex64))),
    Case("h5-bool", _h5_data(lambda: _ramp() > 0.5), expect="ok"),
    Case("h5-float16", _h5_data(lambda: _ramp().astype(np.float16)), expect="ok"),
    Case("h5-big-endian", _h5_data(lambda: _ramp().astype(">f4")), expect="ok"),
    Case("h5-string", _h5_data(lambda: np.full(SHAPE, b"ab", dtype="S2"))),
    Case("h5-compound", _h5_data(lambda: np.zeros(SHAPE, dtype=[("a", "f4"), ("b", "f4")]))),
    Case("h5-output-key-root", _h5_output_key("/"), output="o.h5"),
    Case("h5-output-key-dotdot", _h5_output_key("/a/../d"), output="o.h5"),
]

# ----------------------------------------------------------------------------------- MATLAB


def _mat_complex(folder: Path) -> list[str]:
    scipy.io.savemat(folder / "c.mat", {"cube": _ramp() + 1j * _ramp()})
    return _upsample(folder, f"{folder / 'c.mat'}:cube")


MAT_CASES = [
    Case("mat-output-key-affine", lambda f: _upsample(f, _nii(f / "v.nii.gz"), output="o.mat:affine"),
         output="o.mat"),
    Case("mat-complex", _mat_complex),
]

# ----------------------------------------------------------------------------------- NIfTI


def _nii_patched(version: int, patch: Callable[[bytearray], None]) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        kind = nib.Nifti1Image if version == 1 else nib.Nifti2Image
        nib.save(kind(_ramp(), np.eye(4)), folder / "v.nii")
        raw = bytearray((folder / "v.nii").read_bytes())
        patch(raw)
        (folder / "v.nii").write_bytes(bytes(raw))
        return _upsample(folder, str(folder / "v.nii"))

    return make


def _negative_dim(raw: bytearray) -> None:
    struct.pack_into("<h", raw, 42, -8)  # NIfTI-1 dim[1]


def _absurd_dims(raw: bytearray) -> None:
    struct.pack_into("<3q", raw, 24, 10**6, 10**6, 10**6)  # NIfTI-2 dim[1..3] (int64)


def _nii_truncated(folder: Path) -> list[str]:
    _nii(folder / "v.nii")
    raw = (folder / "v.nii").read_bytes()
    (folder / "v.nii").write_bytes(raw[: len(raw) - 200])
    return _upsample(folder, str(folder / "v.nii"))


def _nii_big_endian(folder: Path) -> list[str]:
    header = nib.Nifti1Header(endianness=">")
    nib.save(nib.Nifti1Image(_ramp().astype(">f4"), np.eye(4), header=header), folder / "v.nii")
    return _upsample(folder, str(folder / "v.nii"))


def _nii_with(data: Callable[[], np.ndarray], affine: np.ndarray | None = None) -> Callable[[Path], list[str]]:
    return lambda folder: _upsample(folder, _nii(folder / "v.nii.gz", data(), affine))


_SHEAR = np.array([[1.0, 0.3, 0.0, 0.0], [0.0, 1.0, 0.2, 0.0], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1]])

NIFTI_CASES = [
    Case("nii-negative-dim", _nii_patched(1, _negative_dim)),
    Case("nii-absurd-dims", _nii_patched(2, _absurd_dims)),
    Case("nii-truncated", _nii_truncated),
    Case("nii-complex64", _nii_with(lambda: _ramp().astype(np.complex64))),
    Case("nii-big-endian", _nii_big_endian, expect="ok"),
    Case("nii-sheared-affine", _nii_with(_ramp, _SHEAR), expect="ok"),
    Case("nii-bool-like-uint8", _nii_with(lambda: (_ramp() > 0.5).astype(np.uint8)), expect="ok"),
]

# ----------------------------------------------------------------------------------- Zarr


def _zarr_case(attrs: Callable[[], dict | None], *, zarr_format: int = 3,
               after: Callable[[Path], None] | None = None, shape: tuple[int, ...] = SHAPE,
               chunks: tuple[int, ...] = (4, 4, 4), fill: bool = True) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        store = folder / "in.zarr"
        _zarr_image(store, attrs=attrs(), shape=shape, data=_ramp() if fill else None,
                    chunks=chunks, zarr_format=zarr_format)
        if after is not None:
            after(store)
        return _upsample(folder, str(store))

    return make


def _chunk_files(store: Path) -> list[Path]:
    image = store / "0"
    return sorted(p for p in image.rglob("*") if p.is_file() and not p.name.startswith((".", "zarr")))


def _corrupt_chunk(store: Path) -> None:
    _chunk_files(store)[0].write_bytes(b"\x28\xb5\x2f\xfd garbage, not zstd" * 4)


def _drop_chunk(store: Path) -> None:
    _chunk_files(store)[-1].unlink()


def _empty_multiscales() -> dict:
    return {"ome": {"version": "0.5", "multiscales": []}}


def _micrometer() -> dict:
    return _ngff([{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"])


def _ngff03() -> dict:  # NGFF 0.3: axes are plain strings, metadata at the top level (zarr v2)
    return {"multiscales": [{"version": "0.3", "axes": ["z", "y", "x"], "datasets": [{"path": "0"}]}]}


ZARR_CASES = [
    Case("zarr-empty-multiscales", _zarr_case(_empty_multiscales)),
    Case("zarr-empty-datasets", _zarr_case(lambda: _ngff(_ZYX, datasets=[]))),
    Case("zarr-ngff03-string-axes", _zarr_case(_ngff03, zarr_format=2), expect="either"),
    Case("zarr-corrupt-chunk", _zarr_case(lambda: _ngff(_ZYX), after=_corrupt_chunk)),
    Case("zarr-missing-chunk", _zarr_case(lambda: _ngff(_ZYX), after=_drop_chunk), expect="ok"),
    Case("zarr-micrometer-units", _zarr_case(_micrometer), expect="ok"),
    Case("zarr-declared-1e6-per-axis", _zarr_case(lambda: _ngff(_ZYX), shape=(10**6,) * 3,
                                                    chunks=(64, 64, 64), fill=False),
         expect="either"),
]

# ----------------------------------------------------------------------------------- ENVI


def _envi_case(fields: dict[str, str] | None = None, truncate: int = 0) -> Callable[[Path], list[str]]:
    return lambda folder: ["convert", _envi(folder, fields=fields, truncate=truncate), str(folder / "o.zarr")]


ENVI_CASES = [
    Case("envi-negative-header-offset", _envi_case({"header offset": "-5"})),
    Case("envi-empty-ignore-value", _envi_case({"data ignore value": "{}"}), expect="either"),
    Case("envi-truncated-binary", _envi_case(truncate=100)),
    Case("envi-data-type-99", _envi_case({"data type": "99"})),
]

# ----------------------------------------------------------------------------------- weights


def _shipped(name: str) -> Path:
    from volsr.models.weights import WEIGHTS_DIR

    return Path(WEIGHTS_DIR) / name


def _weights_absurd(folder: Path) -> list[str]:
    sidecar = json.loads(_shipped("mdcsrn_t1.json").read_text())
    sidecar["config"].update(base=10**6, growth=10**6)  # a 3x3x3 conv of 10^12 x 27 weights
    sidecar["card"]["name"] = "mdcsrn.huge"
    (folder / "huge.json").write_text(json.dumps(sidecar))
    shutil.copy(_shipped("mdcsrn_t1.safetensors"), folder / "huge.safetensors")
    return ["upsample", _nii(folder / "v.nii.gz"), str(folder / "o.zarr"), "--scale", "1,1,2",
            "--model", str(folder / "huge.safetensors"), "--quiet"]


def _weights_truncated(folder: Path) -> list[str]:
    shutil.copy(_shipped("mdcsrn_t1.json"), folder / "cut.json")
    raw = _shipped("mdcsrn_t1.safetensors").read_bytes()
    (folder / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    return ["upsample", _nii(folder / "v.nii.gz"), str(folder / "o.zarr"), "--scale", "1,1,2",
            "--model", str(folder / "cut.safetensors"), "--quiet"]


WEIGHT_CASES = [
    Case("weights-absurd-sidecar", _weights_absurd),
    Case("weights-truncated-safetensors", _weights_truncated),
]

# ----------------------------------------------------------------------------------- resume


def _interrupted_store(folder: Path, edit: Callable[[dict], None], source: str = "v.nii.gz") -> list[str]:
    """An interrupted run of ``o.zarr`` (several tasks, none done), its manifest ``edit``-ed.

    Made from a finished run: its store moved back to the run's work-store name and given
    the manifest an interrupted run has (header from the store's ``volsr_run`` record).
    """
    argv = _upsample(folder, _nii(folder / source), "--chunks", "8,8,2", "--tile", "8,8,2")
    _setup(argv)
    finished, work = folder / "o.zarr", folder / ".o.zarr.volsr-partial.zarr"
    header = json.loads((finished / "zarr.json").read_text())["attributes"]["volsr_run"]
    finished.rename(work)
    tasks = int(header["options"]["tasks"])
    record = {"volsr_manifest": 2, "header": header, "tasks": tasks, "done": "00" * ((tasks + 7) // 8),
              "state": {}, "complete": False}
    edit(record)
    (work / "volsr_manifest.json").write_text(json.dumps(record))
    return [*argv, "--resume"]


def _more_tasks(record: dict) -> None:
    record["tasks"] = int(record["tasks"]) + 64
    record["done"] = "00" * ((record["tasks"] + 7) // 8)


def _done_wrong_length(record: dict) -> None:
    record["done"] = "00" * 40


def _header_list(record: dict) -> None:
    record["header"] = [record["header"]]


def _resume_finished_nifti(folder: Path) -> list[str]:
    source = _nii(folder / "v.nii.gz")
    _setup(["upsample", source, str(folder / "o.nii.gz"), *LINEAR])
    return ["upsample", source, str(folder / "o.nii.gz"), "--scale", "2", "--model", "cubic",
            "--quiet", "--resume"]


def _resume_changed_input(folder: Path) -> list[str]:
    argv = _interrupted_store(folder, lambda record: None, source="v.nii")
    path = folder / "v.nii"
    stat = path.stat()
    nib.save(nib.Nifti1Image(_ramp()[::-1].copy(), np.eye(4)), path)  # uncompressed: same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return argv


RESUME_CASES = [
    Case("manifest-tasks-changed", lambda f: _interrupted_store(f, _more_tasks), interrupted=True),
    Case("manifest-done-wrong-length", lambda f: _interrupted_store(f, _done_wrong_length),
         interrupted=True),
    Case("manifest-header-is-a-list", lambda f: _interrupted_store(f, _header_list), interrupted=True),
    Case("resume-finished-nifti-other-options", _resume_finished_nifti, output="o.nii.gz"),
    Case("resume-input-changed-mtime-restored", _resume_changed_input, interrupted=True),
]

# ----------------------------------------------------------------------------------- misc


def _evaluate_json_reference(folder: Path) -> list[str]:
    data = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)
    reference = _nii(folder / "a.nii.gz", data)
    prediction = _nii(folder / "b.nii.gz", data * 0.9)
    return ["evaluate", "--reference", reference, "--prediction", prediction, "--json", reference]


def _self_overwrite_zarr(folder: Path) -> list[str]:
    _setup(["convert", _nii(folder / "v.nii.gz"), str(folder / "a.zarr")])
    (folder / "v.nii.gz").unlink()
    return ["upsample", str(folder / "a.zarr"), str(folder / "a.zarr"), *LINEAR, "--overwrite"]


def _one_voxel_axis(folder: Path) -> list[str]:
    # meta_srgan.t1 cannot take a 1-voxel axis kept at factor 1 (one position: no factor);
    # found only after the run, this left a partial store that --resume could not finish.
    source = _nii(folder / "v.nii.gz", _ramp((1, 8, 8)))
    return ["upsample", source, str(folder / "o.zarr"), "--scale", "1,1,2", "--model", "meta_srgan.t1",
            "--quiet"]


def _one_voxel_axis_ok(folder: Path) -> list[str]:
    source = _nii(folder / "v.nii.gz", _ramp((8, 8, 1)))
    return ["upsample", source, str(folder / "o.zarr"), "--scale", "1,1,2", "--model", "mdcsrn.t1",
            "--quiet"]


def _options(*extra: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        return ["upsample", _nii(folder / "v.nii.gz"), str(folder / "o.zarr"), "--model", "linear",
                "--quiet", *extra]

    return make


MISC_CASES = [
    Case("evaluate-json-is-the-reference", _evaluate_json_reference, output=None),
    Case("self-overwrite-zarr", _self_overwrite_zarr, output="a.zarr"),
    Case("self-overwrite-nifti",
         lambda f: ["convert", _nii(f / "a.nii.gz"), str(f / "a.nii.gz"), "--overwrite"],
         output="a.nii.gz"),
    Case("network-one-voxel-axis", _one_voxel_axis),
    Case("network-one-voxel-axis-ok", _one_voxel_axis_ok, expect="ok"),
    Case("option-scale-0", _options("--scale", "0")),
    Case("option-scale-nan", _options("--scale", "nan")),
    Case("option-scale-1e9", _options("--scale", "1,1,1e9")),
    Case("option-max-memory-1", _options("--scale", "2", "--max-memory", "1")),
    Case("option-chunks-0", _options("--scale", "2", "--chunks", "0,0,0")),
    Case("option-tile-negative", _options("--scale", "2", "--tile=-1,4,4")),
]

#: Every case, in table order.
CASES: list[Case] = [*HDF5_CASES, *MAT_CASES, *NIFTI_CASES, *ZARR_CASES, *ENVI_CASES,
                     *WEIGHT_CASES, *RESUME_CASES, *MISC_CASES]

# ----------------------------------------------------------------------------------- runner

#: A child of :class:`ForkServer`: the volsr modules (torch included) are imported once in
#: a fresh interpreter that never runs them; each case runs ``volsr.cli.main`` in a fork of
#: it, as the console script would (uncaught exceptions print a traceback and exit 1).
_SERVER = r"""
import json, os, resource, signal, sys, time, traceback
import volsr.cli, volsr.commands, volsr.engine
limit = int(sys.argv[1])

def child(request):
    try:
        if limit > 0:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.chdir(request["cwd"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.argv = ["volsr", *request["argv"]]
        code = volsr.cli.main(request["argv"])
    except SystemExit as stop:
        code = stop.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
        code = 0 if code is None else code
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    deadline, status = time.monotonic() + request["timeout"], None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
        elif time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        else:
            time.sleep(0.01)
    print(json.dumps({"code": status}), flush=True)
"""

#: How a case is run: ``(argv, cwd, timeout) -> (exit status or None on timeout, stderr)``.
Launcher = Callable[[list[str], Path, float], tuple["int | None", str]]


class ConsoleScript:
    """Run the ``volsr`` console script in a new process per case (as a user does)."""

    def __init__(self) -> None:
        tests = str(Path(__file__).resolve().parents[1])
        if tests not in sys.path:
            sys.path.insert(0, tests)
        from test_cli import _console_script

        self.command = _console_script()

    def __call__(self, argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
        try:
            done = subprocess.run([*self.command, *argv], cwd=cwd, capture_output=True, text=True,
                                  timeout=timeout, preexec_fn=_limit_memory, check=False)
        except subprocess.TimeoutExpired as stopped:
            err = stopped.stderr
            return None, err.decode(errors="replace") if isinstance(err, bytes) else (err or "")
        return done.returncode, done.stderr

    def close(self) -> None:
        """Nothing to release."""


class ForkServer:
    """Run each case in a fork of one interpreter that imported volsr (and torch) once.

    A fork is a separate process (its own exit status, signals, address-space limit and
    timeout) without the ~2 s import of torch per case. Call :meth:`close` when done.
    """

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(ADDRESS_SPACE)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def __call__(self, argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
        out, err = cwd.parent / f".{cwd.name}.stdout", cwd.parent / f".{cwd.name}.stderr"
        request = {"argv": argv, "cwd": str(cwd), "timeout": timeout, "stdout": str(out),
                   "stderr": str(err)}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            raise RuntimeError("the volsr fork server died (see its stderr)")
        stderr = err.read_text(errors="replace") if err.exists() else ""
        for path in (out, err):
            path.unlink(missing_ok=True)
        return json.loads(reply)["code"], stderr

    def close(self) -> None:
        """Stop the server."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def _snapshot(folders: list[Path]) -> dict[str, bytes]:
    """Every file (hidden ones too) under ``folders``: path -> bytes."""
    return {str(p): p.read_bytes() for folder in folders if folder.is_dir()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _limit_memory() -> None:
    if ADDRESS_SPACE > 0:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _under(path: str, root: Path | None) -> bool:
    return root is not None and (path == str(root) or path.startswith(str(root) + os.sep))


def _exit_problems(case: Case, code: int, lines: list[str]) -> list[str]:
    problems = []
    if code == 0 and case.expect == "refused":
        problems.append("accepted (exit 0) where a refusal was expected")
    if code != 0 and case.expect == "ok":
        problems.append(f"valid input failed (exit {code})")
    if code not in (0, 2) and case.expect != "ok":
        problems.append(f"exit {code} instead of 2")
    if code != 0 and len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr")
    return problems


def _file_problems(case: Case, folder: Path, code: int | None,
                   before: dict[str, bytes], after: dict[str, bytes]) -> tuple[list[str], bool]:
    changed = sorted(p for p in before if after.get(p) != before[p])
    output = Path(f"{folder}{os.sep}{case.output.partition(':')[0]}") if case.output else None
    new = [p for p in after if p not in before and not (code == 0 and _under(p, output))]
    if case.interrupted:
        new = [p for p in new if ".volsr-partial.zarr" not in p]
    problems = []
    if changed:
        names = ", ".join(os.path.relpath(p, folder) for p in changed[:3])
        problems.append(f"data lost: {len(changed)} existing file(s) changed or removed ({names})")
    if new:
        names = ", ".join(sorted({os.path.relpath(p, folder).split(os.sep)[0] for p in new}))
        problems.append(f"left behind: {names}")
    return problems, bool(changed)


def _make(case: Case, folder: Path) -> list[str]:
    with contextlib.redirect_stdout(io.StringIO()):  # a setup run's "wrote ..." line
        return case.make(folder)


def run_case(case: Case, root: Path, launcher: Launcher, *, timeout: float = TIMEOUT_S) -> Outcome:
    """Make ``case`` in a fresh folder ``root/case.name``, run it with ``launcher``, judge it."""
    folder = root / case.name
    folder.mkdir(parents=True)
    try:
        argv = _make(case, folder)
    except Exception as error:  # a broken setup is reported, not raised: the table goes on
        line = " ".join(f"{type(error).__name__}: {error}".split())
        return Outcome(case.name, None, 0.0, line, [f"setup failed: {line}"], {"setup"})
    folders = [folder, outside(folder)]
    before = _snapshot(folders)
    start = time.perf_counter()
    code, stderr = launcher(argv, folder, timeout)
    seconds = time.perf_counter() - start
    problems, kinds = [], set()
    if code is None:
        problems.append(f"hang: no exit within {timeout:g} s")
        kinds.add("hang")
    elif code < 0:
        problems.append(f"crash: killed by signal {-code}")
        kinds.add("segfault")
    else:
        problems += _exit_problems(case, code, stderr.strip().splitlines())
    if "Traceback" in stderr:
        problems.append("traceback on stderr")
        kinds.add("traceback")
    if case.foreign and code == 0:
        problems.append("foreign read: succeeded on data outside the files it was given")
        kinds.add("foreign")
    file_problems, lost = _file_problems(case, folder, code, before, _snapshot(folders))
    problems += file_problems
    if lost:
        kinds.add("data lost")
    if not problems:
        kinds.add("ok" if code == 0 else "refused")
    return Outcome(case.name, code, seconds, stderr, problems, kinds)
