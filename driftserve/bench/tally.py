"""Per-process measurement state: latency and send-lag HDR histograms, counts by status code.

Each worker process fills one `Tally` and ships `Tally.to_report()` (plain picklable data with the
histograms HDR-encoded) to the parent, which merges them with `merge_reports`. Latencies are kept
in microseconds from 1 µs to 2 minutes at 3 significant digits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

logger = logging.getLogger(__name__)

LOWEST_US = 1
HIGHEST_US = 120_000_000
SIGNIFICANT_DIGITS = 3
OK = "OK"
# A request the generator refused to send because too many were already outstanding.
OVERLOAD = "LOADGEN_OVERLOAD"
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)


def new_histogram() -> HdrHistogram:
    """A histogram covering 1 µs .. 120 s at 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _clamp_us(value_us: float) -> int:
    return min(max(int(value_us), LOWEST_US), HIGHEST_US)


@dataclass
class Tally:
    """What one worker measured. `record` takes latencies in seconds (monotonic clock)."""

    lag_threshold_s: float = 0.002
    latency: HdrHistogram = field(default_factory=new_histogram)
    lag: HdrHistogram = field(default_factory=new_histogram)
    status_counts: dict[str, int] = field(default_factory=dict)
    late_sends: int = 0
    max_lag_s: float = 0.0
    first_start_s: float = float("inf")
    last_done_s: float = 0.0

    def record(self, started_s: float, done_s: float, status: str) -> None:
        """Count one finished request; only successful ones enter the latency histogram."""
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        if status == OK:
            self.latency.record_value(_clamp_us((done_s - started_s) * 1e6))
        self.first_start_s = min(self.first_start_s, started_s)
        self.last_done_s = max(self.last_done_s, done_s)

    def record_lag(self, lag_s: float) -> None:
        """How late a scheduled request was actually sent (open loop only)."""
        self.lag.record_value(_clamp_us(lag_s * 1e6))
        if lag_s > self.lag_threshold_s:
            self.late_sends += 1
        self.max_lag_s = max(self.max_lag_s, lag_s)

    def to_report(self, cpu_s: float = 0.0, elapsed_s: float = 0.0) -> dict[str, object]:
        """Plain data for the parent process: HDR-encoded histograms and counters."""
        return {
            "latency": self.latency.encode(),
            "lag": self.lag.encode(),
            "status_counts": dict(self.status_counts),
            "late_sends": self.late_sends,
            "max_lag_s": self.max_lag_s,
            "first_start_s": self.first_start_s,
            "last_done_s": self.last_done_s,
            "cpu_s": cpu_s,
            "elapsed_s": elapsed_s,
        }


@dataclass
class Merged:
    """All workers' reports combined."""

    latency: HdrHistogram
    lag: HdrHistogram
    status_counts: dict[str, int]
    late_sends: int
    max_lag_s: float
    first_start_s: float
    last_done_s: float
    cpu_s: float

    @property
    def total(self) -> int:
        return sum(self.status_counts.values())

    @property
    def ok(self) -> int:
        return self.status_counts.get(OK, 0)

    @property
    def errors(self) -> dict[str, int]:
        return {k: v for k, v in sorted(self.status_counts.items()) if k != OK}

    def percentiles_us(self) -> dict[float, float]:
        """p50..max in µs; NaN when nothing succeeded."""
        if self.latency.get_total_count() == 0:
            return {p: float("nan") for p in PERCENTILES}
        out = {p: float(self.latency.get_value_at_percentile(p)) for p in PERCENTILES[:-1]}
        out[100.0] = float(self.latency.get_max_value())
        return out


def _decode(encoded: object) -> HdrHistogram:
    if not isinstance(encoded, (bytes, str)):
        raise TypeError(f"expected an HDR-encoded histogram, got {type(encoded).__name__}")
    return HdrHistogram.decode(encoded)


def merge_reports(reports: list[dict[str, object]]) -> Merged:
    """Merge worker reports: histograms added bucket by bucket, counts summed."""
    latency, lag = new_histogram(), new_histogram()
    counts: dict[str, int] = {}
    late, max_lag, cpu = 0, 0.0, 0.0
    first, last = float("inf"), 0.0
    for report in reports:
        if report["latency"]:
            latency.add(_decode(report["latency"]))
        if report["lag"]:
            lag.add(_decode(report["lag"]))
        for status, n in dict(report["status_counts"]).items():  # type: ignore[call-overload]
            counts[status] = counts.get(status, 0) + int(n)
        late += int(report["late_sends"])  # type: ignore[call-overload]
        max_lag = max(max_lag, float(report["max_lag_s"]))  # type: ignore[arg-type]
        first = min(first, float(report["first_start_s"]))  # type: ignore[arg-type]
        last = max(last, float(report["last_done_s"]))  # type: ignore[arg-type]
        cpu += float(report["cpu_s"])  # type: ignore[arg-type]
    return Merged(latency, lag, counts, late, max_lag, first, last, cpu)
