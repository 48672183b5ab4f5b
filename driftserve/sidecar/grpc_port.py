"""The secured gRPC port the sidecar and the fleet aggregator both serve.

Both processes take the same ``--tls-cert/--tls-key/--tls-client-ca/--auth-tokens-file`` flags
(``core.security.Security``) and put their services behind ``core.grpc_auth.GenericHandlersOnly``;
``add_health`` (never behind a token) and ``add_reflection`` (any valid token) register those two
the same way on both, and ``bind`` binds the address with TLS when configured, turning gRPC's silent bind failures into
a one-line ``StartupError`` that names the process's ``--listen`` flag and variable.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from driftserve.api._pool import reflection_pool
from driftserve.core.grpc_auth import GenericHandlersOnly
from driftserve.core.security import Security
from driftserve.core.startup import StartupError, bind_problem, probe_tcp_port

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def add_health(server: grpc.aio.Server) -> health_aio.HealthServicer:
    """The health service, never behind a token: orchestrators probe it without credentials."""
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, GenericHandlersOnly(server))
    return health


def add_reflection(services: GenericHandlersOnly, service_names: Iterable[str]) -> None:
    """Server reflection over ``service_names`` plus health and reflection, behind the token check."""
    names = (*service_names, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(names, pool=reflection_pool()), services
    )


def _probe(listen: str, fix: str) -> None:
    """StartupError for an address gRPC could not bind (gRPC's own error gives no reason and its
    C core logs one to stderr)."""
    if listen.startswith("unix:"):
        directory = Path(listen[len("unix:") :].removeprefix("//")).parent
        if not directory.is_dir():
            raise StartupError(f"gRPC address {listen}: directory {directory} does not exist; {fix}")
        return
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    try:
        probe_tcp_port(host, port)
    except socket.gaierror as exc:
        raise StartupError(f"gRPC address {listen}: host {host!r} cannot be resolved ({exc.strerror}); {fix}") from None
    except OSError as exc:
        raise StartupError(f"gRPC address {listen} {bind_problem(exc)}; {fix}") from None


def bind(server: grpc.aio.Server, listen: str, security: Security, fix: str) -> tuple[str, int]:
    """Bind ``listen``, with TLS when ``security`` has it; returns the address clients should use and
    the TCP port (0 for unix). ``fix`` ends each error: the flag and variable that pick another."""
    _probe(listen, fix)
    try:
        if security.tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, security.tls.grpc_credentials())
    except RuntimeError:
        raise StartupError(f"gRPC address {listen} cannot be bound; {fix}") from None
    if listen.startswith("unix:"):
        return listen, 0
    if port == 0:
        raise StartupError(f"gRPC address {listen} cannot be bound; {fix}")
    host = listen.rpartition(":")[0]
    return f"{host}:{port}", port
