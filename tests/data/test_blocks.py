"""Tests for volsr.data.blocks: block-wise reads equal slicing, LRU bound, per-volume stats."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from volsr.data import BlockCache, read_box, volume_stats


class CountingArray:
    """A NumPy-like file proxy that counts the blocks handed out."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return self.values[key]


def test_read_box_equals_numpy_slicing_and_reads_each_block_once() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((23, 17, 30)).astype(np.float32)
    proxy = CountingArray(values)
    data = da.from_array(proxy, chunks=((5, 9, 9), (17,), (7, 7, 7, 9)))
    proxy.reads = 0  # dask reads an empty slice to learn the dtype
    cache = BlockCache(max_bytes=values.nbytes)
    for _ in range(40):
        start = [int(rng.integers(n)) for n in values.shape]
        box = [(s, int(rng.integers(s + 1, n + 1))) for s, n in zip(start, values.shape)]
        np.testing.assert_array_equal(
            read_box(data, box, cache=cache, key="v"), values[tuple(slice(*b) for b in box)]
        )
    assert proxy.reads <= 3 * 1 * 4  # every block at most once: the cache holds them all
    before = proxy.reads
    read_box(data, [(0, 1), (0, 1), (0, 1)], cache=BlockCache(max_bytes=0), key="v")
    assert proxy.reads == before + 1  # one voxel: one block
    with pytest.raises(ValueError, match="non-empty ranges inside"):
        read_box(data, [(0, 0), (0, 1), (0, 1)], cache=cache, key="v")


def test_cache_is_lru_and_bounded_in_bytes() -> None:
    cache = BlockCache(max_bytes=100)
    for n in range(10):
        cache.put(n, np.zeros(4))  # 32 bytes each: three fit
        assert cache.nbytes <= 100
    assert [cache.get(n) is not None for n in (6, 7, 8, 9)] == [False, True, True, True]
    cache.get(7)
    cache.put("new", np.zeros(4))  # evicts 8, the least recently used
    assert cache.get(8) is None and cache.get(7) is not None
    cache.put("huge", np.zeros(100))
    assert cache.get("huge") is None and cache.nbytes <= 100
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 0"):
        BlockCache(max_bytes=-1)


def test_volume_stats_are_whole_volume_percentile_and_a_cell_foreground_map() -> None:
    rng = np.random.default_rng(1)
    values = np.zeros((40, 32, 24))
    values[8:24, 0:16, 8:16] = rng.uniform(50, 100, (16, 16, 8))
    stats = volume_stats(da.from_array(values, chunks=8), cell=8)
    assert stats.stride == 1 and stats.reference == np.percentile(values, 99.9)
    expected = np.zeros((5, 4, 3), bool)
    expected[1:3, 0:2, 1] = True
    np.testing.assert_array_equal(stats.foreground, expected)
    normalised = np.clip(values / stats.reference, 0, 1)
    fg = normalised > 0.1 * np.percentile(normalised, 99)
    assert stats.foreground_mean == pytest.approx(normalised[fg].mean())
    coarse = volume_stats(da.from_array(values, chunks=8), cell=8, max_voxels=40 * 32 * 24 // 8)
    assert coarse.stride == 2 and coarse.cell == 8
    np.testing.assert_array_equal(coarse.foreground, expected)
    with pytest.raises(ValueError, match="3-D"):
        volume_stats(da.zeros((4, 4)))
    with pytest.raises(ValueError, match="cannot normalise"):
        volume_stats(da.zeros((4, 4, 4)))
