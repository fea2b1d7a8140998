"""Percentile normalisation against NumPy's percentile."""

from __future__ import annotations

import numpy as np
import pytest

from volsr.intensity import percentile_normalise


@pytest.mark.parametrize("percentile", [50.0, 99.0, 99.9, 100.0])
def test_divides_by_numpy_percentile(percentile: float) -> None:
    values = np.random.default_rng(0).gamma(2.0, 30.0, size=(9, 10, 11))
    out, reference = percentile_normalise(values, percentile=percentile, clip=False)
    assert reference == pytest.approx(np.percentile(values, percentile), rel=1e-12)
    assert out.dtype == np.float32
    assert out.shape == values.shape
    np.testing.assert_allclose(out, values / np.percentile(values, percentile), rtol=1e-6)


def test_clip_bounds_to_unit_interval() -> None:
    values = np.array([-5.0, 0.0, 2.0, 4.0, 8.0])
    clipped, reference = percentile_normalise(values, percentile=75)
    assert reference == np.percentile(values, 75) == 4.0
    np.testing.assert_array_equal(clipped, [0.0, 0.0, 0.5, 1.0, 1.0])
    unclipped, _ = percentile_normalise(values, percentile=75, clip=False)
    np.testing.assert_array_equal(unclipped, [-1.25, 0.0, 0.5, 1.0, 2.0])


def test_integer_input_and_input_untouched() -> None:
    values = np.arange(101, dtype=np.uint8)
    copy = values.copy()
    out, reference = percentile_normalise(values, percentile=100)
    assert reference == 100.0
    np.testing.assert_allclose(out, np.arange(101) / 100.0, rtol=1e-6)
    np.testing.assert_array_equal(values, copy)


@pytest.mark.parametrize("percentile", [0.0, -1.0, 100.5, float("nan")])
def test_percentile_out_of_range(percentile: float) -> None:
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]"):
        percentile_normalise(np.ones(4), percentile=percentile)


@pytest.mark.parametrize(
    "values", [np.zeros((3, 3)), -np.ones(5), np.array([1.0, np.nan])], ids=["zero", "negative", "nan"]
)
def test_non_positive_reference_is_refused(values: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cannot normalise by it"):
        percentile_normalise(values, percentile=99.9)
