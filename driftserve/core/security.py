"""The security flags every serving process shares, and what they load into.

``serve``, ``sidecar`` and ``run`` take the same four flags; ``Security.load`` reads and checks
their files once at start (a bad one is a ``StartupError`` naming the flag, exit code 2), and the
process binds its ports with ``Security.tls`` and puts ``Security.authority`` in front of its
services. A REST port plugs in the same way: ``security.tls.ssl_context()`` for the HTTP server and
``security.authority.authorize(request.headers.get("Authorization"), scope)`` per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from driftserve.core.auth import TokenAuthority
from driftserve.core.tls import ServerTls


@dataclass(frozen=True)
class Security:
    """A process's TLS settings and token authority, each None when off."""

    tls: ServerTls | None = None
    authority: TokenAuthority | None = None

    @classmethod
    def load(
        cls,
        tls_cert: Path | None,
        tls_key: Path | None,
        tls_client_ca: Path | None,
        auth_tokens_file: Path | None,
    ) -> Security:
        """Read and check the files of the four flags; ``StartupError`` naming the flag when one is wrong."""
        tls = ServerTls.load(tls_cert, tls_key, tls_client_ca)
        authority = TokenAuthority.from_file(auth_tokens_file) if auth_tokens_file is not None else None
        return cls(tls, authority)

    def describe(self) -> str:
        """For the start-up log line: "plaintext", "TLS", "mutual TLS", with "+ N tokens"."""
        mode = "plaintext" if self.tls is None else "mutual TLS" if self.tls.client_ca is not None else "TLS"
        return mode + (f", {len(self.authority)} bearer token(s)" if self.authority is not None else "")
