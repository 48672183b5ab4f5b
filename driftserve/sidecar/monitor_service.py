"""gRPC servicers of the sidecar: ``Mirror/Publish`` (ingest) and ``Monitor`` (reports).

Thin transport: both translate protobuf to calls on :class:`~driftserve.sidecar.state.SidecarState` and
back. A bad batch never fails the stream (it is counted and dropped), because one malformed record
must not cut the server's whole mirror feed; bad report requests get INVALID_ARGUMENT/NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.mirror_wire import MIRROR_ACCEPTED
from driftserve.sidecar.drift.detector import WINDOWS, FeatureWindowReport
from driftserve.sidecar.replicas import FleetView
from driftserve.sidecar.report_source import ReportSource
from driftserve.sidecar.shadow import ShadowStats
from driftserve.sidecar.state import ModelReport, SidecarState, UnknownModel

WindowStateSource = Callable[[list[str]], driftserve_pb2.WindowStateResponse]

logger = logging.getLogger(__name__)

# Yield to the event loop every so many batches so that one busy stream cannot starve the others.
_YIELD_EVERY_BATCHES = 32


class MirrorServicer(driftserve_pb2_grpc.MirrorServicer):
    """Receives the server's mirrored batches."""

    def __init__(self, state: SidecarState) -> None:
        self._state = state

    async def Publish(
        self, request_iterator: AsyncIterator[driftserve_pb2.MirrorBatch], context: grpc.aio.ServicerContext
    ) -> driftserve_pb2.PublishSummary:
        batches = rows = 0
        metrics = self._state.metrics
        metrics.streams.inc()
        peer = context.peer()
        logger.info("mirror stream opened by %s", peer)
        # Headers at once tell the server its stream was accepted (a refused one ends without them).
        await context.send_initial_metadata((MIRROR_ACCEPTED,))
        try:
            async for message in request_iterator:
                accepted = self._state.submit(message)
                if accepted:
                    batches += 1
                    rows += accepted
                if batches % _YIELD_EVERY_BATCHES == 0:
                    await asyncio.sleep(0)
        finally:
            metrics.streams.dec()
            logger.info("mirror stream from %s closed after %s batches, %s rows", peer, batches, rows)
        return driftserve_pb2.PublishSummary(batches=batches, rows=rows)


def window_filter(window: str) -> tuple[str, ...]:
    """The windows a request asks for; ValueError names the allowed values."""
    if not window:
        return WINDOWS
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)} or empty for both, got {window!r}")
    return (window,)


def feature_to_proto(item: FeatureWindowReport) -> driftserve_pb2.FeatureDrift:
    """One feature/window item as the wire message."""
    return driftserve_pb2.FeatureDrift(
        feature=item.feature,
        kind=item.source,
        window=item.window,
        window_rows=item.window_rows,
        psi=item.psi,
        psi_expected=item.psi_expected,
        ks_statistic=item.ks_statistic,
        ks_bound=item.ks_bound,
        ks_pvalue=item.ks_pvalue,
        ks_pvalue_corrected=item.ks_pvalue_corrected,
        missing_share=item.missing_share,
        reference_missing_share=item.reference_missing_share,
        unseen_categories=item.unseen_categories,
        status=item.status,
        reasons=item.reasons,
    )


def shadow_to_proto(stats: ShadowStats) -> driftserve_pb2.ShadowReport:
    """The shadow comparison as the wire message (NaN where nothing was measured yet)."""
    return driftserve_pb2.ShadowReport(
        primary_version=stats.primary_version,
        shadow_version=stats.shadow_version,
        rows=stats.rows,
        agreement=stats.agreement,
        mean_abs_delta=stats.mean_abs_delta,
        max_abs_delta=stats.max_abs_delta,
        primary_latency_p50_s=stats.primary_latency_p50_s,
        shadow_latency_p50_s=stats.shadow_latency_p50_s,
        primary_inference_p50_s=stats.primary_inference_p50_s,
        primary_inference_p99_s=stats.primary_inference_p99_s,
        shadow_latency_p99_s=stats.shadow_latency_p99_s,
        errors=stats.errors,
    )


def report_to_proto(report: ModelReport, windows: tuple[str, ...] = WINDOWS) -> driftserve_pb2.DriftReport:
    """A model report as the wire message, limited to ``windows``."""
    message = driftserve_pb2.DriftReport(
        model=report.model,
        generated_unix_s=report.generated_unix_s,
        rows_seen=report.rows_seen,
        batches_seen=report.batches_seen,
        features=[feature_to_proto(i) for i in report.items if i.window in windows],
    )
    if report.shadow is not None:
        message.shadow.CopyFrom(shadow_to_proto(report.shadow))
    if report.fleet is not None:
        message.fleet.CopyFrom(fleet_to_proto(report.fleet))
    return message


def fleet_to_proto(fleet: FleetView) -> driftserve_pb2.FleetInfo:
    """The replicas behind a fleet-wide report as the wire message."""
    return driftserve_pb2.FleetInfo(
        replicas=[
            driftserve_pb2.ReplicaInfo(
                address=r.address, instance_id=r.instance_id, status=r.status, age_s=r.age_s, rows=r.rows, error=r.error
            )
            for r in fleet.replicas
        ]
    )


class MonitorServicer(driftserve_pb2_grpc.MonitorServicer):
    """Serves drift and shadow reports to the CLI and other tools, and window state to aggregators.

    ``window_state`` exports the mergeable counts (a sidecar's own); None (a fleet aggregator)
    answers ``GetWindowState`` with FAILED_PRECONDITION.
    """

    def __init__(self, state: ReportSource, window_state: WindowStateSource | None = None) -> None:
        self._state = state
        self._window_state = window_state

    async def GetDriftReport(
        self, request: driftserve_pb2.DriftReportRequest, context: grpc.aio.ServicerContext
    ) -> driftserve_pb2.DriftReport:
        try:
            windows = window_filter(request.window)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            # Evaluating a report is NumPy over bins, milliseconds; keep it off the loop anyway.
            report = await asyncio.to_thread(self._state.report, request.model)
        except UnknownModel as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        return report_to_proto(report, windows)

    async def ListModels(
        self, request: driftserve_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> driftserve_pb2.ListModelsResponse:
        return driftserve_pb2.ListModelsResponse(models=sorted(self._state.models))

    async def GetWindowState(
        self, request: driftserve_pb2.WindowStateRequest, context: grpc.aio.ServicerContext
    ) -> driftserve_pb2.WindowStateResponse:
        export = self._window_state
        if export is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this is a fleet aggregator: it merges window state but does not export it; ask the replicas' sidecars",
            )
        assert export is not None  # abort raised
        try:
            # Copying and encoding the counts is NumPy work; keep it off the event loop.
            state = await asyncio.to_thread(export, list(request.models))
        except UnknownModel as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        return state
