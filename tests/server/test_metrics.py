"""HistogramRecorder must expose exactly what prometheus_client's own ``observe`` would."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from server.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S, HistogramRecorder


def _exposition(buckets: tuple[float, ...], values: list[float], fast: bool) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("h", "help", ["model"], buckets=buckets, registry=registry)
    child = histogram.labels("m")
    observe = HistogramRecorder(child).observe if fast else child.observe
    for value in values:
        observe(value)
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


def test_recorder_matches_observe_on_bounds_and_random_values() -> None:
    rng = np.random.default_rng(7)
    for buckets in (LATENCY_BUCKETS_S, BATCH_SIZE_BUCKETS):
        values = [float(b) for b in buckets]  # exactly on each bound: le is inclusive
        values += [0.0, -1.0, 1e9, float("inf")]
        values += [float(v) for v in rng.exponential(scale=buckets[len(buckets) // 2], size=500)]
        values += [float(np.nextafter(b, np.inf)) for b in buckets]  # just above each bound
        assert _exposition(buckets, values, fast=True) == _exposition(buckets, values, fast=False)


def test_recorder_counts_every_observation() -> None:
    registry = CollectorRegistry()
    child = Histogram("h", "help", buckets=(1.0, 2.0), registry=registry)
    recorder = HistogramRecorder(child)
    for value in (0.5, 1.5, 3.0):
        recorder.observe(value)
    assert registry.get_sample_value("h_count") == 3
    assert registry.get_sample_value("h_bucket", {"le": "1.0"}) == 1
    assert registry.get_sample_value("h_bucket", {"le": "2.0"}) == 2
    assert registry.get_sample_value("h_sum") == 5.0
