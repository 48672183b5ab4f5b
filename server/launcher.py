"""``driftserve run``: the inference server and the drift sidecar as two supervised processes."""

from __future__ import annotations

import argparse
import logging

from server.cli import LOG_FORMAT, server_settings
from server.processes import start_child, supervise, wait_ready

logger = logging.getLogger(__name__)


def run_server_and_sidecar(args: argparse.Namespace) -> int:
    """Start the sidecar, then the server mirroring to it; stop both on a signal."""
    if args.mirror_address is None:
        args.mirror_address = args.sidecar_listen
    settings = server_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    repository = str(settings.model_repository)
    sidecar = start_child(
        "sidecar",
        ["sidecar", "--model-repository", repository, "--listen", args.sidecar_listen,
         "--http-port", str(args.sidecar_http_port), "--log-level", settings.log_level],
    )
    server_argv = [
        "serve", "--model-repository", repository, "--host", settings.host,
        "--grpc-port", str(settings.grpc_port), "--metrics-port", str(settings.metrics_port),
        "--log-level", settings.log_level, "--mirror-address", settings.mirror_address or args.sidecar_listen,
        "--workers", str(settings.workers), "--grace-period-s", str(settings.grace_period_s),
        "--max-receive-message-bytes", str(settings.max_receive_message_bytes),
    ]
    server = start_child("server", server_argv)
    children = [sidecar, server]
    if not wait_ready(children):
        return supervise_failed(children, settings.grace_period_s)
    print(
        f"driftserve is up: gRPC {settings.host}:{server.announced.get('grpc_port')}, "
        f"metrics http://{settings.host}:{server.announced.get('metrics_port')}/metrics, "
        f"drift dashboard http://127.0.0.1:{args.sidecar_http_port}/dashboard",
        flush=True,
    )
    return supervise(children, settings.grace_period_s)


def supervise_failed(children: list, grace_s: float) -> int:
    from server.processes import stop_children

    stop_children(children, grace_s)
    return 1
