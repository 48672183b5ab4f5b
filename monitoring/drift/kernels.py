"""Numba kernels that bin a whole mirrored batch into per-feature counts in one call.

Layout shared by every kernel: feature ``f`` reads column ``columns[f]`` of the batch. A numeric
feature has ``n_edges[f]`` sorted inner edges in ``edges[f, :n_edges[f]]`` and
``n_edges[f] + 1`` bins; value ``x`` lands in bin ``j`` with ``edges[j-1] <= x < edges[j]``
(``np.searchsorted(..., side="right")``). A categorical feature keeps its sorted levels in the
same row of ``edges`` and has one bin per level; a value that is not a level counts as unseen.
NaN counts as missing for both kinds. ``extra[f, 0]`` is the missing count, ``extra[f, 1]``
the unseen count.

The kernels are pure and release the GIL, so a worker thread can bin while the event loop runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

MISSING = 0
UNSEEN = 1
EXTRA_COLUMNS = 2


@njit(cache=True, nogil=True)
def _bin_right(edges: NDArray[np.float64], n: int, x: float) -> int:
    """Index of the first of ``edges[:n]`` greater than ``x`` (searchsorted side='right')."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if edges[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _level_index(levels: NDArray[np.float64], n: int, x: float) -> int:
    """Index of ``x`` among the sorted ``levels[:n]``, or -1 when it is not a level."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if levels[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    if lo < n and levels[lo] == x:
        return lo
    return -1


@njit(cache=True, nogil=True)
def _accumulate(
    x: NDArray[np.floating],
    columns: NDArray[np.int64],
    edges: NDArray[np.float64],
    n_edges: NDArray[np.int64],
    is_categorical: NDArray[np.bool_],
    pane_counts: NDArray[np.int64],
    pane_extra: NDArray[np.int64],
    window_counts: NDArray[np.int64],
    window_extra: NDArray[np.int64],
    total_counts: NDArray[np.int64],
    total_extra: NDArray[np.int64],
) -> None:
    """Add every value of the batch to the pane, the sliding-window sum and the cumulative sum.

    Feature-major order keeps one feature's edges hot in L1 while its column is binned.
    """
    n_rows = x.shape[0]
    n_features = columns.shape[0]
    for f in range(n_features):
        col = columns[f]
        row_edges = edges[f]
        n = n_edges[f]
        categorical = is_categorical[f]
        for r in range(n_rows):
            v = x[r, col]
            if np.isnan(v):
                pane_extra[f, MISSING] += 1
                window_extra[f, MISSING] += 1
                total_extra[f, MISSING] += 1
                continue
            if categorical:
                b = _level_index(row_edges, n, v)
                if b < 0:
                    pane_extra[f, UNSEEN] += 1
                    window_extra[f, UNSEEN] += 1
                    total_extra[f, UNSEEN] += 1
                    continue
            else:
                b = _bin_right(row_edges, n, v)
            pane_counts[f, b] += 1
            window_counts[f, b] += 1
            total_counts[f, b] += 1


@dataclass(frozen=True)
class BinLayout:
    """Where each monitored feature sits in a batch and how its values map to bins."""

    columns: NDArray[np.int64]
    edges: NDArray[np.float64]
    n_edges: NDArray[np.int64]
    is_categorical: NDArray[np.bool_]

    @property
    def n_features(self) -> int:
        """Number of monitored features (rows of every count array)."""
        return int(self.columns.shape[0])

    @property
    def max_bins(self) -> int:
        """Width of the count arrays: the most bins any feature has."""
        bins = np.where(self.is_categorical, self.n_edges, self.n_edges + 1)
        return int(bins.max()) if bins.size else 1

    @classmethod
    def build(
        cls, columns: list[int], edges_or_levels: list[NDArray[np.float64]], categorical: list[bool]
    ) -> BinLayout:
        """Pack per-feature edges (numeric) or levels (categorical) into one padded matrix."""
        if not (len(columns) == len(edges_or_levels) == len(categorical)):
            raise ValueError("columns, edges_or_levels and categorical must have the same length")
        width = max([len(e) for e in edges_or_levels] + [1])
        edges = np.full((len(columns), width), np.inf)
        for f, values in enumerate(edges_or_levels):
            arr = np.asarray(values, dtype=np.float64)
            if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
                raise ValueError(f"feature #{f}: edges/levels must be finite and strictly increasing")
            edges[f, : arr.size] = arr
        return cls(
            columns=np.asarray(columns, dtype=np.int64),
            edges=edges,
            n_edges=np.asarray([len(e) for e in edges_or_levels], dtype=np.int64),
            is_categorical=np.asarray(categorical, dtype=np.bool_),
        )


@dataclass
class CountArrays:
    """Counts per fine bin plus missing/unseen counts for one pane or window."""

    counts: NDArray[np.int64]
    extra: NDArray[np.int64]

    @classmethod
    def zeros(cls, layout: BinLayout) -> CountArrays:
        """Fresh zeroed arrays sized for ``layout``."""
        return cls(
            counts=np.zeros((layout.n_features, layout.max_bins), dtype=np.int64),
            extra=np.zeros((layout.n_features, EXTRA_COLUMNS), dtype=np.int64),
        )


def accumulate(
    x: NDArray[np.floating], layout: BinLayout, pane: CountArrays, window: CountArrays, total: CountArrays
) -> None:
    """Bin batch ``x`` (rows x columns, float32/float64, C order) into three sets of counts."""
    if x.ndim != 2 or x.dtype not in (np.float32, np.float64) or not x.flags.c_contiguous:
        raise ValueError(f"batch must be a C-contiguous 2-D float32/float64 array, got {x.dtype} {x.shape}")
    if layout.n_features and int(layout.columns.max()) >= x.shape[1]:
        raise ValueError(f"batch has {x.shape[1]} columns but the layout reads column {int(layout.columns.max())}")
    shape = (layout.n_features, layout.max_bins)
    for name, arrays in (("pane", pane), ("window", window), ("total", total)):
        if arrays.counts.shape != shape or arrays.extra.shape != (layout.n_features, EXTRA_COLUMNS):
            raise ValueError(f"{name} counts have shape {arrays.counts.shape}, expected {shape}")
    _accumulate(
        x, layout.columns, layout.edges, layout.n_edges, layout.is_categorical,
        pane.counts, pane.extra, window.counts, window.extra, total.counts, total.extra,
    )  # fmt: skip
