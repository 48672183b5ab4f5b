"""Assembling and running the drift sidecar process: Mirror + Monitor gRPC, health, HTTP.

``create_sidecar`` is the public factory tests use (port 0 allowed, also ``unix:/path``);
``serve`` adds signal handling: SIGTERM/SIGINT flips health to NOT_SERVING, gives open mirror
streams ``grace_period_s`` to finish, stops the worker threads and returns 0. The server may start
before or after the sidecar: its mirror reconnects with backoff and drops records meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.api._pool import reflection_pool
from driftserve.core.heap import freeze_startup_heap
from driftserve.sidecar.http_api import SidecarHttpServer
from driftserve.sidecar.monitor_service import MirrorServicer, MonitorServicer
from driftserve.sidecar.settings import SidecarSettings
from driftserve.sidecar.state import SidecarState

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    driftserve_pb2.DESCRIPTOR.services_by_name["Mirror"].full_name,
    driftserve_pb2.DESCRIPTOR.services_by_name["Monitor"].full_name,
)
_THREAD_STOP_S = 2.0


@dataclass
class RunningSidecar:
    """A started sidecar and the handles needed to stop it."""

    server: grpc.aio.Server
    address: str
    port: int
    http_port: int
    state: SidecarState
    health: health_aio.HealthServicer
    http: SidecarHttpServer | None = None

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, let open streams finish within ``grace_s``, stop threads and the HTTP server."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        await asyncio.to_thread(self.state.close, _THREAD_STOP_S)
        if self.http is not None:
            await asyncio.to_thread(self.http.close)
        logger.info("sidecar stopped")

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)


def _bind(server: grpc.aio.Server, listen: str) -> tuple[str, int]:
    """Bind ``listen``; returns the address clients should use and the TCP port (0 for unix)."""
    port = server.add_insecure_port(listen)
    if listen.startswith("unix:"):
        return listen, 0
    if port == 0:
        raise RuntimeError(f"cannot bind the sidecar's gRPC address {listen}")
    host = listen.rpartition(":")[0]
    return f"{host}:{port}", port


async def create_sidecar(settings: SidecarSettings, registry: CollectorRegistry | None = None) -> RunningSidecar:
    """Load the monitored models, start gRPC and HTTP, and mark the process SERVING."""
    registry = registry if registry is not None else CollectorRegistry()
    state = SidecarState(settings, registry)
    await asyncio.to_thread(state.load)  # loads profiles and shadow models (ORT sessions)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", settings.max_receive_message_bytes)])
    driftserve_pb2_grpc.add_MirrorServicer_to_server(MirrorServicer(state), server)
    driftserve_pb2_grpc.add_MonitorServicer_to_server(MonitorServicer(state), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
        pool=reflection_pool(),
    )
    address, port = _bind(server, settings.listen)
    running = RunningSidecar(server, address, port, -1, state, health)
    await running._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    state.start()
    await server.start()
    if settings.http_port >= 0:
        running.http = SidecarHttpServer(
            state, registry, settings.http_host, settings.http_port, settings.report_interval_s
        )
        running.http.start()
        running.http_port = running.http.port
    await running._set_health(health_pb2.HealthCheckResponse.SERVING)
    logger.info("drift sidecar on %s (http :%d) monitoring %s", address, running.http_port, sorted(state.models))
    return running


async def serve(settings: SidecarSettings) -> int:
    """Run until SIGTERM or SIGINT, then shut down cleanly; returns the exit code."""
    running = await create_sidecar(settings)
    freeze_startup_heap()
    # Same ready-line prefix as the server, so one supervisor (driftserve.core.processes) reads both.
    print(
        f"DRIFTSERVE_READY role=sidecar address={running.address} grpc_port={running.port} "
        f"http_port={running.http_port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("signal received: stopping within %.1f s", settings.grace_period_s + _THREAD_STOP_S)
    await running.stop(settings.grace_period_s)
    return 0
