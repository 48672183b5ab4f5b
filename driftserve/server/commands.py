"""The ``serve`` subcommand: its flags, its settings, and the argv that starts a server process."""

from __future__ import annotations

import argparse

from driftserve.core.commandline import configure_logging, settings_from_args
from driftserve.server.settings import ServerSettings


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``serve`` (and ``run``); each overrides its ``DRIFTSERVE_*`` variable."""
    parser.add_argument("--model-repository", help="model repository directory [DRIFTSERVE_MODEL_REPOSITORY]")
    parser.add_argument("--host", help="bind address [DRIFTSERVE_HOST, default 0.0.0.0]")
    parser.add_argument("--grpc-port", type=int, help="gRPC port [DRIFTSERVE_GRPC_PORT, default 8001]")
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus port, -1 = off [DRIFTSERVE_METRICS_PORT, default 8002]"
    )
    parser.add_argument("--log-level", help="logging level [DRIFTSERVE_LOG_LEVEL, default INFO]")
    parser.add_argument("--max-receive-message-bytes", type=int, help="largest request [default 64 MiB]")
    parser.add_argument("--grace-period-s", type=float, help="shutdown grace period [default 10]")
    parser.add_argument(
        "--max-pending-calls",
        type=int,
        help="calls gRPC may queue before the server takes them; more are refused [default 256]",
    )
    parser.add_argument(
        "--drain-period-s",
        type=float,
        help="after SIGTERM, serve this long before refusing new calls [DRIFTSERVE_DRAIN_PERIOD_S, default 0.5]",
    )
    parser.add_argument(
        "--mirror-address", help="drift sidecar address host:port or unix:path [DRIFTSERVE_MIRROR_ADDRESS]"
    )
    parser.add_argument("--workers", type=int, help="server processes sharing the port [DRIFTSERVE_WORKERS, default 1]")


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The server's settings: flags over DRIFTSERVE_* variables over defaults."""
    return settings_from_args(ServerSettings, args)


def cmd_serve(args: argparse.Namespace) -> int:
    """``driftserve serve``: one server process, or ``--workers N`` of them on one port."""
    settings = server_settings(args)
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from driftserve.server.workers import run_workers

        return run_workers(settings)
    import uvloop

    from driftserve.server.app import serve

    return uvloop.run(serve(settings))
