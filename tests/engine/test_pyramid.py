"""OME-Zarr multiscale levels (``upsample_to_store(..., pyramid=N)``): values, geometry, readers, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05.image import Image

from tests.engine.runs import with_engine
from volsr import io
from volsr.engine import EngineOptions, upsample_to_store
from volsr.engine.manifest import MANIFEST_NAME
from volsr.engine.pyramid import MAX_LEVELS, block_mean, build_pyramid, check_levels, create_levels
from volsr.errors import VolsrError
from volsr.geometry import pyramid_affine
from volsr.volume import Volume

ROOT = Path(__file__).resolve().parents[2]
#: Identity upsampling (linear at scale 1 reproduces its input exactly): level 0 is the input.
IDENTITY = dict(scale=1, model="linear", options=EngineOptions(chunks=(4, 4, 4), quiet=True))


def _oblique() -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag([0.7, 1.3, 2.5])
    affine[:3, 3] = [-20.0, 5.0, 12.5]
    return affine


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(D, *shape) world coordinates of every voxel centre (mm)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    columns = affine[:3, : len(shape)]
    return np.einsum("wd,d...->w...", columns, grid.astype(np.float64)) + affine[:3, 3].reshape(3, *[1] * len(shape))


def _naive_level(data: np.ndarray, level: int) -> np.ndarray:
    """Mean of each 2**level block of a (X, Y, Z) array, whole blocks only, by explicit loops."""
    size = 2**level
    shape = tuple(n // size for n in data.shape)
    out = np.empty(shape)
    for index in np.ndindex(shape):
        out[index] = data[tuple(slice(i * size, (i + 1) * size) for i in index)].mean(dtype=np.float64)
    return out


def _levels(store: Path) -> list[np.ndarray]:
    group = zarr.open_group(store, mode="r")
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    return [group[d["path"]][:] for d in datasets]


def test_levels_of_a_world_linear_ramp_sit_where_their_affines_say(tmp_path):
    # f(x) = w . x is linear in world space, so the mean over a block of voxels is f at
    # the block's mean position: each level's values pin its affine (and the NGFF transforms).
    affine, w = _oblique(), np.array([0.5, -1.0, 2.0])
    shape = (17, 12, 9)  # odd axes: whole blocks only
    ramp = np.einsum("w,w...->...", w, _world(affine, shape)).astype(np.float32)
    out = upsample_to_store(Volume(ramp, affine, ("i", "j", "k")), tmp_path / "o.zarr", **with_engine(IDENTITY, pyramid=4))
    levels = _levels(out)
    assert [a.shape for a in levels] == [(17, 12, 9), (8, 6, 4), (4, 3, 2), (2, 1, 1)]
    np.testing.assert_array_equal(levels[0], ramp)
    for level, values in enumerate(levels):
        expected = np.einsum("w,w...->...", w, _world(pyramid_affine(affine, level, ndim=3), values.shape))
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-4)
        np.testing.assert_allclose(values, _naive_level(ramp, level), rtol=0, atol=1e-5)


def test_an_integer_ramp_gives_exact_block_means_and_ngff_transforms(tmp_path):
    i, j, k = np.meshgrid(np.arange(8), np.arange(6), np.arange(5), indexing="ij")
    ramp = (1 + i + 10 * j + 100 * k).astype(np.float32)
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [10.0, -4.0, 1.0]
    out = upsample_to_store(Volume(ramp, affine, ("i", "j", "k")), tmp_path / "o.zarr", **with_engine(IDENTITY, pyramid=3))
    one = _levels(out)[1]
    a, b, c = np.meshgrid(np.arange(4), np.arange(3), np.arange(2), indexing="ij")
    np.testing.assert_array_equal(one, 1 + (2 * a + 0.5) + 10 * (2 * b + 0.5) + 100 * (2 * c + 0.5))
    datasets = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]
    for level, dataset in enumerate(datasets):
        scale, translation = dataset["coordinateTransformations"]
        np.testing.assert_allclose(scale["scale"], np.array([0.5, 2.0, 3.0]) * 2**level)
        # Half a level-(k-1) voxel per level: t0 + s0 (2**k - 1) / 2.
        np.testing.assert_allclose(translation["translation"],
                                   np.array([10.0, -4.0, 1.0]) + np.array([0.5, 2.0, 3.0]) * (2**level - 1) / 2)


def test_a_cube_keeps_its_bands_and_halves_rows_and_columns(tmp_path):
    rng = np.random.default_rng(1)
    cube = Volume(rng.random((9, 10, 3), dtype=np.float32), np.diag([2.0, 2.0, 1.0, 1.0]), ("i", "j", "band"),
                  wavelengths=[450.0, 550.0, 650.0])  # fmt: skip
    out = upsample_to_store(cube, tmp_path / "c.zarr", scale=1, model="linear",
                            options=EngineOptions(chunks=(4, 4), quiet=True, pyramid=3))
    levels = _levels(out)
    assert [a.shape for a in levels] == [(3, 9, 10), (3, 4, 5), (3, 2, 2)]  # disk order: bands first
    for band in range(3):
        for level in (1, 2):
            np.testing.assert_allclose(levels[level][band], _naive_level(levels[0][band], level), atol=1e-6)
    datasets = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]["datasets"]
    assert datasets[2]["coordinateTransformations"][0]["scale"] == [1.0, 8.0, 8.0]
    assert datasets[2]["coordinateTransformations"][1]["translation"] == [0.0, 3.0, 3.0]
    Image.from_zarr(zarr.open_group(out, mode="r"))  # a valid NGFF v0.5 image, channel axis included
    loaded = io.load(out)
    assert loaded.axes == ("i", "j", "band") and loaded.shape == (9, 10, 3)


def test_zarr_python_volsr_and_ome_zarr_read_the_finished_store(tmp_path):
    volume = Volume(np.random.default_rng(2).random((12, 10, 6), dtype=np.float32), np.diag([1.0, 1.0, 3.0, 1.0]),
                    ("i", "j", "k"))  # fmt: skip
    kwargs = dict(scale=(1, 1, 2), model="cubic", options=EngineOptions(chunks=(4, 4, 4), quiet=True))
    plain = upsample_to_store(volume, tmp_path / "plain.zarr", **kwargs)
    out = upsample_to_store(volume, tmp_path / "o.zarr", **with_engine(kwargs, pyramid=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = zarr.open_group(out, mode="r")
        assert [group[k].shape for k in "012"] == [(12, 10, 12), (6, 5, 6), (3, 2, 3)]
        assert group["1"].chunks == (4, 4, 4) and group["2"].chunks == (3, 2, 3)
        assert group["1"].metadata.dimension_names == ("z", "y", "x")
        image = Image.from_zarr(group)  # strict NGFF v0.5 validation (ome-zarr-models)
    assert [d.path for d in image.attributes.ome.multiscales[0].datasets] == ["0", "1", "2"]
    # Level 0 is what a run without a pyramid writes, and what volsr reads by default.
    np.testing.assert_array_equal(io.load(out).numpy(), io.load(plain).numpy())
    np.testing.assert_array_equal(io.load(out).affine, io.load(plain).affine)
    (node,) = list(Reader(parse_url(str(out)))())  # ome-zarr-py: the napari plugin's reader
    assert [tuple(level.shape) for level in node.data] == [(12, 10, 12), (6, 5, 6), (3, 2, 3)]
    for level, data in zip(_levels(out), node.data, strict=True):
        np.testing.assert_array_equal(np.asarray(data), level)
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 1.0, 1.5], [2.0, 2.0, 3.0], [4.0, 4.0, 6.0]]


@pytest.mark.parametrize(
    ("output", "pyramid", "match"),
    [
        ("o.nii.gz", 2, r"needs a \.zarr output"), ("o.h5:/sr", 3, r"needs a \.zarr output"),
        ("o.zarr", 0, "pyramid must be an integer from 1"), ("o.zarr", MAX_LEVELS + 1, "integer from 1"),
        ("o.zarr", True, "integer from 1"), ("o.zarr", 2.0, "integer from 1"),
        ("o.zarr", 4, r"at least 8 voxels per spatial axis, but the output is \(12, 10, 6\): at most 3 levels"),
    ],
)  # fmt: skip
def test_bad_pyramids_are_refused_in_one_line_before_any_work(tmp_path, output, pyramid, match):
    volume = Volume(np.ones((12, 10, 6), np.float32), np.eye(4), ("i", "j", "k"))
    with pytest.raises(ValueError, match=match) as error:
        upsample_to_store(volume, tmp_path / output, **with_engine(IDENTITY, pyramid=pyramid))
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_resume_with_another_pyramid_is_refused(tmp_path):
    source = tmp_path / "in.nii.gz"
    io.save(Volume(np.ones((12, 10, 6), np.float32), np.eye(4), ("i", "j", "k")), source)
    out = upsample_to_store(source, tmp_path / "o.zarr", **with_engine(IDENTITY, pyramid=2))
    for other in (1, 3):
        with pytest.raises(VolsrError, match="the options differs .*pyramid"):
            upsample_to_store(source, out, resume=True, **with_engine(IDENTITY, pyramid=other))
    assert upsample_to_store(source, out, resume=True, **with_engine(IDENTITY, pyramid=2)) == out  # already complete


def _run_script(out: Path, mode: str, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/engine/_slow_pyramid.py"), str(out), mode, str(delay)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _progress(work: Path) -> tuple[int, int]:
    """(last pyramid level recorded, level-1 chunk files written) of a running work store."""
    try:
        done = json.loads((work / MANIFEST_NAME).read_text())["state"].get("pyramid_done", 0)
    except (OSError, ValueError, KeyError):
        done = 0
    chunks = work / "1" / "c"
    return done, sum(len(files) for _, _, files in os.walk(chunks)) if chunks.exists() else 0


@pytest.mark.parametrize("kill_when", ["mid level 1", "level 1 recorded"])
def test_sigkill_during_the_pyramid_then_resume_is_bit_identical(tmp_path, kill_when):
    reference, killed = tmp_path / "ref.zarr", tmp_path / "killed.zarr"
    work = tmp_path / ".killed.zarr.volsr-partial.zarr"
    first, uninterrupted = _run_script(killed, "fresh", 0.25), _run_script(reference, "fresh", 0)
    deadline = time.monotonic() + 120
    ready = (lambda d, n: d == 0 and n >= 3) if kill_when == "mid level 1" else (lambda d, n: d >= 1)
    while not ready(*_progress(work)) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL and work.exists(), "the kill must land in the run"
    assert uninterrupted.wait() == 0
    done, written = _progress(work)
    assert done < 3 and (written < 8 or done >= 1), "the kill must land in the pyramid build"
    with pytest.raises(VolsrError):
        io.load(killed)  # no OME metadata yet: visibly unfinished
    assert _run_script(killed, "resume", 0).wait() == 0
    for a, b in zip(_levels(killed), _levels(reference), strict=True):
        assert a.tobytes() == b.tobytes()
    assert zarr.open_group(killed, mode="r").attrs["ome"] == zarr.open_group(reference, mode="r").attrs["ome"]


def _traced_build(store: Path) -> int:
    tracemalloc.start()
    try:
        build_pyramid(store, ("i", "j", "k"), 3, done=0, on_level=lambda level: None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_of_the_build_is_flat_in_the_volume_size(tmp_path):
    peaks = []
    for edge in (64, 128):
        group = zarr.open_group(tmp_path / f"{edge}.zarr", mode="w", zarr_format=3)
        image = group.create_array("0", shape=(edge,) * 3, chunks=(16, 16, 16), dtype="f4")
        image[:] = np.random.default_rng(edge).random((edge,) * 3, dtype=np.float32)
        create_levels(tmp_path / f"{edge}.zarr", ("i", "j", "k"), 3)
        peaks.append(_traced_build(tmp_path / f"{edge}.zarr"))
    # One target chunk and its 8 source chunks in float64 (8 x 16^3 x 8 B = 256 KiB), their
    # float32 read and zarr's buffers: about 0.85 MiB measured. The 128^3 volume's level 1
    # alone is 1 MiB, 8x the 64^3 one's: holding a level would add at least 0.9 MiB.
    assert peaks[0] < 2 * 2**20, peaks
    assert peaks[1] < peaks[0] + 256 * 2**10, peaks


def test_check_levels_and_block_mean():
    assert check_levels(1, (1, 1, 1)) == 1 and check_levels(MAX_LEVELS, (2 ** (MAX_LEVELS - 1),) * 2) == MAX_LEVELS
    block = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    np.testing.assert_array_equal(block_mean(block, (False, True, True)),
                                  block.reshape(2, 2, 2, 3, 2).mean(axis=(2, 4)))  # fmt: skip
    assert block_mean(block, (False, True, True)).dtype == np.float32
    with pytest.raises(ValueError, match="odd length"):
        block_mean(block[:, :3], (False, True, True))
    with pytest.raises(ValueError, match="one flag per axis"):
        block_mean(block, (True, True))


def _transforms(store: Path) -> list[tuple[list[float], list[float]]]:
    datasets = zarr.open_group(store, mode="r").attrs["ome"]["multiscales"][0]["datasets"]
    return [tuple(t[t["type"]] for t in d["coordinateTransformations"]) for d in datasets]


def test_a_flipped_axis_keeps_each_level_at_its_block_centre(tmp_path):
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped[:3, 3] = [10.0, 20.0, 30.0]
    volume = Volume(np.zeros((8, 8, 8), np.float32), flipped, ("i", "j", "k"))
    out = upsample_to_store(volume, tmp_path / "o.zarr", scale=2, model="linear",
                            options=EngineOptions(pyramid=3, quiet=True))
    transforms = _transforms(out)
    # Output voxel 0 is a quarter input voxel (0.5 mm) inside the corner: x = 10 + 0.5, y = 20 - 0.5.
    s0, t0 = np.array(transforms[0][0]), np.array(transforms[0][1])
    assert transforms[0] == ([1.0, 1.0, 1.0], [10.5, 19.5, 29.5])
    for level, (scale, translation) in enumerate(transforms):
        block = np.mean([t0 + s0 * n for n in range(2**level)], axis=0)  # NGFF positions of its voxels
        np.testing.assert_allclose(translation, block)
        np.testing.assert_allclose(scale, s0 * 2**level)
    assert [t[1][0] for t in transforms] == [10.5, 11.0, 12.0]


def test_a_permuted_affine_puts_each_level_where_its_voxels_are(tmp_path):
    # i -> world y, j -> world z, k -> world x (4 mm).
    affine = np.array([[0, 0, 4.0, 10.0], [1.0, 0, 0, 20.0], [0, 1.0, 0, 30.0], [0, 0, 0, 1]])
    out = upsample_to_store(Volume(np.zeros((8, 8, 4), np.float32), affine, ("i", "j", "k")),
                            tmp_path / "o.zarr", **with_engine(IDENTITY, pyramid=2))  # fmt: skip
    rows = [1, 2, 0]  # the world axis each array axis runs along
    for level, (scale, translation) in enumerate(_transforms(out)):
        size = 2**level
        corner = np.array([(size - 1) / 2] * 3 + [1.0])  # level-k voxel 0: centre of the first block
        np.testing.assert_allclose(translation, (affine @ corner)[rows])
        np.testing.assert_allclose(scale, np.array([1.0, 1.0, 4.0]) * size)
    assert _transforms(out)[1][1] == [20.5, 30.5, 12.0]


def _naive_nodata_level(cube: np.ndarray, level: int, value: float) -> np.ndarray:
    """(C, X, Y) level of a channel-first cube: block mean, or ``value`` if any block pixel has it in any band."""
    size = 2**level
    shape = (cube.shape[0], *(n // size for n in cube.shape[1:]))
    out = np.empty(shape)
    for x, y in np.ndindex(shape[1:]):
        block = cube[:, x * size : (x + 1) * size, y * size : (y + 1) * size].astype(np.float64)
        hit = np.isnan(block) if np.isnan(value) else block == np.float32(value)
        out[:, x, y] = value if hit.any() else block.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("value", [-9999.0, float("nan")])
def test_blocks_with_a_nodata_pixel_get_the_value_in_every_band(tmp_path, value):
    rng = np.random.default_rng(5)
    cube = rng.random((3, 12, 10), dtype=np.float32)  # disk order: bands first
    cube[:, 0:3, 0:2] = value  # a no-data region (all bands)
    cube[1, 7, 5] = value  # one band of one pixel
    group = zarr.open_group(tmp_path / "c.zarr", mode="w", zarr_format=3)
    group.create_array("0", shape=cube.shape, chunks=(3, 4, 4), dtype="f4")[:] = cube
    create_levels(tmp_path / "c.zarr", ("i", "j", "band"), 3)
    build_pyramid(tmp_path / "c.zarr", ("i", "j", "band"), 3, done=0, on_level=lambda level: None, nodata=value)
    levels = [zarr.open_group(tmp_path / "c.zarr", mode="r")[k][:] for k in "012"]
    for level in (1, 2):
        np.testing.assert_allclose(levels[level], _naive_nodata_level(cube, level, value), rtol=1e-6)
    # The one-band pixel (7, 5) spoils its level-1 block (3, 2) in every band.
    assert np.isnan(levels[1][:, 3, 2]).all() if np.isnan(value) else (levels[1][:, 3, 2] == value).all()


def test_an_envi_cube_with_a_data_ignore_value_keeps_it_out_of_every_level(tmp_path):
    # Needs store.py to pass the input's meta["nodata"] to build_pyramid.
    rng = np.random.default_rng(6)
    cube = (100 + 10 * rng.random((8, 8, 2))).astype(np.float32)
    cube[2:5, 1:3] = -9999.0
    (tmp_path / "c.img").write_bytes(np.ascontiguousarray(cube.transpose(2, 0, 1)).astype("<f4").tobytes())
    (tmp_path / "c.hdr").write_text("ENVI\nsamples = 8\nlines = 8\nbands = 2\nheader offset = 0\ndata type = 4\n"
                                    "interleave = bsq\nbyte order = 0\ndata ignore value = -9999\n")  # fmt: skip
    out = upsample_to_store(tmp_path / "c.hdr", tmp_path / "o.zarr", **with_engine(IDENTITY, chunks=(4, 4), pyramid=3))
    levels = _levels(out)
    np.testing.assert_array_equal(levels[0], cube.transpose(2, 0, 1))
    for level in (1, 2):
        np.testing.assert_allclose(levels[level], _naive_nodata_level(levels[0], level, -9999.0), rtol=1e-6)
        valid = levels[level][levels[level] != -9999.0]
        assert valid.size and valid.min() >= 100  # no value mixed into a real pixel
    assert io.load(out).meta["nodata"] == -9999.0
