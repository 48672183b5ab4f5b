"""``driftserve drift fleet``: run the fleet aggregator (registered by ``driftserve.sidecar.commands``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from driftserve.core.commandline import configure_logging, settings_from_args
from driftserve.core.security_flags import add_security_flags


def _cmd_fleet(args: argparse.Namespace) -> int:
    from driftserve.sidecar.fleet.settings import FleetSettings

    try:
        settings = settings_from_args(FleetSettings, args)
    except ValidationError as exc:
        print(f"driftserve drift fleet: {settings_problems(exc)}", file=sys.stderr, flush=True)
        return 2
    configure_logging(settings.log_level)
    import uvloop

    from driftserve.core.errors import ConfigError
    from driftserve.core.startup import StartupError
    from driftserve.sidecar.fleet.app import serve

    try:
        return uvloop.run(serve(settings))
    except (StartupError, ConfigError) as exc:
        print(f"driftserve drift fleet: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code if isinstance(exc, StartupError) else 2


def settings_problems(exc: ValidationError) -> str:
    """Each invalid setting as ``--flag (or ENV): what is wrong``, on one line."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = f"--{field.replace('_', '-')} (or DRIFTSERVE_FLEET_{field.upper()})"
        message = "is required" if error["type"] == "missing" else str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name} {message}" if error["type"] == "missing" else f"{name}: {message}")
    return "; ".join(problems)


def register_fleet(drift_sub: Any) -> None:
    """Add ``drift fleet`` to the ``drift`` subcommands."""
    fleet = drift_sub.add_parser(
        "fleet",
        help="aggregate many replicas' sidecars into one fleet-wide drift view (API, dashboard, metrics)",
        epilog="Each --replicas host is resolved on every pull, so a Kubernetes headless Service name "
        "(one address per ready pod) covers every replica. Start-up errors: one line on stderr, exit code 2 "
        "when a setting must change (a missing or invalid setting, a missing repository, an address in use, a "
        "missing or unreadable --tls-*, --replica-tls-*, tokens or token file, a certificate without its key).",
    )
    fleet.add_argument(
        "--replicas",
        help="comma-separated sidecar addresses host:port, or a name resolving to many [DRIFTSERVE_FLEET_REPLICAS]",
    )
    fleet.add_argument("--model-repository", help="the replicas' model repository [DRIFTSERVE_FLEET_MODEL_REPOSITORY]")
    fleet.add_argument("--listen", help="gRPC address of the aggregator's Monitor service [default 127.0.0.1:8003]")
    fleet.add_argument("--http-host", help="HTTP bind address [default 127.0.0.1]")
    fleet.add_argument(
        "--http-port", type=int, help="HTTP port for /metrics, /api, /dashboard; -1 = off [default 8004]"
    )
    fleet.add_argument("--log-level", help="logging level [default INFO]")
    fleet.add_argument("--report-interval-s", type=float, help="seconds between fleet evaluations [default 1]")
    fleet.add_argument("--pull-interval-s", type=float, help="seconds between pulls of every replica [default 2]")
    fleet.add_argument("--pull-timeout-s", type=float, help="deadline of one replica's pull [default 2]")
    fleet.add_argument(
        "--forget-after-s", type=float, help="a silent replica stays merged from its last state this long [default 600]"
    )
    fleet.add_argument("--grace-period-s", type=float, help="time open RPCs get at shutdown [default 1]")
    add_security_flags(fleet, "DRIFTSERVE_FLEET_")
    pulls = fleet.add_argument_group("TLS and authentication of the pulls from the replicas (see README 'Security')")
    pulls.add_argument(
        "--replica-tls-ca",
        type=Path,
        help="CA (PEM) that verifies the replicas' sidecars: pull over TLS [DRIFTSERVE_FLEET_REPLICA_TLS_CA]",
    )
    pulls.add_argument(
        "--replica-tls-cert",
        type=Path,
        help="client certificate (PEM) for sidecars with --tls-client-ca [DRIFTSERVE_FLEET_REPLICA_TLS_CERT]",
    )
    pulls.add_argument(
        "--replica-tls-key",
        type=Path,
        help="private key of --replica-tls-cert (PEM) [DRIFTSERVE_FLEET_REPLICA_TLS_KEY]",
    )
    pulls.add_argument(
        "--replica-token-file",
        type=Path,
        help="file whose first line is a bearer token with scope 'monitor' in the sidecars' tokens file "
        "[DRIFTSERVE_FLEET_REPLICA_TOKEN_FILE]",
    )
    fleet.set_defaults(func=_cmd_fleet)
