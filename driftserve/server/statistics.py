"""Per model-version inference statistics in Triton's shape (``ModelStatistics``).

perf_analyzer reads these to show the server-side breakdown (queue, compute input/infer/output).
Updated only on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from driftserve.server.batch_controller import ControllerState


@dataclass
class Duration:
    """A count and a total in nanoseconds (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchDurations:
    """Durations of executions of one batch size."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStatistics:
    """Counters for one model version since it was loaded."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchDurations] = field(default_factory=dict)
    # The SLO batch controller's latest decisions and measurements; None without ``slo_p99_ms``.
    batch_control: ControllerState | None = None

    def record_batch(self, rows: int, requests: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One execution of ``rows`` rows from ``requests`` requests."""
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        # Like Triton, each request is charged the duration of the batch it rode in.
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        per_size = self.batches.get(rows)
        if per_size is None:
            per_size = self.batches[rows] = BatchDurations()
        per_size.compute_input.add(input_ns)
        per_size.compute_infer.add(infer_ns)
        per_size.compute_output.add(output_ns)
