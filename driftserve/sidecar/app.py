"""Assembling and running the drift sidecar process: Mirror + Monitor gRPC, health, HTTP.

``create_sidecar`` is the public factory tests use (port 0 allowed, also ``unix:/path``);
``serve`` adds signal handling: SIGTERM/SIGINT flips health to NOT_SERVING, gives open mirror
streams ``grace_period_s`` to finish, stops the worker threads and returns 0; SIGHUP re-reads
``--auth-tokens-file``. The server may start
before or after the sidecar: its mirror reconnects with backoff and drops records meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.auth import ANY_SCOPE, SCOPE_MIRROR, SCOPE_MONITOR, TokenAuthority, reload_on_sighup
from driftserve.core.grpc_auth import GenericHandlersOnly, MethodScopes
from driftserve.core.heap import freeze_startup_heap
from driftserve.core.security import Security
from driftserve.core.startup import StartupError
from driftserve.sidecar.grpc_port import add_health, add_reflection, bind
from driftserve.sidecar.http_api import SidecarHttpServer, open_http_and_load
from driftserve.sidecar.monitor_service import MirrorServicer, MonitorServicer
from driftserve.sidecar.settings import SidecarSettings
from driftserve.sidecar.state import SidecarState
from driftserve.sidecar.window_state import WindowStateExporter

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    driftserve_pb2.DESCRIPTOR.services_by_name["Mirror"].full_name,
    driftserve_pb2.DESCRIPTOR.services_by_name["Monitor"].full_name,
)
_THREAD_STOP_S = 2.0
# The scope of each call on the sidecar's gRPC port when tokens are configured; health needs none.
SIDECAR_SCOPES = {
    SERVICE_NAMES[0]: MethodScopes(SCOPE_MIRROR),
    SERVICE_NAMES[1]: MethodScopes(SCOPE_MONITOR),
    reflection.SERVICE_NAME: MethodScopes(ANY_SCOPE),
}


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
    # The bearer tokens in force (None: no --auth-tokens-file); SIGHUP reloads them.
    authority: TokenAuthority | None = None

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


LISTEN_FIX = "pick another with --listen or DRIFTSERVE_SIDECAR_LISTEN"


async def create_sidecar(settings: SidecarSettings, registry: CollectorRegistry | None = None) -> RunningSidecar:
    """Bind gRPC and HTTP, load the monitored models, start, and mark the process SERVING.

    The addresses are bound before the models load, so a port in use or a missing repository
    raises ``StartupError`` (one line naming the flag) before anything is logged or started.
    """
    root = settings.model_repository
    if not root.is_dir():
        raise StartupError(
            f"model repository {root} is not a directory; "
            "pass an existing one with --model-repository or DRIFTSERVE_SIDECAR_MODEL_REPOSITORY"
        )
    security = Security.load(settings.tls_cert, settings.tls_key, settings.tls_client_ca, settings.auth_tokens_file)
    registry = registry if registry is not None else CollectorRegistry()
    state = SidecarState(settings, registry)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", settings.max_receive_message_bytes)])
    # Every service but health behind the bearer-token check when tokens are configured.
    rejected = state.metrics.auth_rejections
    services = GenericHandlersOnly(
        server, security.authority, SIDECAR_SCOPES, lambda reason: rejected.labels(reason).inc()
    )
    driftserve_pb2_grpc.add_MirrorServicer_to_server(MirrorServicer(state), services)
    driftserve_pb2_grpc.add_MonitorServicer_to_server(
        MonitorServicer(state, WindowStateExporter(state).export), services
    )
    health = add_health(server)
    add_reflection(services, SERVICE_NAMES)
    address, port = bind(server, settings.listen, security, LISTEN_FIX)
    running = RunningSidecar(server, address, port, -1, state, health, authority=security.authority)
    running.http = await open_http_and_load(
        server,
        state,
        registry,
        settings.http_host,
        settings.http_port,
        settings.report_interval_s,
        "DRIFTSERVE_SIDECAR_HTTP_PORT",
        state.load,  # loads profiles and shadow models (ORT sessions)
    )
    if running.http is not None:
        running.http_port = running.http.port
    await running._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    state.start()
    await server.start()
    if running.http is not None:
        running.http.start()
    await running._set_health(health_pb2.HealthCheckResponse.SERVING)
    logger.info(
        "drift sidecar on %s, %s (http %s:%d) monitoring %s",
        address,
        security.describe(),
        settings.http_host,
        running.http_port,
        sorted(state.models),
    )
    return running


async def serve(settings: SidecarSettings) -> int:
    """Run until SIGTERM or SIGINT, then shut down cleanly; returns the exit code."""
    running = await create_sidecar(settings)
    freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reload_on_sighup(running.authority)  # before the ready line: a supervisor forwards SIGHUP from then on
    # Same ready-line prefix as the server, so one supervisor (driftserve.core.processes) reads both.
    print(
        f"DRIFTSERVE_READY role=sidecar address={running.address} grpc_port={running.port} "
        f"http_port={running.http_port}",
        flush=True,
    )
    await stop.wait()
    logger.info("signal received: stopping within %.1f s", settings.grace_period_s + _THREAD_STOP_S)
    await running.stop(settings.grace_period_s)
    return 0
