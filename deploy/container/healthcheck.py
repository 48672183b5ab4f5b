"""The container's health check: exit 0 when the local driftserve process says SERVING.

Asks the standard ``grpc.health.v1.Health/Check`` of the process this container runs: the
address in ``DRIFTSERVE_HEALTHCHECK_ADDRESS`` when set, else the sidecar's gRPC address
(``DRIFTSERVE_SIDECAR_LISTEN``, default 127.0.0.1:8003) when the container's main process is
``driftserve sidecar``, else the server's gRPC port (``DRIFTSERVE_GRPC_PORT``, default 8001). A
port changed with a command-line flag is not seen here: set ``DRIFTSERVE_HEALTHCHECK_ADDRESS``.
Usage: ``healthcheck.py [ADDRESS]``; prints one line, exit code 1 when not SERVING or unreachable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0
DEFAULT_SERVER_GRPC_PORT = "8001"
DEFAULT_SIDECAR_LISTEN = "127.0.0.1:8003"


def main_process_argv() -> list[str]:
    """The command line of the container's process 1 (empty when it cannot be read)."""
    try:
        return Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def default_address() -> str:
    """Where this container's driftserve answers health checks."""
    explicit = os.environ.get("DRIFTSERVE_HEALTHCHECK_ADDRESS")
    if explicit:
        return explicit
    if "sidecar" in main_process_argv():
        listen = os.environ.get("DRIFTSERVE_SIDECAR_LISTEN", DEFAULT_SIDECAR_LISTEN)
        host, sep, port = listen.rpartition(":")
        # A sidecar bound to every interface is reached on loopback.
        return f"127.0.0.1:{port}" if sep and host in ("0.0.0.0", "[::]") else listen
    return f"127.0.0.1:{os.environ.get('DRIFTSERVE_GRPC_PORT', DEFAULT_SERVER_GRPC_PORT)}"


def check(address: str) -> int:
    """0 when ``address`` answers SERVING, else 1; prints the answer either way."""
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S).status
    except grpc.RpcError as exc:
        print(f"healthcheck: {address}: {exc.code().name}: {exc.details()}", flush=True)
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"healthcheck: {address}: {name}", flush=True)
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else default_address()))
