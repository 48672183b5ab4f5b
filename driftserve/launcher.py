"""``driftserve run``: the inference server and the drift sidecar as two supervised processes.

It sits above both (it starts one of each), which is why it lives beside the CLI and not in
either package.
"""

from __future__ import annotations

import argparse
import logging

from driftserve.core.commandline import configure_logging
from driftserve.core.processes import start_child, stop_children, supervise, wait_ready
from driftserve.server.commands import server_settings
from driftserve.server.settings import serve_argv

logger = logging.getLogger(__name__)

DEFAULT_SIDECAR_LISTEN = "127.0.0.1:8003"
DEFAULT_SIDECAR_HTTP_PORT = 8004


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``run`` adds to ``serve``'s: where the sidecar listens."""
    parser.add_argument(
        "--sidecar-listen",
        default=DEFAULT_SIDECAR_LISTEN,
        help=f"sidecar gRPC address [default {DEFAULT_SIDECAR_LISTEN}]",
    )
    parser.add_argument(
        "--sidecar-http-port",
        type=int,
        default=DEFAULT_SIDECAR_HTTP_PORT,
        help=f"sidecar HTTP port [default {DEFAULT_SIDECAR_HTTP_PORT}]",
    )


def run_server_and_sidecar(args: argparse.Namespace) -> int:
    """Start the sidecar, then the server mirroring to it; stop both on a signal."""
    if args.mirror_address is None:
        args.mirror_address = args.sidecar_listen
    settings = server_settings(args)
    configure_logging(settings.log_level)
    sidecar_argv = [
        "sidecar",
        "--model-repository",
        str(settings.model_repository),
        "--listen",
        args.sidecar_listen,
        "--http-port",
        str(args.sidecar_http_port),
        "--log-level",
        settings.log_level,
    ]
    sidecar = start_child("sidecar", sidecar_argv)
    server = start_child("server", serve_argv(settings))
    children = [sidecar, server]
    if not wait_ready(children):
        stop_children(children, settings.grace_period_s)
        return 1
    print(
        f"driftserve is up: gRPC {settings.host}:{server.announced.get('grpc_port')}, "
        f"metrics http://{settings.host}:{server.announced.get('metrics_port')}/metrics, "
        f"drift dashboard http://127.0.0.1:{args.sidecar_http_port}/dashboard",
        flush=True,
    )
    return supervise(children, settings.grace_period_s)
