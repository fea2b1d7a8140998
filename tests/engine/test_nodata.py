"""No-data pixels through the engine, against a naive reference written here (loops).

The reference follows the documented rule (volsr.engine.nodata): a pixel is no-data when
any channel equals the value; no-data pixels are filled ring by ring with the mean of their
known 3**D neighbours; the network runs once on the whole filled volume; every output voxel
whose nearest input pixel (floor(x + 1/2) of its input coordinate) is no-data gets the value.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from tests.engine.nets import HRNet, LRNet
from volsr import io
from volsr.engine import EngineOptions, upsample, upsample_to_store
from volsr.engine.nodata import NoData, fill_nodata, nodata_mask, statistics_voxels
from volsr.engine.normalise import input_statistics
from volsr.geometry import resampled_shape
from volsr.models import get_card
from volsr.volume import Volume

NODATA = -9999.0


def naive_fill(block: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Ring-by-ring neighbour means with explicit loops, until no pixel can be reached."""
    values = np.where(invalid, 0.0, block).astype(np.float64)
    known = ~invalid
    spatial = invalid.shape
    while True:
        ring = {}
        for pixel in itertools.product(*(range(n) for n in spatial)):
            if known[pixel]:
                continue
            around = [tuple(p + d for p, d in zip(pixel, step)) for step in itertools.product((-1, 0, 1), repeat=len(spatial))]
            around = [q for q in around if all(0 <= a < n for a, n in zip(q, spatial)) and known[q]]
            if around:
                ring[pixel] = np.mean([values[(slice(None), *q)] for q in around], axis=0)
        if not ring:
            return values.astype(np.float32)
        for pixel, mean in ring.items():
            values[(slice(None), *pixel)] = mean
            known[pixel] = True


def nearest_input(n_in: int, n_out: int) -> np.ndarray:
    return np.array([min(n_in - 1, max(0, math.floor((o + 0.5) * n_in / n_out - 0.5 + 0.5))) for o in range(n_out)])


def naive_run(net, data: np.ndarray, scale) -> np.ndarray:
    """(C, *spatial) -> the documented result of the whole-volume pass with no-data."""
    invalid = (data == NODATA).any(axis=0)
    filled = naive_fill(data, invalid)
    shape_out = resampled_shape(data.shape[1:], scale)
    positions = tuple((np.arange(m) + 0.5) * n / m - 0.5 for n, m in zip(data.shape[1:], shape_out))
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(filled)[None], positions)[0].numpy()
    nearest = [nearest_input(n, m) for n, m in zip(data.shape[1:], shape_out)]
    out[:, invalid[np.ix_(*nearest)]] = NODATA
    return out


def _cube_with_holes(shape, seed=0):
    data = np.random.default_rng(seed).random(shape, dtype=np.float32) - np.float32(0.5)
    data[2:5, 1:4, 3:6] = NODATA  # a block
    data[-1, -1, 0] = NODATA  # a corner pixel
    data[7:, 0, :] = NODATA  # an edge slab
    return data


CASES = [((2, 2, 2), (9, 7, 6), (5, 6, 4), (4, 4, 3)), ((1, 1, 2.5), (10, 9, 7), (7, 5, 6), (3, 8, 5))]


@pytest.mark.parametrize("net_class", [LRNet, HRNet])
@pytest.mark.parametrize(("scale", "shape", "tile", "chunks"), CASES)
def test_tiled_runs_equal_the_naive_whole_volume_pass(tmp_path, net_class, scale, shape, tile, chunks):
    net = net_class()
    data = _cube_with_holes(shape)
    volume = Volume(data, np.eye(4), ("i", "j", "k"), meta={"nodata": NODATA})
    expected = naive_run(net, data[None], scale)[0]
    footprint = expected == NODATA
    assert 0 < footprint.sum() < footprint.size
    lazy = upsample(volume, scale=scale, model=net).numpy()
    np.testing.assert_array_equal(lazy[footprint], NODATA)
    np.testing.assert_allclose(lazy, expected, rtol=0, atol=2e-5)
    path = upsample_to_store(volume, tmp_path / "sr.zarr", scale=scale, model=net,
                             options=EngineOptions(chunks=chunks, tile=tile, quiet=True))  # fmt: skip
    stored = io.load(path).numpy()
    np.testing.assert_array_equal(stored[footprint], NODATA)
    np.testing.assert_allclose(stored, expected, rtol=0, atol=2e-5)


def test_any_channel_makes_the_pixel_no_data_and_blending_keeps_it(tmp_path):
    net = LRNet(channels=2)
    data = np.random.default_rng(1).random((2, 12, 10, 5), dtype=np.float32)
    data[1, 3:5, 2:4, 1:3] = NODATA  # one channel only: the whole pixel is no-data
    volume = Volume(np.moveaxis(data, 0, -1), np.eye(4), ("i", "j", "k", "channel"), meta={"nodata": NODATA})
    expected = np.moveaxis(naive_run(net, data, (1, 2, 3)), 0, -1)
    assert (expected[3:5, 4:8, 3:9] == NODATA).all()  # the footprint, in both channels
    path = upsample_to_store(volume, tmp_path / "b.zarr", scale=(1, 2, 3), model=net,
                             options=EngineOptions(chunks=(4, 8, 8), tile=(6, 8, 9), blend="gaussian", overlap=0.5, quiet=True))  # fmt: skip
    np.testing.assert_allclose(io.load(path).numpy(), expected, rtol=0, atol=2e-5)


def test_valid_outputs_away_from_no_data_equal_the_run_without_it():
    data = np.random.default_rng(2).random((16, 14, 6), dtype=np.float32)
    holed = data.copy()
    holed[10:13, 9:12, :] = NODATA
    runs = [upsample(Volume(d, np.eye(4), ("i", "j", "k"), meta={"nodata": NODATA}), scale=(2, 2, 1),
                     model="linear").numpy() for d in (data, holed)]  # fmt: skip
    far = np.ones(runs[0].shape, bool)
    far[2 * 10 - 4 : 2 * 13 + 4, 2 * 9 - 4 : 2 * 12 + 4] = False  # outside 2 input pixels of the hole
    np.testing.assert_array_equal(runs[1][far], runs[0][far])
    assert (runs[1][20:26, 18:24] == NODATA).all()


def test_dask_workers_fill_and_mark_like_one_process(tmp_path):
    import distributed

    volume = Volume(_cube_with_holes((9, 7, 6)), np.eye(4), ("i", "j", "k"), meta={"nodata": NODATA})
    kwargs = dict(scale=(2, 2, 2), model=LRNet())
    options = EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True)
    one = upsample_to_store(volume, tmp_path / "one.zarr", **kwargs, options=options)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:  # fmt: skip
        two = upsample_to_store(volume, tmp_path / "two.zarr", **kwargs,
                                options=dataclasses.replace(options, scheduler=cluster.scheduler_address))
    np.testing.assert_array_equal(io.load(two).numpy(), io.load(one).numpy())


def test_fill_is_local_so_a_cropped_block_agrees_inside_its_margin():
    data = np.random.default_rng(3).random((3, 20, 17), dtype=np.float32)
    data[:, 4:15, 5:12] = NODATA
    invalid = nodata_mask(data, NODATA)
    whole = fill_nodata(data, invalid, 3)
    crop = (slice(None), slice(2, 13), slice(6, 16))
    part = fill_nodata(data[crop], invalid[crop[1:]], 3)
    np.testing.assert_array_equal(part[:, 3:-3, 3:-3], whole[crop][:, 3:-3, 3:-3])
    assert (whole[:, 9, 8] == 0).all()  # 4 pixels from any valid one: beyond 3 rings
    np.testing.assert_allclose(fill_nodata(data, invalid, 99), naive_fill(data, invalid), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("values", "value", "expected"),
    [(np.array([1.5, -9999.99], np.float32), -9999.99, [False, True]),  # float32 rounding of the header
     (np.array([65535, 0], np.uint16), 65535, [True, False]),
     (np.array([0, 1], np.uint16), -9999, [False, False]),  # a value the type cannot hold
     (np.array([np.nan, 1.0]), math.nan, [True, False])],
)  # fmt: skip
def test_mask_compares_in_the_stored_dtype(values, value, expected):
    assert nodata_mask(values[None], value).tolist() == expected


def test_statistics_ignore_no_data_voxels():
    data = np.random.default_rng(4).random((6, 5, 4)).astype(np.float32) * 100
    data[0, 0, 0] = 65535.0  # as a no-data value of a uint16 cube would be
    volume = Volume(data, np.eye(4), ("i", "j", "k"), meta={"nodata": 65535})
    card = LRNet(scaling="max").card
    scale, _ = input_statistics(card, statistics_voxels(card, volume))
    assert scale == pytest.approx(np.sort(data.ravel())[-2])
    assert statistics_voxels(get_card("cubic"), volume) is volume.data  # nothing read for baselines


def test_nodata_record_is_plain():
    assert NoData(0.0, 2) == NoData(value=0.0, radius=2)


def test_an_envi_cube_keeps_its_no_data_through_upsampling(tmp_path):
    from tests.io.test_envi import write_by_hand
    from volsr.io.envi import parse_header

    rng = np.random.default_rng(5)
    cube = rng.integers(100, 4000, (20, 18, 3)).astype(np.uint16)
    extra = "data ignore value = 0\nmap info = {UTM, 1, 1, 500000, 4000000, 30, 30, units=Meters}\n"
    (tmp_path / "clean").mkdir()
    clean = io.load(write_by_hand(tmp_path / "clean", cube, extra=extra))
    holed = cube.copy()
    holed[12:15, 2:6, :] = 0  # a whole-spectrum block
    holed[4, 14, 1] = 0  # one band of one pixel: the whole pixel is no-data
    header = write_by_hand(tmp_path, holed, extra=extra)
    runs = [upsample(v, scale=2, model="linear") for v in (clean, io.load(header))]
    out = io.save(runs[1], tmp_path / "sr.hdr")
    sr = io.load(out).numpy()
    assert (sr[24:30, 4:12, :] == 0).all() and (sr[8:10, 28:30, :] == 0).all()  # the footprints, exactly
    assert (sr[22:24, 4:12] != 0).all() and (sr[24:30, 12:14] != 0).all()  # their neighbours are data
    far = np.ones(sr.shape[:2], bool)
    far[20:34, 0:16] = far[4:14, 24:34] = False  # outside 2 input pixels of both
    np.testing.assert_array_equal(sr[far], runs[0].numpy()[far])
    fields = parse_header(out.read_text())
    assert fields["data ignore value"] == "0.0"
    assert fields["map info"] == "{UTM, 1, 1, 500000.0, 4000000.0, 15.0, 15.0, units=Meters}"
    tiled = upsample_to_store(header, tmp_path / "tiled.hdr", scale=2, model="linear",
                              options=EngineOptions(chunks=(7, 5), tile=(7, 5), quiet=True))  # fmt: skip
    tiled_sr = io.load(tiled).numpy()
    np.testing.assert_array_equal(tiled_sr == 0, sr == 0)
    np.testing.assert_allclose(tiled_sr, sr, rtol=1e-6, atol=0)  # float rounding of other tile shapes
    assert parse_header(tiled.read_text())["data ignore value"] == "0.0"
