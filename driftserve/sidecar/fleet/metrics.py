"""Prometheus metrics of the fleet aggregator itself, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftserve.core.auth import REJECTION_REASONS as AUTH_REJECTION_REASONS
from driftserve.sidecar.fleet.replica_client import REJECTION_REASONS
from driftserve.sidecar.metrics import DURATION_BUCKETS
from driftserve.sidecar.replicas import STATUSES


class FleetMetrics:
    """Replicas by status, pull and merge durations, failed and refused pulls, refused calls."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.replicas = Gauge(
            "driftserve_fleet_replicas",
            "Replicas by status in the last pull round (contributing, stale, unreachable, incompatible).",
            ("status",),
            registry=registry,
        )
        self.pull_duration = Histogram(
            "driftserve_fleet_pull_duration_seconds",
            "Time to pull every replica's window state, one round.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.merge_duration = Histogram(
            "driftserve_fleet_merge_duration_seconds",
            "Time to merge one model's replica states before scoring.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.pull_errors = Counter(
            "driftserve_fleet_pull_errors_total", "Replica pulls that failed or were refused.", registry=registry
        )
        self.pull_rejections = Counter(
            "driftserve_fleet_pull_rejections_total",
            "Replica pulls the sidecar refused, by reason (unauthenticated, permission_denied, tls).",
            ("reason",),
            registry=registry,
        )
        self.auth_rejections = Counter(
            "driftserve_fleet_auth_rejections_total",
            "gRPC calls to the aggregator refused by the bearer-token check, by reason "
            "(missing, malformed, unknown, scope).",
            ("reason",),
            registry=registry,
        )
        for status in STATUSES:
            self.replicas.labels(status)
        for reason in REJECTION_REASONS:
            self.pull_rejections.labels(reason)
        for reason in AUTH_REJECTION_REASONS:
            self.auth_rejections.labels(reason)
