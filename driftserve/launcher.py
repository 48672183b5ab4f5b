"""``driftserve run``: the inference server and the drift sidecar as two supervised processes.

It sits above both (it starts one of each), which is why it lives beside the CLI and not in
either package.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from driftserve.core.commandline import configure_logging, settings_argv
from driftserve.core.processes import (
    Child,
    forward_sighup,
    start_child,
    stop_children,
    stop_signals,
    supervise,
    wait_ready,
)
from driftserve.core.security_flags import SECURITY_FIELDS
from driftserve.core.startup import EXIT_FAILURE, EXIT_USAGE, StartupError
from driftserve.server.commands import server_settings
from driftserve.server.settings import ServerSettings, check_repository, serve_argv
from driftserve.sidecar.settings import SidecarSettings

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


def _fail(message: str, code: int) -> int:
    print(f"driftserve run: {message}", file=sys.stderr, flush=True)
    return code


def _check_sidecar_flags(args: argparse.Namespace, settings_repository: object) -> str:
    """What is wrong with ``--sidecar-listen`` / ``--sidecar-http-port`` ("" when nothing)."""
    try:
        SidecarSettings(
            model_repository=settings_repository, listen=args.sidecar_listen, http_port=args.sidecar_http_port
        )
    except ValidationError as exc:
        return "; ".join(
            f"--sidecar-{str(e['loc'][0]).replace('_', '-')} is {e.get('input')!r}: "
            + " ".join(str(e["msg"]).split()).removeprefix("Value error, ")
            for e in exc.errors()
            if e["loc"] and e["loc"][0] in ("listen", "http_port")
        )
    return ""


def _mirror_security_problem(settings: ServerSettings) -> str:
    """What the loopback mirror lacks to reach a sidecar with the server's TLS and tokens ("" = nothing).

    The sidecar gets the same --tls-* and --auth-tokens-file as the server, so the mirror must
    verify its certificate (and present a client one under mutual TLS) and present a mirror token.
    """
    if settings.tls_cert is not None and settings.mirror_tls_ca is None:
        return (
            "--tls-cert also secures the sidecar: pass --mirror-tls-ca (the CA of --tls-cert; the certificate "
            "must name the --sidecar-listen host, e.g. 127.0.0.1) so the mirror can verify it"
        )
    if settings.tls_client_ca is not None and settings.mirror_tls_cert is None:
        return (
            "--tls-client-ca also applies to the sidecar: pass --mirror-tls-cert and --mirror-tls-key "
            "(a client certificate signed by --tls-client-ca) for the mirror"
        )
    if settings.auth_tokens_file is not None and settings.mirror_token_file is None:
        return (
            "--auth-tokens-file also guards the sidecar: pass --mirror-token-file (a file holding a token "
            "with scope mirror) for the mirror"
        )
    return ""


def run_server_and_sidecar(args: argparse.Namespace) -> int:
    """Start the sidecar, then the server mirroring to it; stop both on a signal.

    A start that fails prints one line (each child prints its own reason first) and exits with
    2 when a child exited with 2 (a setting to change), else 1.
    """
    if args.mirror_address is None:
        args.mirror_address = args.sidecar_listen
    settings = server_settings(args)
    from driftserve.server.security import load_security

    try:
        check_repository(settings)
        load_security(settings)
    except StartupError as exc:
        return _fail(exc.message, exc.exit_code)
    problem = _check_sidecar_flags(args, settings.model_repository) or _mirror_security_problem(settings)
    if problem:
        return _fail(problem, EXIT_USAGE)
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
        *settings_argv(settings, SECURITY_FIELDS),
    ]
    if settings.state_dir is not None:  # the dashboard's rollout panel reads the server's state
        sidecar_argv += ["--state-dir", str(settings.state_dir)]
    sidecar = start_child("sidecar", sidecar_argv)
    server = start_child("server", serve_argv(settings))
    children = [sidecar, server]
    with stop_signals() as stop, forward_sighup(children, settings.auth_tokens_file is not None):
        failed = wait_ready(children, stop)
        if stop.is_set():
            codes = stop_children(children, settings.grace_period_s)
            return 0 if all(code == 0 for code in codes) else EXIT_FAILURE
        if failed is not None:
            stop_children(children, settings.grace_period_s)
            return _failed_child(failed, sidecar)
        print(up_line(settings, server.announced, sidecar.announced), flush=True)
        return supervise(children, settings.grace_period_s, stop)


def up_line(settings: ServerSettings, server: dict[str, str], sidecar: dict[str, str]) -> str:
    """The one line ``run`` prints once both children are ready: the ports they really opened.

    REST is ``https`` when the server serves TLS (the metrics and sidecar HTTP ports never do), and
    a port turned off with -1 is named as off rather than as an address nobody can open.
    """
    host = settings.host
    rest_scheme = "https" if settings.tls_cert is not None else "http"
    parts = [f"gRPC {host}:{server.get('grpc_port')}"]
    http_port, metrics_port = server.get("http_port"), server.get("metrics_port")
    dashboard_port = sidecar.get("http_port")
    parts.append("REST off" if http_port == "-1" else f"REST {rest_scheme}://{host}:{http_port}/v2")
    parts.append("metrics off" if metrics_port == "-1" else f"metrics http://{host}:{metrics_port}/metrics")
    if dashboard_port == "-1":
        parts.append("drift dashboard off")
    else:
        parts.append(f"drift dashboard http://127.0.0.1:{dashboard_port}/dashboard")
    return "driftserve is up: " + ", ".join(parts)


def _failed_child(failed: Child, sidecar: Child) -> int:
    """One line naming the child that exited before it was ready; its exit code decides ours."""
    code = failed.process.poll()
    hint = (
        " (run sets the sidecar's --listen with --sidecar-listen and its --http-port with --sidecar-http-port)"
        if failed is sidecar
        else ""
    )
    return _fail(
        f"the {failed.name} failed to start (exit code {code}; its reason is above){hint}; stopped both",
        EXIT_USAGE if code == EXIT_USAGE else EXIT_FAILURE,
    )
