"""Bounded live counts for one group of features: a ring of time panes plus a cumulative sum.

The sliding window is the running sum of the last ``panes`` panes. Rows are binned into the
current pane only (one increment per value); when the clock enters a new pane the finished pane
is added to the running sums of closed panes and the evicted pane is subtracted, and a snapshot
is those sums plus the current pane. Memory is ``O(panes x features x bins)`` whatever the number
of rows seen. The window spans between ``(panes - 1) * pane_seconds`` and
``panes * pane_seconds`` seconds, depending on where in the current pane ``now`` falls.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from driftserve.sidecar.drift.kernels import BinLayout, CountArrays, accumulate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSnapshot:
    """Copies of one window's counts, safe to read while ingestion goes on."""

    counts: NDArray[np.int64]
    extra: NDArray[np.int64]
    rows: int


@dataclass(frozen=True)
class PaneCopy:
    """Copies of one pane's counts and its wall-clock number ``floor(time / pane_seconds)``."""

    pane: int
    counts: NDArray[np.int64]
    extra: NDArray[np.int64]
    rows: int


class PaneRing:
    """Sliding (pane ring) and cumulative counts for the features described by ``layout``.

    Not thread-safe on its own; :class:`~driftserve.sidecar.drift.detector.ModelDriftMonitor` holds the
    lock around every call.
    """

    def __init__(self, layout: BinLayout, pane_seconds: float, panes: int) -> None:
        if pane_seconds <= 0 or panes < 1:
            raise ValueError(f"pane_seconds must be > 0 and panes >= 1, got {pane_seconds} and {panes}")
        self.layout = layout
        self._pane_seconds = pane_seconds
        self._panes = panes
        self._ring = [CountArrays.zeros(layout) for _ in range(panes)]
        self._ring_rows = np.zeros(panes, dtype=np.int64)
        self._closed_window = CountArrays.zeros(layout)  # closed panes still inside the window
        self._closed_total = CountArrays.zeros(layout)  # every closed pane since start
        self._closed_window_rows = 0
        self._closed_total_rows = 0
        self._pane: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the count arrays (constant for the life of the ring)."""
        sets = [*self._ring, self._closed_window, self._closed_total]
        return sum(c.counts.nbytes + c.extra.nbytes for c in sets) + self._ring_rows.nbytes

    @property
    def pane_seconds(self) -> float:
        """Length of one pane in seconds."""
        return self._pane_seconds

    @property
    def panes(self) -> int:
        """Panes in the sliding window."""
        return self._panes

    @property
    def total_rows(self) -> int:
        """Rows ingested since start (or the last reset)."""
        current = int(self._ring_rows[self._pane % self._panes]) if self._pane is not None else 0
        return self._closed_total_rows + current

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
        finished = self._pane % self._panes
        self._fold(finished, +1)
        self._closed_total.counts += self._ring[finished].counts
        self._closed_total.extra += self._ring[finished].extra
        self._closed_total_rows += int(self._ring_rows[finished])
        for step in range(1, min(pane - self._pane, self._panes) + 1):
            slot = (self._pane + step) % self._panes
            self._fold(slot, -1)
            self._ring[slot].counts[...] = 0
            self._ring[slot].extra[...] = 0
            self._ring_rows[slot] = 0
        self._pane = pane

    def _fold(self, slot: int, sign: int) -> None:
        """Add (+1) or remove (-1) a closed pane from the closed-window sums."""
        if sign > 0:
            self._closed_window.counts += self._ring[slot].counts
            self._closed_window.extra += self._ring[slot].extra
        else:
            self._closed_window.counts -= self._ring[slot].counts
            self._closed_window.extra -= self._ring[slot].extra
        self._closed_window_rows += sign * int(self._ring_rows[slot])

    def add(self, batch: NDArray[np.floating], now: float) -> None:
        """Count a batch (rows x columns) into the pane of ``now``."""
        self.advance(now)
        assert self._pane is not None
        slot = self._pane % self._panes
        accumulate(batch, self.layout, self._ring[slot])
        self._ring_rows[slot] += batch.shape[0]

    def snapshot(self) -> tuple[WindowSnapshot, WindowSnapshot]:
        """Copies of the (sliding, cumulative) counts, the current pane included."""
        if self._pane is None:
            empty = CountArrays.zeros(self.layout)
            return (WindowSnapshot(empty.counts, empty.extra, 0),) * 2
        cur = self._ring[self._pane % self._panes]
        rows = int(self._ring_rows[self._pane % self._panes])
        return (
            WindowSnapshot(
                self._closed_window.counts + cur.counts,
                self._closed_window.extra + cur.extra,
                self._closed_window_rows + rows,
            ),
            WindowSnapshot(
                self._closed_total.counts + cur.counts,
                self._closed_total.extra + cur.extra,
                self._closed_total_rows + rows,
            ),
        )

    def pane_copies(self) -> list[PaneCopy]:
        """Copies of the panes still inside the window that hold rows, oldest first (for merging)."""
        if self._pane is None:
            return []
        copies = []
        for pane in range(self._pane - self._panes + 1, self._pane + 1):
            slot = pane % self._panes
            if self._ring_rows[slot]:
                ring = self._ring[slot]
                copies.append(PaneCopy(pane, ring.counts.copy(), ring.extra.copy(), int(self._ring_rows[slot])))
        return copies

    def reset(self) -> None:
        """Forget every count; the next timestamp starts a fresh ring."""
        for arrays in (*self._ring, self._closed_window, self._closed_total):
            arrays.counts[...] = 0
            arrays.extra[...] = 0
        self._ring_rows[...] = 0
        self._closed_window_rows = 0
        self._closed_total_rows = 0
        self._pane = None
