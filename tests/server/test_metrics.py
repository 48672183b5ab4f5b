"""The lock-free metric writers must expose exactly what prometheus_client's own methods would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values

from driftserve.server.metrics import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS_S,
    HistogramRecorder,
    LoopValue,
    counter_writer,
)


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


def _counter_exposition(fast: bool) -> bytes:
    registry = CollectorRegistry()
    counter = Counter("c", "help", ["code"], registry=registry)
    gauge = Gauge("g", "help", registry=registry)
    inc = counter_writer(counter.labels("OK")).inc if fast else counter.labels("OK").inc
    depth = counter_writer(gauge) if fast else gauge
    for step in range(1, 200):
        inc(1)
        depth.set(step % 17)
    for _ in range(5):
        depth.inc(1) if fast else gauge.inc()
    depth.inc(-1) if fast else gauge.dec()
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


def test_counter_writer_exposes_what_inc_and_set_would() -> None:
    assert _counter_exposition(fast=True) == _counter_exposition(fast=False)
    registry = CollectorRegistry()
    counter = Counter("c", "help", registry=registry)
    counter_writer(counter).inc(3)
    assert registry.get_sample_value("c_total") == 3


def test_values_shared_between_processes_keep_their_own_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In multiprocess mode a value lives in a file; the writer must go through it, not around it."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    values.ValueClass = values.get_value_class()
    try:
        registry = CollectorRegistry()
        counter = Counter("mp", "help", registry=registry)
        writer = counter_writer(counter)
        assert not isinstance(writer, LoopValue)
        writer.inc(2)
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected, path=str(tmp_path))
        assert collected.get_sample_value("mp_total") == 2
    finally:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        values.ValueClass = values.get_value_class()
