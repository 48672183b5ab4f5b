"""Certificates and tokens made at test time, written as the PEM files the flags take.

``make_pki(directory)`` writes a server CA and a server certificate for 127.0.0.1 / localhost,
and a separate client CA with one client certificate it signed and one signed by a stranger CA.
``write_tokens`` writes a tokens file; the tokens are fixed strings of the right length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme

INFER_TOKEN = "infer-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
MONITOR_TOKEN = "monitor-token-0123456789abcdef"
MIRROR_TOKEN = "mirror-token-0123456789abcdef"
UNKNOWN_TOKEN = "unknown-token-0123456789abcdef"


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files of one test's certificates."""

    ca: Path  # verifies the server
    cert: Path  # server certificate chain
    key: Path
    client_ca: Path  # signs client certificates
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from a CA the server does not trust
    stranger_key: Path

    def read(self, name: str) -> bytes:
        return Path(getattr(self, name)).read_bytes()


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    client = client_ca.issue_cert("driftserve-test-client")
    stranger = stranger_ca.issue_cert("driftserve-stranger")
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
        "client_ca": directory / "client-ca.pem",
        "client_cert": directory / "client.pem",
        "client_key": directory / "client.key",
        "stranger_cert": directory / "stranger.pem",
        "stranger_key": directory / "stranger.key",
    }
    server_ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    paths["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    client_ca.cert_pem.write_to_path(str(paths["client_ca"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    paths["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    stranger.private_key_pem.write_to_path(str(paths["stranger_key"]))
    paths["stranger_cert"].write_bytes(b"".join(blob.bytes() for blob in stranger.cert_chain_pems))
    return Pki(**paths)


def write_tokens(path: Path) -> Path:
    """A tokens file granting each scope to its token (and nothing to UNKNOWN_TOKEN), mode 600."""
    path.write_text(
        "# test tokens\n"
        f"{INFER_TOKEN} infer\n"
        f"{ADMIN_TOKEN} infer,admin   # operators\n"
        f"\n{MONITOR_TOKEN} monitor\n"
        f"{MIRROR_TOKEN} mirror\n"
    )
    os.chmod(path, 0o600)
    return path


def write_token(path: Path, token: str) -> Path:
    """A client's token file (one token), mode 600."""
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    return path


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
