"""What the sidecar can tell of the server's traffic: the rate and server latency of mirrored requests.

Every mirrored request carries the latency the server measured for it (receipt to response
ready). The sidecar only sees what the server mirrored, so the rate here is the *mirrored* rate:
it equals the served rate only when the mirror neither samples nor drops (the server's own
``driftserve_server_*`` metrics are the full picture). Memory is bounded: per-batch entries of
the last ``RATE_WINDOW_S`` seconds (at most ``MAX_BATCH_ENTRIES``) and the latencies of the last
``LATENCY_SAMPLES`` requests.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from driftserve.sidecar.ingest import MirroredBatch

RATE_WINDOW_S = 60.0
MAX_BATCH_ENTRIES = 100_000
LATENCY_SAMPLES = 4096


@dataclass(frozen=True)
class TrafficSnapshot:
    """Mirrored traffic of one model: recent rates, server latency quantiles, totals since start."""

    requests_per_s: float
    rows_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    requests_total: int
    rows_total: int
    window_s: float


class TrafficTracker:
    """Counts one model's mirrored requests and keeps their server latencies (thread-safe)."""

    def __init__(self, now: float | None = None) -> None:
        self._lock = threading.Lock()
        self._batches: deque[tuple[float, int, int]] = deque()
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        # Running sums over ``_batches``, so a snapshot costs the evicted entries, not the window.
        self._window_requests = self._window_rows = 0
        self._requests_total = self._rows_total = 0
        self._started = time.monotonic() if now is None else now

    def observe(self, batch: MirroredBatch, now: float | None = None) -> None:
        """Count one mirrored batch (``now``: monotonic seconds, for tests)."""
        requests = len(batch.request_rows) or len(batch.latency_s) or 1
        stamp = time.monotonic() if now is None else now
        with self._lock:
            if len(self._batches) >= MAX_BATCH_ENTRIES:
                self._evict_oldest()
            self._batches.append((stamp, requests, batch.rows))
            self._window_requests += requests
            self._window_rows += batch.rows
            self._latencies.extend(v for v in batch.latency_s if math.isfinite(v) and v >= 0)
            self._requests_total += requests
            self._rows_total += batch.rows

    def snapshot(self, now: float | None = None) -> TrafficSnapshot:
        """Rates over the last ``RATE_WINDOW_S`` (or since start, if shorter) and latency quantiles."""
        stamp = time.monotonic() if now is None else now
        with self._lock:
            while self._batches and self._batches[0][0] < stamp - RATE_WINDOW_S:
                self._evict_oldest()
            requests, rows = self._window_requests, self._window_rows
            latencies = np.fromiter(self._latencies, dtype=np.float64)
            totals = self._requests_total, self._rows_total
        window = min(RATE_WINDOW_S, max(stamp - self._started, 1e-9))
        p50, p99 = (float(q) for q in np.quantile(latencies, (0.5, 0.99))) if latencies.size else (math.nan, math.nan)
        return TrafficSnapshot(requests / window, rows / window, p50, p99, totals[0], totals[1], window)

    def _evict_oldest(self) -> None:
        _, requests, rows = self._batches.popleft()
        self._window_requests -= requests
        self._window_rows -= rows
