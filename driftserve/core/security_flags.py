"""The security flags of the serving processes and of the clients, without importing gRPC.

``serve``, ``sidecar`` and ``run`` take the same four server flags (``core.security.Security``
loads them); the commands that call a driftserve port take the client flags
(``core.client.secure_channel`` uses them). The command line imports this module, so it stays
light: ``driftserve --help`` does not load gRPC.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The settings fields of the four server flags, the same on every process.
SECURITY_FIELDS = ("tls_cert", "tls_key", "tls_client_ca", "auth_tokens_file")


def add_security_flags(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    """``--tls-cert``, ``--tls-key``, ``--tls-client-ca``, ``--auth-tokens-file`` on ``parser``."""
    group = parser.add_argument_group("TLS and authentication (see README 'Security')")
    group.add_argument(
        "--tls-cert",
        type=Path,
        help=f"server certificate chain, PEM: serve TLS [{env_prefix}TLS_CERT; default plaintext]",
    )
    group.add_argument("--tls-key", type=Path, help=f"private key of --tls-cert, PEM [{env_prefix}TLS_KEY]")
    group.add_argument(
        "--tls-client-ca",
        type=Path,
        help=f"CA bundle, PEM: require client certificates it signed (mutual TLS) [{env_prefix}TLS_CLIENT_CA]",
    )
    group.add_argument(
        "--auth-tokens-file",
        type=Path,
        help="file of '<token> <scope>[,<scope>...]' lines: every call but health needs "
        f"'authorization: Bearer <token>' [{env_prefix}AUTH_TOKENS_FILE; default no tokens]",
    )


def add_client_security_flags(parser: argparse.ArgumentParser) -> None:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--token``, ``--token-file`` for a client command."""
    group = parser.add_argument_group("TLS and authentication of the connection (see README 'Security')")
    group.add_argument("--tls-ca", type=Path, help="CA (PEM) that verifies the server: connect with TLS")
    group.add_argument("--tls-cert", type=Path, help="client certificate (PEM), for a server with --tls-client-ca")
    group.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    tokens = group.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token-file", type=Path, help="file whose first line is the bearer token to send (preferred over --token)"
    )
    tokens.add_argument("--token", help="bearer token to send (visible to other users in the process list)")
