"""Streamed percentile against np.percentile, within the stated accuracy."""

import dask.array as da
import numpy as np
import pytest

from volsr.engine.normalise import DEFAULT_BINS, streamed_percentile
from volsr.errors import InvalidDataError


@pytest.mark.parametrize("q", [0, 50, 99.9, 100])
@pytest.mark.parametrize("kind", ["uniform", "heavy", "background", "integer"])
def test_matches_numpy_within_one_sub_bin(kind, q):
    rng = np.random.default_rng(0)
    values = {
        "uniform": rng.random(50_001),
        "heavy": rng.standard_normal(40_000) ** 3 * 100,
        "background": np.r_[np.zeros(45_000), rng.exponential(5, 5_000)],
        "integer": rng.integers(0, 4096, 30_000).astype(np.int16),
    }[kind]
    estimate = streamed_percentile(da.from_array(values, chunks=7_000), q)
    width = (float(values.max()) - float(values.min())) / DEFAULT_BINS**2
    assert abs(estimate - np.percentile(values, q)) <= width


def test_constant_and_bad_input():
    assert streamed_percentile(da.full((10, 10), 3.0, chunks=5), 99.9) == 3.0
    with pytest.raises(InvalidDataError, match="NaN"):
        streamed_percentile(da.from_array(np.array([1.0, np.nan])), 50)
    with pytest.raises(ValueError, match="q must be in"):
        streamed_percentile(da.zeros(3), 101)
