"""Assembling and running the fleet aggregator: Monitor gRPC, health, HTTP, and the pull loop.

``create_fleet`` is the public factory tests use (port 0 allowed); ``serve`` adds signal handling
like the sidecar's. The aggregator serves the sidecar's Monitor service, JSON API, dashboard and
metrics over fleet-wide reports; it starts serving before any replica answered, since a replica
that is missing must never keep the fleet's report from being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.api._pool import reflection_pool
from driftserve.core.startup import StartupError, bind_problem, probe_tcp_port
from driftserve.sidecar.fleet.aggregator import FleetState
from driftserve.sidecar.fleet.settings import FleetSettings
from driftserve.sidecar.http_api import SidecarHttpServer
from driftserve.sidecar.monitor_service import MonitorServicer

logger = logging.getLogger(__name__)

MONITOR = driftserve_pb2.DESCRIPTOR.services_by_name["Monitor"].full_name
LISTEN_FIX = "pick another with --listen or DRIFTSERVE_FLEET_LISTEN"


@dataclass
class RunningFleet:
    """A started aggregator and the handles needed to stop it."""

    server: grpc.aio.Server
    address: str
    port: int
    http_port: int
    state: FleetState
    health: health_aio.HealthServicer
    puller: asyncio.Task[None] | None = None
    http: SidecarHttpServer | None = None

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, stop pulling, let open RPCs finish within ``grace_s``, stop threads and HTTP."""
        for name in ("", MONITOR):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.puller is not None:
            self.puller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.puller
        await self.server.stop(grace_s)
        await self.state.close()
        if self.http is not None:
            await asyncio.to_thread(self.http.close)
        logger.info("fleet aggregator stopped")


def _bind(server: grpc.aio.Server, listen: str) -> tuple[str, int]:
    host, _, port_text = listen.rpartition(":")
    if not listen.startswith("unix:") and int(port_text):
        try:
            probe_tcp_port(host, int(port_text))
        except socket.gaierror as exc:
            raise StartupError(
                f"gRPC address {listen}: host {host!r} cannot be resolved ({exc.strerror}); {LISTEN_FIX}"
            ) from None
        except OSError as exc:
            raise StartupError(f"gRPC address {listen} {bind_problem(exc)}; {LISTEN_FIX}") from None
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:
        raise StartupError(f"gRPC address {listen} cannot be bound; {LISTEN_FIX}") from None
    if listen.startswith("unix:"):
        return listen, 0
    return f"{host}:{port}", port


async def _pull_loop(state: FleetState, interval_s: float) -> None:
    """Pull every ``interval_s`` (measured start to start); one failed round never stops the loop."""
    while True:
        started = time.monotonic()
        try:
            await state.pull_once()
        except Exception:  # the loop must outlive any one bad round
            logger.exception("fleet pull round failed")
        await asyncio.sleep(max(interval_s - (time.monotonic() - started), 0.0))


async def create_fleet(settings: FleetSettings, registry: CollectorRegistry | None = None) -> RunningFleet:
    """Bind gRPC and HTTP, load the models' profiles, start pulling, and mark the process SERVING."""
    root = settings.model_repository
    if not root.is_dir():
        raise StartupError(
            f"model repository {root} is not a directory; "
            "pass the replicas' repository with --model-repository or DRIFTSERVE_FLEET_MODEL_REPOSITORY"
        )
    registry = registry if registry is not None else CollectorRegistry()
    state = FleetState(settings, registry)
    server = grpc.aio.server()
    driftserve_pb2_grpc.add_MonitorServicer_to_server(MonitorServicer(state), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (MONITOR, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
        pool=reflection_pool(),
    )
    address, port = _bind(server, settings.listen)
    running = RunningFleet(server, address, port, -1, state, health)
    if settings.http_port >= 0:
        try:
            running.http = SidecarHttpServer(
                state, registry, settings.http_host, settings.http_port, settings.report_interval_s
            )
        except OSError as exc:
            await server.stop(None)
            raise StartupError(
                f"HTTP port {settings.http_port} on {settings.http_host} {bind_problem(exc)}; pick another with "
                "--http-port or DRIFTSERVE_FLEET_HTTP_PORT (-1 turns HTTP off)"
            ) from None
        running.http_port = running.http.port
    try:
        await asyncio.to_thread(state.load)
    except BaseException:
        await server.stop(None)
        if running.http is not None:
            running.http.start()  # close() waits for the serving thread, so it needs one
            await asyncio.to_thread(running.http.close)
        raise
    state.start()
    running.puller = asyncio.create_task(_pull_loop(state, settings.pull_interval_s), name="fleet-pull")
    await server.start()
    if running.http is not None:
        running.http.start()
    for name in ("", MONITOR):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("fleet aggregator on %s (http :%d) aggregating %s", address, running.http_port, sorted(state.models))
    return running


async def serve(settings: FleetSettings) -> int:
    """Run until SIGTERM or SIGINT, then shut down cleanly; returns the exit code."""
    running = await create_fleet(settings)
    print(
        f"DRIFTSERVE_READY role=fleet address={running.address} grpc_port={running.port} http_port={running.http_port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(settings.grace_period_s)
    return 0
