"""Refusing the surplus in gRPC's core with RESOURCE_EXHAUSTED (``--shed-in-grpc-core``).

Under overload the queue that grows is gRPC's own: calls it received that the event loop has not
taken yet. Past ``--max-pending-calls`` gRPC's core refuses new calls at once, but its default
HTTP/2 server transport does so by resetting the call, which clients see as CANCELLED, a code
that says nothing about load and that retry policies do not treat as retryable. grpcio's
promise-based HTTP/2 server transport (the ``ph2_server`` experiment of grpcio 1.85) refuses the
same calls with RESOURCE_EXHAUSTED "Too many pending requests for this server", within a
millisecond, and answers no differently otherwise (driftserve's server and integration tests
pass on it). It costs throughput (about 13% at 32 clients on 2 cores, none at one;
docs/RELIABILITY.md), so it is opt-in.

gRPC reads ``GRPC_EXPERIMENTS`` once, when it is imported, before any driftserve code can choose.
A server started with the flag therefore re-executes itself once with the experiment added to the
environment, before it binds a port or starts a thread; its children (``--workers``) inherit it.
Refusals in gRPC's core never reach Python, so the server's metrics do not count them; clients do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import NoReturn

EXPERIMENT = "ph2_server"
ENV = "GRPC_EXPERIMENTS"


def _experiments(environ: Mapping[str, str]) -> list[str]:
    return [part.strip() for part in environ.get(ENV, "").split(",") if part.strip()]


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether gRPC in a process started with ``environ`` refuses its backlog with RESOURCE_EXHAUSTED."""
    return EXPERIMENT in _experiments(environ)


def environment_with_shedding(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the experiment added to any experiments already asked for."""
    current = _experiments(environ)
    return {**environ, ENV: ",".join(current if EXPERIMENT in current else [*current, EXPERIMENT])}


def reexec_with_shedding() -> NoReturn:
    """Replace this process by the same command line, run by the same interpreter, with the
    experiment on."""
    command = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environment_with_shedding(os.environ))
