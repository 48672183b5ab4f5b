"""Bounded live counts for one group of features: a ring of time panes plus a cumulative sum.

The sliding window is the running sum of the last ``panes`` panes: a new pane is added as rows
arrive and the evicted pane is subtracted, so memory is ``O(panes x features x bins)`` whatever
the number of rows seen. The window spans between ``(panes - 1) * pane_seconds`` and
``panes * pane_seconds`` seconds, depending on where in the current pane ``now`` falls.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoring.drift.kernels import BinLayout, CountArrays, accumulate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSnapshot:
    """Copies of one window's counts, safe to read while ingestion goes on."""

    counts: NDArray[np.int64]
    extra: NDArray[np.int64]
    rows: int


class PaneRing:
    """Sliding (pane ring) and cumulative counts for the features described by ``layout``.

    Not thread-safe on its own; :class:`~monitoring.drift.detector.ModelDriftMonitor` holds the
    lock around every call.
    """

    def __init__(self, layout: BinLayout, pane_seconds: float, panes: int) -> None:
        if pane_seconds <= 0 or panes < 1:
            raise ValueError(f"pane_seconds must be > 0 and panes >= 1, got {pane_seconds} and {panes}")
        self.layout = layout
        self._pane_seconds = pane_seconds
        self._panes = panes
        shape = (panes, layout.n_features, layout.max_bins)
        self._ring_counts = np.zeros(shape, dtype=np.int64)
        self._ring_extra = np.zeros((panes, layout.n_features, 2), dtype=np.int64)
        self._ring_rows = np.zeros(panes, dtype=np.int64)
        self._window = CountArrays.zeros(layout)
        self._total = CountArrays.zeros(layout)
        self._window_rows = 0
        self._total_rows = 0
        self._pane: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the count arrays (constant for the life of the ring)."""
        arrays = (self._ring_counts, self._ring_extra, self._ring_rows, self._window.counts,
                  self._window.extra, self._total.counts, self._total.extra)  # fmt: skip
        return sum(a.nbytes for a in arrays)

    @property
    def total_rows(self) -> int:
        """Rows ingested since start (or the last reset)."""
        return self._total_rows

    def advance(self, now: float) -> None:
        """Move the ring to the pane holding ``now``, evicting panes that fell out of the window."""
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now}")
        pane = math.floor(now / self._pane_seconds)
        if self._pane is None:
            self._pane = pane
            return
        if pane <= self._pane:
            return  # late or equal timestamps count into the current pane; time never runs back
        for step in range(1, min(pane - self._pane, self._panes) + 1):
            slot = (self._pane + step) % self._panes
            self._window.counts -= self._ring_counts[slot]
            self._window.extra -= self._ring_extra[slot]
            self._window_rows -= int(self._ring_rows[slot])
            self._ring_counts[slot] = 0
            self._ring_extra[slot] = 0
            self._ring_rows[slot] = 0
        self._pane = pane

    def add(self, batch: NDArray[np.floating], now: float) -> None:
        """Count a batch (rows x columns) into the pane of ``now``, the window and the total."""
        self.advance(now)
        assert self._pane is not None
        slot = self._pane % self._panes
        pane = CountArrays(self._ring_counts[slot], self._ring_extra[slot])
        accumulate(batch, self.layout, pane, self._window, self._total)
        rows = batch.shape[0]
        self._ring_rows[slot] += rows
        self._window_rows += rows
        self._total_rows += rows

    def snapshot(self) -> tuple[WindowSnapshot, WindowSnapshot]:
        """Copies of the (sliding, cumulative) counts."""
        return (
            WindowSnapshot(self._window.counts.copy(), self._window.extra.copy(), self._window_rows),
            WindowSnapshot(self._total.counts.copy(), self._total.extra.copy(), self._total_rows),
        )

    def reset(self) -> None:
        """Forget every count; the next timestamp starts a fresh ring."""
        for arr in (self._ring_counts, self._ring_extra, self._ring_rows, self._window.counts,
                    self._window.extra, self._total.counts, self._total.extra):  # fmt: skip
            arr[...] = 0
        self._window_rows = 0
        self._total_rows = 0
        self._pane = None
