"""Prometheus metrics of the inference server, built against an injected registry.

Names follow ``driftserve_<subsystem>_<name>_<unit>``; durations are histograms (never summaries)
whose buckets resolve tens of microseconds, so p99 of a sub-millisecond service is visible.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.values import MutexValue

from driftserve.server.batch_controller import ControllerState

# 25 µs .. 1 s, roughly x2 per step with the sub-millisecond range finer.
LATENCY_BUCKETS_S = (
    25e-6,
    50e-6,
    75e-6,
    100e-6,
    150e-6,
    200e-6,
    300e-6,
    400e-6,
    500e-6,
    750e-6,
    1e-3,
    1.5e-3,
    2e-3,
    3e-3,
    5e-3,
    7.5e-3,
    10e-3,
    15e-3,
    25e-3,
    50e-3,
    100e-3,
    250e-3,
    500e-3,
    1.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)
MODEL_STATES = ("LOADING", "READY", "UNAVAILABLE", "UNLOADING")


class ServerMetrics:
    """All metrics of one server process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "driftserve_server_requests_total",
            "Inference requests by model, version, protocol and gRPC status code.",
            ["model", "version", "protocol", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "driftserve_server_request_duration_seconds",
            "Time from receiving an inference request to its response being ready.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.inflight = Gauge(
            "driftserve_server_inflight_requests",
            "Inference requests being served right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.model_state = Gauge(
            "driftserve_server_model_state",
            "1 for the state each model version is in, 0 for the others.",
            ["model", "version", "state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.batch_size = Histogram(
            "driftserve_batcher_batch_size_rows",
            "Rows per executed batch.",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_requests = Histogram(
            "driftserve_batcher_batch_requests",
            "Requests merged into each executed batch.",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.queue_duration = Histogram(
            "driftserve_batcher_queue_duration_seconds",
            "Time a request waited in its batcher's queue.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.compute_duration = Histogram(
            "driftserve_batcher_compute_duration_seconds",
            "Time to merge, run and split one batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "driftserve_batcher_queue_depth_requests",
            "Requests waiting in a batcher's queue.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "driftserve_batcher_rejections_total",
            "Requests refused or dropped by a batcher, by reason (queue_full, deadline, cancelled, shutdown).",
            ["model", "version", "reason"],
            registry=registry,
        )
        self.backlog_refusals = Counter(
            "driftserve_server_backlog_refusals_total",
            "Calls refused with RESOURCE_EXHAUSTED before any handler ran because --max-pending-calls calls "
            "were already waiting for the event loop (the cq gRPC front end).",
            registry=registry,
        )
        self.auth_rejections = Counter(
            "driftserve_server_auth_rejections_total",
            "Calls refused by the bearer-token check before any handler ran, by reason "
            "(missing, malformed, unknown: UNAUTHENTICATED; scope: PERMISSION_DENIED).",
            ["reason"],
            registry=registry,
        )
        # The SLO batch controller (batching.slo_p99_ms): its decisions and what it measured. Each
        # worker process runs its own controller, hence "liveall" (one series per pid).
        self.slo_objective = self._controller_gauge(
            "driftserve_batcher_slo_objective_seconds", "Latency objective (p99 of queue + compute)."
        )
        self.slo_delay = self._controller_gauge(
            "driftserve_batcher_slo_queue_delay_seconds", "Queue delay the SLO controller chose."
        )
        self.slo_target_rows = self._controller_gauge(
            "driftserve_batcher_slo_target_batch_rows", "Rows at which the SLO controller closes a batch."
        )
        self.slo_limit_rows = self._controller_gauge(
            "driftserve_batcher_slo_batch_limit_rows", "Most rows the SLO controller lets one batch take."
        )
        self.slo_cost_fixed = self._controller_gauge(
            "driftserve_batcher_slo_cost_fixed_seconds", "Fitted fixed cost a of a batch (cost = a + b * rows)."
        )
        self.slo_cost_per_row = self._controller_gauge(
            "driftserve_batcher_slo_cost_per_row_seconds", "Fitted cost b of one more row (cost = a + b * rows)."
        )
        self.slo_measured_p99 = self._controller_gauge(
            "driftserve_batcher_slo_measured_p99_seconds", "p99 of queue + compute the SLO controller measured last."
        )
        self.slo_arrival_rate = self._controller_gauge(
            "driftserve_batcher_slo_arrival_rows_per_second", "Arrival rate the SLO controller measured."
        )
        self.slo_budget_fraction = self._controller_gauge(
            "driftserve_batcher_slo_budget_ratio", "Share of the objective the SLO controller plans with (feedback)."
        )
        self.slo_cpu_pressure = self._controller_gauge(
            "driftserve_batcher_slo_cpu_pressure_ratio",
            "Share of time runnable work waited for a CPU (Linux PSI), as the SLO controller measured it.",
        )
        self.slo_loop_busy = self._controller_gauge(
            "driftserve_batcher_slo_loop_busy_ratio",
            "Share of time the event loop, with the threads --gil-cpu puts on its CPU, spent on the CPU,"
            " as the SLO controller measured it.",
        )
        self.slo_probes = self._controller_gauge(
            "driftserve_batcher_slo_probes",
            "Batches the SLO controller made wait for a full batch, to find clients a saturated loop hides.",
        )

        # Only with --workers: requests served per worker process (a `pid` label is added by
        # prometheus_client's multiprocess mode), so the spread across workers is visible.
        self.worker_requests = (
            Gauge(
                "driftserve_server_worker_requests",
                "Inference requests served by each worker process.",
                registry=registry,
                multiprocess_mode="liveall",
            )
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            else None
        )

    def _controller_gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, ["model", "version"], registry=self.registry, multiprocess_mode="liveall")

    def set_controller_state(self, model: str, version: str, state: ControllerState) -> None:
        """Publish one SLO controller snapshot (a few times a second at most)."""
        for gauge, value in (
            (self.slo_objective, state.objective_ns / 1e9),
            (self.slo_delay, state.delay_ns / 1e9),
            (self.slo_target_rows, state.target_rows),
            (self.slo_limit_rows, state.limit_rows),
            (self.slo_cost_fixed, state.cost_fixed_ns / 1e9),
            (self.slo_cost_per_row, state.cost_per_row_ns / 1e9),
            (self.slo_measured_p99, state.measured_p99_ns / 1e9),
            (self.slo_arrival_rate, state.arrival_rows_per_s),
            (self.slo_budget_fraction, state.budget_fraction),
            (self.slo_cpu_pressure, state.cpu_pressure),
            (self.slo_loop_busy, state.loop_busy),
            (self.slo_probes, state.probes),
        ):
            gauge.labels(model, version).set(value)

    def set_model_state(self, model: str, version: str, state: str) -> None:
        for candidate in MODEL_STATES:
            self.model_state.labels(model, version, candidate).set(1.0 if candidate == state else 0.0)


class HistogramRecorder:
    """Observes into one labelled histogram child with a C bisect instead of a Python loop.

    ``Histogram.observe`` walks the bucket bounds in Python (up to 25 steps here) and checks
    observability on every call; this runs on the event loop several times per request. The
    recorder finds the bucket with ``bisect_left`` (first bound >= value: prometheus' ``le``
    semantics) and increments the child's own value objects, so the exposition, including
    multiprocess mode, is unchanged. It relies on ``_upper_bounds``, ``_buckets`` and ``_sum`` of
    ``prometheus_client.Histogram``; ``tests/server/test_metrics.py`` pins that against
    ``observe``. Like ``LoopValue``, it is for the event loop thread only.
    """

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        child._raise_if_not_observable()
        self._bounds: list[float] = list(child._upper_bounds)
        self._buckets: list[Any] = [loop_value(bucket) for bucket in child._buckets]
        self._sum: Any = loop_value(child._sum)

    def observe(self, value: float) -> None:
        self._sum.inc(value)
        self._buckets[bisect_left(self._bounds, value)].inc(1)


class LoopValue:
    """Lock-free writes to one in-process metric value, for code on the event loop thread.

    prometheus_client guards every value with a mutex because any thread may write it; the request
    path writes its counters and gauges several times per request, always from the event loop
    thread, and the scrape thread only reads. With a single writer the lock buys nothing, so this
    writes the value directly. Values shared between processes (multiprocess mode) keep their
    own ``inc``/``set``: ``loop_value`` returns them unchanged.
    """

    __slots__ = ("_target",)

    def __init__(self, target: MutexValue) -> None:
        self._target = target

    def inc(self, amount: float = 1.0) -> None:
        self._target._value += amount

    def set(self, value: float) -> None:
        self._target._value = value


def loop_value(value: Any) -> Any:
    """A writer for a metric child's value object (``child._value``, a bucket, a sum)."""
    return LoopValue(value) if type(value) is MutexValue else value


def counter_writer(child: Any) -> Any:
    """``inc`` for a labelled Counter or Gauge child, from the event loop thread only."""
    child._raise_if_not_observable()
    return loop_value(child._value)


METRICS_PATH = "/metrics"


def start_metrics_server(port: int, host: str, registry: CollectorRegistry) -> WSGIServer:
    """Serve ``registry`` at ``/metrics`` on ``host:port`` from a thread; every other path is 404.

    prometheus_client's server answers the metrics on any path, so a probe or a client aimed at
    the wrong port (``/v2/health/ready`` on the metrics port) would read 200 and believe it.
    Raises OSError when the port cannot be bound.
    """
    httpd, _ = start_http_server(port, addr=host, registry=registry)
    metrics_app = httpd.get_app()
    assert metrics_app is not None

    def only_metrics(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == METRICS_PATH:
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found: this port serves Prometheus metrics at {METRICS_PATH} only\n".encode()]

    httpd.set_app(only_metrics)
    return httpd
