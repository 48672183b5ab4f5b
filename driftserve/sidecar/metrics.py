"""Every Prometheus metric the sidecar exports, built on an injected registry.

Ingest (``driftserve_sidecar_*``), drift (``driftserve_drift_*``) and shadow
(``driftserve_shadow_*``) metrics, one class each, as the server keeps its own in
``driftserve.server.metrics``. Tests give each sidecar its own ``CollectorRegistry`` and read
exact values from it.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftserve.sidecar.drift.detector import DriftReportData
from driftserve.sidecar.drift.hysteresis import LEVELS
from driftserve.sidecar.ingest import REASONS

# 10 µs to ~2.6 s (ingest) and ~5 s (shadow latency), doubling.
DURATION_BUCKETS = tuple(1e-5 * 2**i for i in range(19))
LATENCY_BUCKETS = tuple(1e-5 * 2**i for i in range(20))
# Gauge value for a window too small to judge; below ok so "alert >= 2" rules are unaffected.
INSUFFICIENT_GAUGE = -1.0


class IngestMetrics:
    """The sidecar's own counters, built on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches = Counter("driftserve_sidecar_batches_total", "Mirrored batches accepted.", registry=registry)
        self.rows = Counter("driftserve_sidecar_rows_total", "Mirrored rows accepted.", registry=registry)
        self.rejected = Counter(
            "driftserve_sidecar_rejected_rows_total",
            "Mirrored rows dropped, by reason.",
            ("reason",),
            registry=registry,
        )
        self.duration = Histogram(
            "driftserve_sidecar_ingest_duration_seconds",
            "Time to ingest one batch, by stage (decode on the event loop, update in the model's worker).",
            ("stage",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "driftserve_sidecar_queue_batches",
            "Batches waiting for a model's ingest worker.",
            ("model",),
            registry=registry,
        )
        self.streams = Gauge("driftserve_sidecar_streams", "Open Mirror/Publish streams.", registry=registry)
        self.auth_rejections = Counter(
            "driftserve_sidecar_auth_rejections_total",
            "gRPC calls refused by the bearer-token check, by reason (missing, malformed, unknown, scope).",
            ("reason",),
            registry=registry,
        )
        for reason in REASONS:
            self.rejected.labels(reason)


class ShadowMetrics:
    """Shadow gauges, counters and the latency histogram, built on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.agreement = Gauge(
            "driftserve_shadow_agreement_ratio",
            "Share of rows where primary and shadow decide alike.",
            ("model",),
            registry=registry,
        )
        self.abs_delta = Gauge(
            "driftserve_shadow_abs_delta",
            "Absolute difference of float outputs (stat: mean or max).",
            ("model", "stat"),
            registry=registry,
        )
        self.latency = Histogram(
            "driftserve_shadow_latency_seconds",
            "Per-request latency: primary (server, end to end), primary_inference and shadow (inference in "
            "the sidecar, side by side on the same requests).",
            ("model", "role"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rows = Counter(
            "driftserve_shadow_rows_total", "Rows run through the shadow version.", ("model",), registry=registry
        )
        self.errors = Counter(
            "driftserve_shadow_errors_total", "Shadow batches that failed.", ("model",), registry=registry
        )
        self.dropped = Counter(
            "driftserve_shadow_dropped_rows_total",
            "Rows not shadowed because its queue was full.",
            ("model",),
            registry=registry,
        )


class DriftMetrics:
    """Prometheus gauges for drift reports, built on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "feature", "window")
        self.psi = Gauge("driftserve_drift_psi", "PSI over coarse bins.", labels, registry=registry)
        self.psi_expected = Gauge(
            "driftserve_drift_psi_expected",
            "PSI expected with no drift at this window size.",
            labels,
            registry=registry,
        )
        self.ks_statistic = Gauge(
            "driftserve_drift_ks_statistic", "Binned two-sample KS statistic.", labels, registry=registry
        )
        self.ks_pvalue = Gauge(
            "driftserve_drift_ks_pvalue", "Asymptotic KS p-value (uncorrected).", labels, registry=registry
        )
        self.ks_pvalue_corrected = Gauge(
            "driftserve_drift_ks_pvalue_corrected",
            "KS p-value after multiple-test correction.",
            labels,
            registry=registry,
        )
        self.window_rows = Gauge("driftserve_drift_window_rows", "Rows in the window.", labels, registry=registry)
        self.missing_share = Gauge(
            "driftserve_drift_missing_share", "Share of missing values in the window.", labels, registry=registry
        )
        self.alert = Gauge(
            "driftserve_drift_alert", "Alert level: 0 ok, 1 warn, 2 alert, -1 too few rows.", labels, registry=registry
        )
        self.rows = Counter(
            "driftserve_drift_rows_total", "Rows ingested by the drift detector.", ("model",), registry=registry
        )
        self._published_rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def publish(self, report: DriftReportData) -> None:
        """Set the gauges from one report and advance the rows counter."""
        for item in report.items:
            labels = (report.model, item.feature, item.window)
            self.psi.labels(*labels).set(item.psi)
            self.psi_expected.labels(*labels).set(item.psi_expected)
            self.ks_statistic.labels(*labels).set(item.ks_statistic)
            self.ks_pvalue.labels(*labels).set(item.ks_pvalue)
            self.ks_pvalue_corrected.labels(*labels).set(item.ks_pvalue_corrected)
            self.window_rows.labels(*labels).set(item.window_rows)
            self.missing_share.labels(*labels).set(item.missing_share)
            level = INSUFFICIENT_GAUGE if item.status == "insufficient" else LEVELS[item.status]
            self.alert.labels(*labels).set(level)
        with self._lock:
            delta = report.rows_total - self._published_rows.get(report.model, 0)
            self._published_rows[report.model] = report.rows_total
        if delta > 0:
            self.rows.labels(report.model).inc(delta)
