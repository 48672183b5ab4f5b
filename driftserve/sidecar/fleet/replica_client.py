"""How the aggregator reaches secured sidecars, and what it says when one refuses a pull.

``--replica-tls-ca`` (with ``--replica-tls-cert/--replica-tls-key`` for sidecars that require
client certificates) makes every pull channel TLS; ``--replica-token-file`` sends its token as
``authorization: Bearer <token>`` on every ``GetWindowState``. The files are read once at start
(``ReplicaClient.load``), so a bad one is a one-line ``StartupError`` naming the flag, and a file
that changes later never fails a pull round. ``refusal`` turns a pull the replica refused into
the reason and the fix the fleet block shows; a refusal is one more failed pull, never a blocked report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from driftserve.core.auth import read_token_file
from driftserve.core.client import ClientSecurity
from driftserve.core.tls import channel_credentials

CA_FLAG = "--replica-tls-ca"
CERT_FLAG = "--replica-tls-cert"
KEY_FLAG = "--replica-tls-key"
TOKEN_FLAG = "--replica-token-file"
# Label values of driftserve_fleet_pull_rejections_total, the same words as the server's mirror uses.
REJECTION_REASONS = ("unauthenticated", "permission_denied", "tls")


@dataclass(frozen=True)
class Refusal:
    """A pull the replica refused: the metric's reason and the line for the fleet block."""

    reason: str
    message: str


@dataclass(frozen=True)
class ReplicaClient:
    """The pull channels' credentials (None = plaintext) and the call metadata carrying the token."""

    security: ClientSecurity
    credentials: grpc.ChannelCredentials | None

    @classmethod
    def load(cls, ca: Path | None, cert: Path | None, key: Path | None, token_file: Path | None) -> ReplicaClient:
        """Read and check the four flags' files; ``StartupError`` naming the flag when one is wrong."""
        token = read_token_file(token_file, TOKEN_FLAG) if token_file is not None else None
        security = ClientSecurity(ca, cert, key, token)
        credentials = None
        if ca is not None or cert is not None or key is not None:  # a key alone is an error, never ignored
            credentials = channel_credentials(ca, cert, key, (CA_FLAG, CERT_FLAG, KEY_FLAG))
        return cls(security, credentials)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return self.security.metadata

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """An asyncio channel to one replica: TLS when configured, else plaintext."""
        if self.credentials is not None:
            return grpc.aio.secure_channel(address, self.credentials, options=list(options))
        return grpc.aio.insecure_channel(address, options=list(options))

    def describe(self) -> str:
        """For the start-up log line: "plaintext", "TLS", "mutual TLS", with "+ bearer token"."""
        mode = "plaintext" if self.credentials is None else "mutual TLS" if self.security.tls_cert else "TLS"
        return mode + (" + bearer token" if self.security.token is not None else "")

    def refusal(self, code: grpc.StatusCode | None, details: str) -> Refusal | None:
        """Why a replica refused a pull, with what to change; None when the pull failed otherwise."""
        if code == grpc.StatusCode.UNAUTHENTICATED:
            fix = (
                f"the sidecar does not accept the token in {TOKEN_FLAG}: add it to its --auth-tokens-file"
                if self.security.token is not None
                else f"the sidecar needs a bearer token: pass one with scope 'monitor' in {TOKEN_FLAG}"
            )
            return Refusal("unauthenticated", f"refused: UNAUTHENTICATED — {fix} ({details})")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return Refusal(
                "permission_denied",
                f"refused: PERMISSION_DENIED — the token in {TOKEN_FLAG} lacks the monitor scope ({details})",
            )
        lowered = details.lower()
        if code == grpc.StatusCode.UNAVAILABLE and any(
            w in lowered for w in ("ssl", "handshake", "certificate", "tls")
        ):
            fix = (
                f"{CA_FLAG} must verify the sidecar's certificate (and {CERT_FLAG}/{KEY_FLAG} be signed by "
                "its --tls-client-ca)"
            )
            return Refusal("tls", f"refused: TLS handshake failed — {fix} ({details})")
        return None

    def hint(self, code: grpc.StatusCode | None) -> str:
        """A hint for a plaintext pull a TLS port dropped ("" when it does not apply): gRPC reports it as
        UNAVAILABLE like a replica that is down, so it cannot be told apart for sure."""
        if code == grpc.StatusCode.UNAVAILABLE and self.credentials is None:
            return f" (if the sidecars serve TLS, pass {CA_FLAG})"
        return ""
