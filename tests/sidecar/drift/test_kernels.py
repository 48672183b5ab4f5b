"""The Numba binning kernel agrees with np.searchsorted and counts missing/unseen values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftserve.sidecar.drift.kernels import MISSING, UNSEEN, BinLayout, CountArrays, accumulate


def _bin(x: np.ndarray, layout: BinLayout) -> CountArrays:
    target = CountArrays.zeros(layout)
    accumulate(x, layout, target)
    return target


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numeric_binning_matches_searchsorted(dtype: type) -> None:
    rng = np.random.default_rng(0)
    edges_a = np.sort(rng.normal(size=99))
    edges_b = np.array([-1.0, 0.0, 2.5])
    x = rng.normal(size=(1000, 3)).astype(dtype)
    x[::7, 2] = np.nan
    x[0, 2] = edges_b[1]  # a value on an edge goes to the bin on its right
    layout = BinLayout.build([2, 0], [edges_b, edges_a], [False, False])
    pane = _bin(x, layout)
    accumulate(x, layout, pane)  # counts add up across calls
    pane.counts //= 2
    pane.extra //= 2
    valid = x[:, 2][~np.isnan(x[:, 2])].astype(np.float64)
    expected_b = np.bincount(np.searchsorted(edges_b, valid, side="right"), minlength=4)
    expected_a = np.bincount(np.searchsorted(edges_a, x[:, 0].astype(np.float64), side="right"), minlength=100)
    np.testing.assert_array_equal(pane.counts[0, :4], expected_b)
    np.testing.assert_array_equal(pane.counts[1, :100], expected_a)
    assert pane.extra[0, MISSING] == np.isnan(x[:, 2]).sum()


def test_categorical_levels_and_unseen() -> None:
    layout = BinLayout.build([0], [np.array([1.0, 2.0, 7.0])], [True])
    x = np.array([[1.0], [7.0], [7.0], [3.0], [np.nan], [-1.0]])
    pane = _bin(x, layout)
    np.testing.assert_array_equal(pane.counts[0], [1, 0, 2])
    assert pane.extra[0, UNSEEN] == 2
    assert pane.extra[0, MISSING] == 1


def test_infinities_fall_in_the_outer_bins() -> None:
    layout = BinLayout.build([0], [np.array([0.0, 1.0])], [False])
    pane = _bin(np.array([[-np.inf], [np.inf]]), layout)
    np.testing.assert_array_equal(pane.counts[0], [1, 0, 1])


def test_wrapper_rejects_bad_shapes_and_dtypes() -> None:
    layout = BinLayout.build([0, 1], [np.array([0.0]), np.array([0.0])], [False, False])
    target = CountArrays.zeros(layout)
    with pytest.raises(ValueError, match="C-contiguous 2-D float32/float64"):
        accumulate(np.zeros((3, 2), dtype=np.int64), layout, target)
    with pytest.raises(ValueError, match="batch has 1 columns but the layout reads column 1"):
        accumulate(np.zeros((3, 1)), layout, target)
    with pytest.raises(ValueError, match="target counts have shape"):
        accumulate(np.zeros((3, 2)), layout, CountArrays(np.zeros((2, 5), np.int64), np.zeros((2, 2), np.int64)))
    with pytest.raises(ValueError, match="strictly increasing"):
        BinLayout.build([0], [np.array([1.0, 0.0])], [False])


_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=200, deadline=None)
@given(
    edges=st.lists(_finite, min_size=0, max_size=60, unique=True),
    values=st.lists(st.one_of(_finite, st.sampled_from([np.inf, -np.inf, 0.0, -0.0])), min_size=1, max_size=50),
)
def test_lookup_grid_binning_equals_searchsorted_for_any_edges(edges: list[float], values: list[float]) -> None:
    arr = np.unique(np.asarray(edges, dtype=np.float64))  # also merges 0.0 and -0.0
    layout = BinLayout.build([0], [arr], [False])
    x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    pane = _bin(x, layout)
    expected = np.bincount(np.searchsorted(arr, x[:, 0], side="right"), minlength=arr.size + 1)
    np.testing.assert_array_equal(pane.counts[0, : arr.size + 1], expected)


def test_lookup_grid_on_dense_quantile_edges_and_edge_values() -> None:
    rng = np.random.default_rng(9)
    for sample in (rng.lognormal(size=50_000), rng.pareto(1.0, 50_000), rng.normal(scale=1e-9, size=50_000)):
        arr = np.unique(np.quantile(sample, np.arange(1, 1000) / 1000))
        x = np.concatenate([rng.choice(sample, 20_000), arr, np.nextafter(arr, -np.inf), np.nextafter(arr, np.inf)])
        layout = BinLayout.build([0], [arr], [False])
        pane = _bin(np.ascontiguousarray(x.reshape(-1, 1)), layout)
        expected = np.bincount(np.searchsorted(arr, x, side="right"), minlength=arr.size + 1)
        np.testing.assert_array_equal(pane.counts[0, : arr.size + 1], expected)
