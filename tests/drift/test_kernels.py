"""The Numba binning kernel agrees with np.searchsorted and counts missing/unseen values."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.drift.kernels import MISSING, UNSEEN, BinLayout, CountArrays, accumulate


def _three(layout: BinLayout) -> tuple[CountArrays, CountArrays, CountArrays]:
    return CountArrays.zeros(layout), CountArrays.zeros(layout), CountArrays.zeros(layout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numeric_binning_matches_searchsorted(dtype: type) -> None:
    rng = np.random.default_rng(0)
    edges_a = np.sort(rng.normal(size=99))
    edges_b = np.array([-1.0, 0.0, 2.5])
    x = rng.normal(size=(1000, 3)).astype(dtype)
    x[::7, 2] = np.nan
    x[0, 2] = edges_b[1]  # a value on an edge goes to the bin on its right
    layout = BinLayout.build([2, 0], [edges_b, edges_a], [False, False])
    pane, window, total = _three(layout)
    accumulate(x, layout, pane, window, total)
    valid = x[:, 2][~np.isnan(x[:, 2])].astype(np.float64)
    expected_b = np.bincount(np.searchsorted(edges_b, valid, side="right"), minlength=4)
    expected_a = np.bincount(np.searchsorted(edges_a, x[:, 0].astype(np.float64), side="right"), minlength=100)
    np.testing.assert_array_equal(pane.counts[0, :4], expected_b)
    np.testing.assert_array_equal(pane.counts[1, :100], expected_a)
    assert pane.extra[0, MISSING] == np.isnan(x[:, 2]).sum()
    for other in (window, total):
        np.testing.assert_array_equal(other.counts, pane.counts)
        np.testing.assert_array_equal(other.extra, pane.extra)


def test_categorical_levels_and_unseen() -> None:
    layout = BinLayout.build([0], [np.array([1.0, 2.0, 7.0])], [True])
    x = np.array([[1.0], [7.0], [7.0], [3.0], [np.nan], [-1.0]])
    pane, window, total = _three(layout)
    accumulate(x, layout, pane, window, total)
    np.testing.assert_array_equal(pane.counts[0], [1, 0, 2])
    assert pane.extra[0, UNSEEN] == 2
    assert pane.extra[0, MISSING] == 1


def test_infinities_fall_in_the_outer_bins() -> None:
    layout = BinLayout.build([0], [np.array([0.0, 1.0])], [False])
    pane, window, total = _three(layout)
    accumulate(np.array([[-np.inf], [np.inf]]), layout, pane, window, total)
    np.testing.assert_array_equal(pane.counts[0], [1, 0, 1])


def test_wrapper_rejects_bad_shapes_and_dtypes() -> None:
    layout = BinLayout.build([0, 1], [np.array([0.0]), np.array([0.0])], [False, False])
    pane, window, total = _three(layout)
    with pytest.raises(ValueError, match="C-contiguous 2-D float32/float64"):
        accumulate(np.zeros((3, 2), dtype=np.int64), layout, pane, window, total)
    with pytest.raises(ValueError, match="batch has 1 columns but the layout reads column 1"):
        accumulate(np.zeros((3, 1)), layout, pane, window, total)
    with pytest.raises(ValueError, match="strictly increasing"):
        BinLayout.build([0], [np.array([1.0, 0.0])], [False])
