"""The shadow stage in the drift sidecar: ask it to shadow the candidate, read its comparison.

With ``--mirror-address`` the server already ships served requests to the sidecar. During a
rollout's shadow stage the mirror tags the model's batches with the candidate version
(``MirrorBatch.shadow_version``); the sidecar loads that version, runs it on every mirrored request
beside the primary, and its shadow report (agreement, both versions' inference time in the
sidecar, errors) is what the stage is judged on. Serving never waits on any of it: a sidecar that
is slow or down only means the stage gathers no samples and holds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import grpc

from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

REPORT_TIMEOUT_S = 5.0


class ShadowTagging(Protocol):
    """The mirror publisher's map of model -> version the sidecar should shadow (None: stop), and
    the channel credentials and token it reaches the sidecar with."""

    shadow_versions: dict[str, int | None]
    credentials: grpc.ChannelCredentials | None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None: ...


@dataclass(frozen=True)
class SidecarReading:
    """The sidecar's cumulative comparison of the candidate against the primary."""

    shadow_version: str
    rows: int
    agreement: float
    errors: int
    primary_inference_p99_s: float
    shadow_inference_p99_s: float


class SidecarShadow:
    """Tags mirrored batches with the candidate and reads the sidecar's Monitor report."""

    def __init__(self, address: str, mirror: ShadowTagging) -> None:
        self.address = address
        self._mirror = mirror
        self._channel: grpc.aio.Channel | None = None

    def request(self, model: str, version: int) -> None:
        self._mirror.shadow_versions[model] = version

    def release(self, model: str) -> None:
        """The stage is over: the next mirrored batch goes untagged, which stops the sidecar's run."""
        if model in self._mirror.shadow_versions:
            self._mirror.shadow_versions[model] = None

    async def reading(self, model: str) -> SidecarReading | None:
        """The sidecar's shadow comparison of ``model`` now; None when it has none or is unreachable."""
        if self._channel is None:
            # The mirror's own TLS and token: a sidecar that takes the mirror takes this reader too,
            # provided the mirror's token also has the monitor scope (see the README's Security).
            credentials = self._mirror.credentials
            self._channel = (
                grpc.aio.insecure_channel(self.address)
                if credentials is None
                else grpc.aio.secure_channel(self.address, credentials)
            )
        stub = pb_grpc.MonitorStub(self._channel)
        try:
            report = await stub.GetDriftReport(
                pb.DriftReportRequest(model=model), timeout=REPORT_TIMEOUT_S, metadata=self._mirror.metadata
            )
        except grpc.aio.AioRpcError as exc:
            logger.info("shadow stage of %s: no report from the sidecar at %s: %s", model, self.address, exc.details())
            return None
        if not report.HasField("shadow"):
            return None
        s = report.shadow
        return SidecarReading(
            shadow_version=s.shadow_version,
            rows=int(s.rows),
            agreement=s.agreement,
            errors=int(s.errors),
            primary_inference_p99_s=s.primary_inference_p99_s if s.primary_inference_p99_s > 0 else math.nan,
            shadow_inference_p99_s=s.shadow_latency_p99_s if s.shadow_latency_p99_s > 0 else math.nan,
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
