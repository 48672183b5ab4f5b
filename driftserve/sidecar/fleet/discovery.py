"""Finding the replicas' sidecars: addresses given, or names that resolve to many addresses.

``--replicas`` is a comma-separated list of ``host:port``. Each host is resolved with
``socket.getaddrinfo`` on every pull, so a Kubernetes headless Service name (one A record per
ready pod) yields every pod's sidecar, and pods that come and go are followed without a restart.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One ``host:port`` entry of ``--replicas``."""

    host: str
    port: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_targets(spec: str) -> list[Target]:
    """The entries of a comma-separated ``host:port`` list; ValueError says which entry is wrong."""
    targets: list[Target] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        host = host[1:-1] if bracketed else host
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"replica {entry!r} is not host:port (port 1..65535); e.g. 10.0.0.7:8003, "
                "[::1]:8003 or sidecars.default.svc.cluster.local:8003"
            )
        if ":" in host or bracketed:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"replica {entry!r}: {host!r} is not an IPv6 address in [addr]:port") from None
            if not bracketed:
                raise ValueError(f"replica {entry!r}: write an IPv6 address in brackets, [addr]:port")
        targets.append(Target(host, int(port)))
    if not targets:
        raise ValueError("no replicas given; pass --replicas host:port[,host:port...] or a headless Service name")
    return targets


def resolve(targets: list[Target]) -> tuple[list[str], dict[str, str]]:
    """Every address the targets resolve to now (sorted, unique), and the error per target that did not."""
    addresses: set[str] = set()
    errors: dict[str, str] = {}
    for target in targets:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            errors[str(target)] = f"cannot resolve {target.host!r}: {getattr(exc, 'strerror', None) or exc}"
            continue
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                addresses.add(join_host_port(str(sockaddr[0]), target.port))
    return sorted(addresses), errors
