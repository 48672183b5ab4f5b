"""The ``driftserve`` command: every subcommand is registered here, and only here.

    serve     the inference server              (driftserve.server.commands)
    run       server + drift sidecar together   (driftserve.launcher)
    sidecar   the drift sidecar alone           (driftserve.sidecar.commands)
    drift     reference profiles, live reports  (driftserve.sidecar.commands)
    bench     the latency-SLO load generator    (driftserve.bench.cli; needs the bench extra)

Subpackages provide their flags and handlers; none imports another's command line. Handlers
import their heavy dependencies when they run, so ``driftserve --help`` stays fast and works on a
base install.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from driftserve import __version__
from driftserve.bench import cli as bench_cli
from driftserve.core.processes import follow_parent
from driftserve.launcher import add_run_flags, run_server_and_sidecar
from driftserve.server.commands import add_serve_flags, cmd_serve
from driftserve.sidecar import commands as sidecar_commands


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="driftserve",
        description="A low-latency ONNX model server with a live drift sidecar.",
    )
    parser.add_argument("--version", action="version", version=f"driftserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the inference server")
    add_serve_flags(serve)
    serve.set_defaults(func=cmd_serve)
    run = sub.add_parser("run", help="run the inference server and the drift sidecar together")
    add_serve_flags(run)
    add_run_flags(run)
    run.set_defaults(func=run_server_and_sidecar)
    sidecar_commands.register(sub)
    bench_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's), run the subcommand, return its exit code."""
    follow_parent()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        print(f"driftserve: invalid settings:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
