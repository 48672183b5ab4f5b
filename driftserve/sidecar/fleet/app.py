"""Assembling and running the fleet aggregator: Monitor gRPC, health, HTTP, and the pull loop.

``create_fleet`` is the public factory tests use (port 0 allowed); ``serve`` adds signal handling
like the sidecar's. The aggregator serves the sidecar's Monitor service, JSON API, dashboard and
metrics over fleet-wide reports; it starts serving before any replica answered, since a replica
that is missing must never keep the fleet's report from being served.

Its gRPC port is secured like the sidecar's, by the same code (``sidecar.grpc_port``) and flags:
TLS, mutual TLS, and bearer tokens where Monitor needs scope ``monitor``, reflection any valid
token and health none; SIGHUP re-reads ``--auth-tokens-file``. Its pulls use the ``--replica-*``
flags (``fleet.replica_client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.auth import ANY_SCOPE, SCOPE_MONITOR, TokenAuthority, reload_on_sighup
from driftserve.core.grpc_auth import GenericHandlersOnly, MethodScopes
from driftserve.core.security import Security
from driftserve.core.startup import StartupError
from driftserve.sidecar.fleet.aggregator import FleetState
from driftserve.sidecar.fleet.settings import FleetSettings
from driftserve.sidecar.grpc_port import add_health, add_reflection, bind
from driftserve.sidecar.http_api import SidecarHttpServer, open_http_and_load
from driftserve.sidecar.monitor_service import MonitorServicer

logger = logging.getLogger(__name__)

MONITOR = driftserve_pb2.DESCRIPTOR.services_by_name["Monitor"].full_name
LISTEN_FIX = "pick another with --listen or DRIFTSERVE_FLEET_LISTEN"
# The scope of each call on the aggregator's gRPC port when tokens are configured; health needs none.
FLEET_SCOPES = {MONITOR: MethodScopes(SCOPE_MONITOR), reflection.SERVICE_NAME: MethodScopes(ANY_SCOPE)}


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
    # The bearer tokens in force (None: no --auth-tokens-file); SIGHUP reloads them.
    authority: TokenAuthority | None = None

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
    security = Security.load(settings.tls_cert, settings.tls_key, settings.tls_client_ca, settings.auth_tokens_file)
    registry = registry if registry is not None else CollectorRegistry()
    state = FleetState(settings, registry)  # reads the --replica-* files
    server = grpc.aio.server()
    # Monitor and reflection behind the bearer-token check when tokens are configured, as on the sidecar.
    rejected = state.metrics.auth_rejections
    services = GenericHandlersOnly(
        server, security.authority, FLEET_SCOPES, lambda reason: rejected.labels(reason).inc()
    )
    driftserve_pb2_grpc.add_MonitorServicer_to_server(MonitorServicer(state), services)
    health = add_health(server)
    add_reflection(services, (MONITOR,))
    address, port = bind(server, settings.listen, security, LISTEN_FIX)
    running = RunningFleet(server, address, port, -1, state, health, authority=security.authority)
    running.http = await open_http_and_load(
        server,
        state,
        registry,
        settings.http_host,
        settings.http_port,
        settings.report_interval_s,
        "DRIFTSERVE_FLEET_HTTP_PORT",
        state.load,
    )
    if running.http is not None:
        running.http_port = running.http.port
    state.start()
    running.puller = asyncio.create_task(_pull_loop(state, settings.pull_interval_s), name="fleet-pull")
    await server.start()
    if running.http is not None:
        running.http.start()
    for name in ("", MONITOR):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info(
        "fleet aggregator on %s, %s (http :%d) aggregating %s; pulls %s",
        address,
        security.describe(),
        running.http_port,
        sorted(state.models),
        state.client.describe(),
    )
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
    reload_on_sighup(running.authority)
    await stop.wait()
    await running.stop(settings.grace_period_s)
    return 0
