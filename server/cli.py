"""The ``driftserve`` command: serve, run (server + sidecar), sidecar, drift, bench."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic import ValidationError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", help="model repository directory [DRIFTSERVE_MODEL_REPOSITORY]")
    parser.add_argument("--host", help="bind address [DRIFTSERVE_HOST, default 0.0.0.0]")
    parser.add_argument("--grpc-port", type=int, help="gRPC port [DRIFTSERVE_GRPC_PORT, default 8001]")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port, -1 = off [DRIFTSERVE_METRICS_PORT, default 8002]")
    parser.add_argument("--log-level", help="logging level [DRIFTSERVE_LOG_LEVEL, default INFO]")
    parser.add_argument("--max-receive-message-bytes", type=int, help="largest request [default 64 MiB]")
    parser.add_argument("--grace-period-s", type=float, help="shutdown grace period [default 10]")
    parser.add_argument("--mirror-address", help="drift sidecar address host:port or unix:path [DRIFTSERVE_MIRROR_ADDRESS]")
    parser.add_argument("--workers", type=int, help="server processes sharing the port [DRIFTSERVE_WORKERS, default 1]")


def settings_from_args(settings_class: Any, args: argparse.Namespace) -> Any:
    """Flags given on the command line override the environment, which overrides defaults."""
    names = settings_class.model_fields
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return settings_class(**given)


def server_settings(args: argparse.Namespace) -> Any:
    """The server's settings: flags over DRIFTSERVE_* variables over defaults."""
    from server.settings import ServerSettings

    return settings_from_args(ServerSettings, args)


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = server_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    if settings.workers > 1:
        from server.workers import run_workers

        return run_workers(settings)
    import uvloop

    from server.app import serve

    return uvloop.run(serve(settings))


def _cmd_run(args: argparse.Namespace) -> int:
    from server.launcher import run_server_and_sidecar

    return run_server_and_sidecar(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the inference server")
    _add_serve_flags(serve)
    serve.set_defaults(func=_cmd_serve)
    run = sub.add_parser("run", help="run the inference server and the drift sidecar together")
    _add_serve_flags(run)
    run.add_argument("--sidecar-listen", default="127.0.0.1:8003", help="sidecar gRPC address [default 127.0.0.1:8003]")
    run.add_argument("--sidecar-http-port", type=int, default=8004, help="sidecar HTTP port [default 8004]")
    run.set_defaults(func=_cmd_run)
    _register_extensions(sub)
    return parser


def _register_extensions(sub: argparse._SubParsersAction) -> None:
    """The sidecar, drift and bench commands live with their packages."""
    from benchmarks.cli import register as register_bench
    from monitoring.cli import register as register_monitoring

    register_monitoring(sub)
    register_bench(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        print(f"driftserve: invalid settings:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
