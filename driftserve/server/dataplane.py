"""The one data plane behind both protocols: route, validate, batch, infer, tap the mirror.

Servicers translate protobuf to ``InferenceRequest`` and ``InferenceResponse`` back; nothing
protocol-specific lives here (MLServer's handlers/dataplane split).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from driftserve.core.errors import Unavailable
from driftserve.server.repository import ModelRepository, ServedVersion


@dataclass(slots=True)
class InferenceRequest:
    """A decoded request, protocol-neutral."""

    model: str
    version: str = ""
    request_id: str = ""
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    timeout_us: int = 0
    priority: int = 0
    # Seconds left of the client's gRPC deadline when the request arrived (None: no deadline).
    grpc_time_remaining_s: float | None = None
    arrival_ns: int = 0


@dataclass(slots=True)
class InferenceResponse:
    """The outputs of one request, already limited to the requested subset."""

    model: str
    version: str
    request_id: str
    outputs: dict[str, np.ndarray]


class MirrorTap(Protocol):
    """Receives served requests after their response is ready; must never block."""

    def tap(self, served: ServedVersion, request: InferenceRequest, outputs: dict[str, np.ndarray]) -> None: ...


class InferenceObserver(Protocol):
    """Sees every answered and failed request with its batcher time (rollout analysis); never blocks."""

    def observe(
        self, served: ServedVersion, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], latency_ns: int
    ) -> None: ...

    def observe_failure(self, served: ServedVersion, latency_ns: int) -> None: ...


class DataPlane:
    """Serves inference requests against a model repository."""

    def __init__(self, repository: ModelRepository, mirror: MirrorTap | None = None) -> None:
        self.repository = repository
        self.mirror = mirror
        self.observer: InferenceObserver | None = None
        self.accepting = True
        # Set at SIGTERM: readiness says no while the drain period still serves what arrived.
        self.stopping = False

    @property
    def ready(self) -> bool:
        """Whether to tell clients and probes to send traffic here."""
        return self.accepting and not self.stopping

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Run one request end to end; raises ``DriftserveError`` subclasses on failure."""
        if not self.accepting:
            raise Unavailable("server is shutting down; not accepting new requests")
        served = self.repository.route(request.model, request.version, request.request_id)
        model = served.model
        rows = model.validate(request.inputs)
        wanted = model.check_outputs(request.outputs)
        deadline = self._deadline(request, served)
        submitted_ns = time.perf_counter_ns()
        started_ns = request.arrival_ns or submitted_ns
        try:
            outputs = await served.batcher.submit(request.inputs, rows, deadline, request.priority)
        except asyncio.CancelledError:
            raise
        except Exception:
            done_ns = time.perf_counter_ns()
            served.statistics.fail.add(done_ns - started_ns)
            if self.observer is not None:
                self.observer.observe_failure(served, done_ns - submitted_ns)
            raise
        done_ns = time.perf_counter_ns()
        served.statistics.success.add(done_ns - started_ns)
        if self.observer is not None:
            self.observer.observe(served, request.inputs, outputs, done_ns - submitted_ns)
        if self.mirror is not None:
            self.mirror.tap(served, request, outputs)
        if len(wanted) != len(outputs):
            outputs = {name: outputs[name] for name in wanted}
        return InferenceResponse(model.name, str(model.version), request.request_id, outputs)

    @staticmethod
    def _deadline(request: InferenceRequest, served: ServedVersion) -> float | None:
        """The earliest of the gRPC deadline, the request's timeout and the model's default."""
        budgets = []
        if request.grpc_time_remaining_s is not None:
            budgets.append(request.grpc_time_remaining_s)
        timeout_us = request.timeout_us or served.batcher.config.default_timeout_us
        if timeout_us:
            budgets.append(timeout_us / 1e6)
        if not budgets:
            return None
        # Budgets count from arrival, not from now (routing and validation already took time).
        elapsed_s = (time.perf_counter_ns() - request.arrival_ns) / 1e9 if request.arrival_ns else 0.0
        return asyncio.get_running_loop().time() + min(budgets) - elapsed_s
