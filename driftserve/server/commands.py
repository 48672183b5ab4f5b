"""The ``serve`` subcommand: its flags, its settings, and the argv that starts a server process."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from driftserve.core.commandline import configure_logging, settings_from_args
from driftserve.core.cpus import parse_cpu_set, pin_to
from driftserve.core.security_flags import add_security_flags
from driftserve.core.startup import StartupError
from driftserve.server import grpc_core_shedding
from driftserve.server.settings import ServerSettings, check_repository

STARTUP_ERRORS_HELP = """\
start-up errors: one line on stderr, no traceback. Exit code 2: the command line or the environment
must change (a missing or invalid setting, a missing repository or --load-model, a port in use, a
missing or unreadable --tls-*/--mirror-tls-* file or tokens file, a certificate without its key);
exit code 1: the start failed at run time (a model failed to load with --exit-on-error).
readiness: health SERVING, V2 ServerReady and the DRIFTSERVE_READY line come once at least one model
is ready (with --load-model: every listed model). If none is, the server stays up NOT_SERVING, logs
why, and becomes ready when a model loads (RepositoryModelLoad); --exit-on-error exits instead."""


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``serve`` (and ``run``); each overrides its ``DRIFTSERVE_*`` variable."""
    parser.add_argument("--model-repository", help="model repository directory [DRIFTSERVE_MODEL_REPOSITORY]")
    parser.add_argument("--host", help="bind address [DRIFTSERVE_HOST, default 0.0.0.0]")
    parser.add_argument("--grpc-port", type=int, help="gRPC port [DRIFTSERVE_GRPC_PORT, default 8001]")
    parser.add_argument(
        "--http-port", type=int, help="KServe V2 REST port, -1 = off [DRIFTSERVE_HTTP_PORT, default 8000]"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus port, -1 = off [DRIFTSERVE_METRICS_PORT, default 8002]"
    )
    parser.add_argument("--log-level", help="logging level [DRIFTSERVE_LOG_LEVEL, default INFO]")
    parser.add_argument("--max-receive-message-bytes", type=int, help="largest request [default 64 MiB]")
    parser.add_argument("--grace-period-s", type=float, help="shutdown grace period [default 10]")
    parser.add_argument(
        "--max-pending-calls",
        type=int,
        help="calls received but not yet taken by the event loop; more are refused with RESOURCE_EXHAUSTED "
        "[default 256]",
    )
    parser.add_argument(
        "--grpc-frontend",
        choices=("cq", "aio"),
        help="cq: driftserve's completion-queue front end (about a third of grpc.aio's CPU per unary call); "
        "aio: grpcio's grpc.aio server [DRIFTSERVE_GRPC_FRONTEND, default cq]",
    )
    parser.add_argument(
        "--reply-sender",
        choices=("auto", "on", "off"),
        help="write replies from two sender threads while other calls are in flight (cq front end); auto: on with "
        "at most 4 CPUs per server process [DRIFTSERVE_REPLY_SENDER, default auto]",
    )
    parser.add_argument(
        "--gil-cpu",
        choices=("auto", "on", "off"),
        help="keep the event loop, the gRPC poller and the reply senders on one CPU (the last of the affinity "
        "mask); auto: on with 2 to 4 CPUs of its own [DRIFTSERVE_GIL_CPU, default auto]",
    )
    parser.add_argument(
        "--pin-workers",
        action="store_true",
        default=None,
        help="with --workers N: confine each worker to its own share of this process's CPUs [DRIFTSERVE_PIN_WORKERS]",
    )
    parser.add_argument(
        "--shed-in-grpc-core",
        action="store_true",
        default=None,
        help="gRPC refuses calls beyond --max-pending-calls with RESOURCE_EXHAUSTED, not CANCELLED "
        "(gRPC's promise-based HTTP/2 transport; ~13%% less throughput under load) [DRIFTSERVE_SHED_IN_GRPC_CORE]",
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
    parser.add_argument(
        "--load-model",
        dest="load_models",
        action="append",
        metavar="NAME",
        help="load only this model, repeatable; ready when every listed model is "
        "[DRIFTSERVE_LOAD_MODELS=a,b; default: every model, ready when one is]",
    )
    parser.add_argument(
        "--slo-p99-ms",
        type=float,
        help="p99 latency objective (ms) for models whose config sets no batching.slo_p99_ms "
        "[DRIFTSERVE_SLO_P99_MS, default off]",
    )
    parser.add_argument(
        "--exit-on-error",
        action="store_true",
        default=None,
        help="exit with code 1 if a model fails to load at start [DRIFTSERVE_EXIT_ON_ERROR, default off]",
    )
    add_security_flags(parser, "DRIFTSERVE_")
    mirror = parser.add_argument_group("mirror channel security (the sidecar's --tls-* and --auth-tokens-file)")
    mirror.add_argument(
        "--mirror-tls-ca",
        type=Path,
        help="CA (PEM) that verifies the sidecar: mirror over TLS [DRIFTSERVE_MIRROR_TLS_CA]",
    )
    mirror.add_argument(
        "--mirror-tls-cert",
        type=Path,
        help="client certificate (PEM) for a mutual-TLS sidecar [DRIFTSERVE_MIRROR_TLS_CERT]",
    )
    mirror.add_argument(
        "--mirror-tls-key", type=Path, help="private key of --mirror-tls-cert [DRIFTSERVE_MIRROR_TLS_KEY]"
    )
    mirror.add_argument(
        "--mirror-token-file",
        type=Path,
        help="file holding the token (scope mirror) the mirror presents [DRIFTSERVE_MIRROR_TOKEN_FILE]",
    )
    parser.add_argument(
        "--state-dir",
        help="rollout state directory [DRIFTSERVE_STATE_DIR, default <model-repository>/.driftserve/rollouts]",
    )
    parser.add_argument(
        "--poll-interval-s",
        type=float,
        help="look for new model versions this often, 0 = off [DRIFTSERVE_POLL_INTERVAL_S, default 0]",
    )
    parser.epilog = STARTUP_ERRORS_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The server's settings: flags over DRIFTSERVE_* variables over defaults."""
    return settings_from_args(ServerSettings, args)


def cmd_serve(args: argparse.Namespace) -> int:
    """``driftserve serve``: one server process, or ``--workers N`` of them on one port."""
    settings = server_settings(args)
    if settings.cpu_set:  # a worker of --workers --pin-workers: before any thread starts
        try:
            pin_to(parse_cpu_set(settings.cpu_set))
        except (ValueError, OSError) as exc:
            return startup_failed(StartupError(f"cannot confine this worker to CPUs {settings.cpu_set}: {exc}"))
    from driftserve.server.security import load_security

    try:
        check_repository(settings)
        load_security(settings)
    except StartupError as exc:
        return startup_failed(exc)
    if settings.shed_in_grpc_core and not grpc_core_shedding.enabled(os.environ):
        grpc_core_shedding.reexec_with_shedding()
    configure_logging(settings.log_level)
    if settings.workers > 1 and settings.poll_interval_s > 0:
        return startup_failed(
            StartupError(
                f"--poll-interval-s (or DRIFTSERVE_POLL_INTERVAL_S) needs --workers 1, got {settings.workers} "
                "workers: each would run its own rollout of the same model"
            )
        )
    if settings.workers > 1:
        from driftserve.server.workers import run_workers

        try:
            return run_workers(settings)
        except StartupError as exc:
            return startup_failed(exc)
    import uvloop

    from driftserve.server.app import serve

    try:
        return uvloop.run(serve(settings))
    except StartupError as exc:
        return startup_failed(exc)


def startup_failed(exc: StartupError) -> int:
    """Print the one line of a failed start and return its exit code."""
    print(f"driftserve serve: {exc.message}", file=sys.stderr, flush=True)
    return exc.exit_code
