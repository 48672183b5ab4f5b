"""How driftserve's own clients (``drift report``, ``bench``) reach a secured port.

``ClientSecurity`` holds the client flags (``core.security_flags.add_client_security_flags``) as
plain values, so it pickles into load-generator worker processes; it opens the channel (TLS when
a CA, or a client certificate, is given) and gives the call metadata that carries the token.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from driftserve.core.auth import bearer, check_token, read_token_file
from driftserve.core.startup import StartupError
from driftserve.core.tls import channel_credentials


@dataclass(frozen=True)
class ClientSecurity:
    """TLS files (None = plaintext) and the bearer token (None = none) of one client."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientSecurity:
        """From ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--token``, ``--token-file``;
        ``StartupError`` naming the flag when a file cannot be read or the token is malformed."""
        token = getattr(args, "token", None)
        if token is not None:
            problem = check_token(token)
            if problem:
                raise StartupError(f"--token: {problem}")
        token_file = getattr(args, "token_file", None)
        if token_file is not None:
            token = read_token_file(token_file, "--token-file")
        security = cls(
            getattr(args, "tls_ca", None), getattr(args, "tls_cert", None), getattr(args, "tls_key", None), token
        )
        if security.tls:
            security.credentials()  # every file readable now, not at the first call
        return security

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Metadata for every call: the token as ``authorization: Bearer ...`` (None without one)."""
        return bearer(self.token) if self.token is not None else None

    def credentials(self) -> grpc.ChannelCredentials:
        return channel_credentials(self.tls_ca, self.tls_cert, self.tls_key)

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking channel to ``target``: TLS when configured, else plaintext."""
        if self.tls:
            return grpc.secure_channel(target, self.credentials(), options=list(options))
        return grpc.insecure_channel(target, options=list(options))

    def aio_channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """An asyncio channel to ``target``: TLS when configured, else plaintext."""
        if self.tls:
            return grpc.aio.secure_channel(target, self.credentials(), options=list(options))
        return grpc.aio.insecure_channel(target, options=list(options))


def plaintext_hint(exc: grpc.RpcError, security: ClientSecurity) -> str:
    """A hint for a plaintext client whose connection a TLS port dropped ("" when it does not apply)."""
    code = exc.code() if hasattr(exc, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE and not security.tls:
        return " (if the port serves TLS, pass --tls-ca)"
    return ""
