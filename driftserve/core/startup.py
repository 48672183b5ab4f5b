"""What both processes do the same way when they cannot start: one line, the right exit code.

A start that fails says, in one line, what is wrong and how to fix it (which flag or variable,
which path or port); exit code 2 when a setting must change, 1 when the start failed at run time.
"""

from __future__ import annotations

import errno
import logging
import socket

EXIT_USAGE = 2
EXIT_FAILURE = 1
LOG_LEVELS = tuple(name for name in logging.getLevelNamesMapping() if name not in ("NOTSET", "WARN", "FATAL"))


class StartupError(Exception):
    """A process that cannot start: ``message`` is one line naming what is wrong and how to fix it."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def check_log_level(value: str) -> str:
    """A settings validator: ``value`` must name a logging level."""
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"not a logging level; use one of {', '.join(LOG_LEVELS)}")
    return value


def bind_problem(exc: OSError) -> str:
    """Why an address cannot be bound, in words that fit after "port N on HOST"."""
    if exc.errno == errno.EADDRINUSE:
        return "is in use"
    if exc.errno == errno.EACCES:
        return "needs privileges (ports below 1024 do)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "cannot be bound: the address is not one of this machine"
    return f"cannot be bound ({exc.strerror or exc})"


def probe_tcp_port(host: str, port: int, reuse_port: bool = False) -> None:
    """Raise the OSError (or ``socket.gaierror``) that binding ``host:port`` as gRPC does would meet.

    gRPC's own failure is a RuntimeError without the reason, and its C core logs the reason to
    stderr; a plain socket bound the same way first gives the reason to put in one line.
    """
    if port == 0:
        return
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    for family, kind, proto, _, address in socket.getaddrinfo(
        bare or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
