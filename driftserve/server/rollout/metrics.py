"""Prometheus metrics of rollouts, on the server's injected registry (``driftserve_rollout_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from driftserve.core.rollout_state import STAGES


class RolloutMetrics:
    """Stage and canary weight per model, gate results, rollbacks by reason."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage = Gauge(
            "driftserve_rollout_stage",
            "1 for the stage the model's latest rollout is in, 0 for the others.",
            ["model", "stage"],
            registry=registry,
        )
        self.canary_weight = Gauge(
            "driftserve_rollout_canary_weight_ratio",
            "Share of unpinned requests routed to the candidate (0..1).",
            ["model"],
            registry=registry,
        )
        self.step = Gauge(
            "driftserve_rollout_canary_step", "Index of the canary step (-1: none).", ["model"], registry=registry
        )
        self.gate = Counter(
            "driftserve_rollout_gate_total",
            "Gate results by model and result (passed, failed).",
            ["model", "result"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "driftserve_rollout_rollbacks_total",
            "Rollbacks by model and reason (the breached check, manual, gate).",
            ["model", "reason"],
            registry=registry,
        )
        self.promotions = Counter(
            "driftserve_rollout_promotions_total", "Versions promoted to primary.", ["model"], registry=registry
        )

    def set_stage(self, model: str, stage: str, step: int, weight: float) -> None:
        for name in STAGES:
            self.stage.labels(model, name).set(1.0 if name == stage else 0.0)
        self.canary_weight.labels(model).set(weight)
        self.step.labels(model).set(step)
