"""The ``driftserve`` command: every subcommand is registered here, and only here.

    serve     the inference server              (driftserve.server.commands)
    run       server + drift sidecar together   (driftserve.launcher)
    sidecar   the drift sidecar alone           (driftserve.sidecar.commands)
    drift     reference profiles, live reports  (driftserve.sidecar.commands)
    models    versions and rollouts of a server (driftserve.server.models_commands)
    bench     the latency-SLO load generator    (driftserve.bench.cli; needs the bench extra)

Subpackages provide their flags and handlers; none imports another's command line. Handlers
import their heavy dependencies when they run, so ``driftserve --help`` stays fast and works on a
base install.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from driftserve import __version__
from driftserve.bench import cli as bench_cli
from driftserve.core.processes import follow_parent
from driftserve.launcher import add_run_flags, run_server_and_sidecar
from driftserve.server import models_commands
from driftserve.server.commands import add_serve_flags, cmd_serve
from driftserve.server.settings import ServerSettings
from driftserve.sidecar import commands as sidecar_commands
from driftserve.sidecar.settings import SidecarSettings

# The settings classes whose validation errors name their flags and environment variables.
SETTINGS_CLASSES: dict[str, type[BaseModel]] = {cls.__name__: cls for cls in (ServerSettings, SidecarSettings)}


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line (what is wrong, where to look) and exit code 2, not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = OneLineParser(
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
    models_commands.register(sub)
    bench_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's), run the subcommand, return its exit code."""
    follow_parent()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        prog = f"driftserve {args.command}"
        print(f"{prog}: {settings_error(exc, _flags_of(parser, args.command))}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:
        # The reader went away (`driftserve drift report | head`): what it read was all it wanted.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _flags_of(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """The long flag of each destination of subcommand ``command`` (``load_models`` -> ``--load-model``)."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            for option in action.choices[command]._actions:
                longs = [o for o in option.option_strings if o.startswith("--")]
                if longs and option.dest not in flags:
                    flags[option.dest] = longs[0]
    return flags


def settings_error(exc: ValidationError, flags: dict[str, str]) -> str:
    """A settings ValidationError as one line: each field's flag, its environment variable, what is wrong."""
    settings_class = SETTINGS_CLASSES.get(exc.title)
    prefix = str(settings_class.model_config.get("env_prefix", "")) if settings_class is not None else ""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        env = f"{prefix}{field}".upper()
        flag = flags.get(field)
        name = f"{flag} (or {env})" if flag else env
        if error["type"] == "missing":
            problems.append(f"{name} is required")
        else:
            problems.append(f"{name} is {_shown(error.get('input'))}: {_allowed(error)}")
    return "; ".join(problems)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _allowed(error: Any) -> str:
    """pydantic's message, on one line, without the 'Value error, ' prefix of custom validators."""
    message = " ".join(str(error["msg"]).split())
    return message.removeprefix("Value error, ")


if __name__ == "__main__":
    sys.exit(main())
