"""TLS for every port driftserve serves and every channel it opens, from PEM files.

The server side is three flags on each process (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``;
mutual TLS when the client CA is given); ``ServerTls.load`` checks them at start and turns them
into gRPC credentials (``grpc_credentials``) or an ``ssl.SSLContext`` for an HTTP server
(``server_ssl_context``). A missing, unreadable or mismatched file is a ``StartupError`` naming the
flag. The client side (the mirror channel, the CLI clients) is ``channel_credentials``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from driftserve.core.startup import StartupError

CERT_FLAG = "--tls-cert"
KEY_FLAG = "--tls-key"
CLIENT_CA_FLAG = "--tls-client-ca"


def read_pem(path: Path, flag: str) -> bytes:
    """The bytes of a PEM file; ``StartupError`` naming ``flag`` when it is missing, unreadable or not PEM."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StartupError(f"{flag} {path} does not exist; pass an existing PEM file") from None
    except OSError as exc:
        raise StartupError(f"{flag} {path} cannot be read ({exc.strerror or exc}); pass a readable PEM file") from None
    if b"-----BEGIN " not in data:
        raise StartupError(f"{flag} {path} is not a PEM file (no '-----BEGIN' line)")
    return data


def server_ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for an HTTP server: TLS 1.2+, and client certificates required when
    ``client_ca`` is given (mutual TLS). ``StartupError`` naming the flag when a file is wrong."""
    for path, flag in ((cert, CERT_FLAG), (key, KEY_FLAG), (client_ca, CLIENT_CA_FLAG)):
        if path is not None:
            read_pem(path, flag)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise StartupError(
            f"{KEY_FLAG} {key} does not fit {CERT_FLAG} {cert} ({exc.reason or exc}); pass the key of that certificate"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except ssl.SSLError as exc:
            raise StartupError(
                f"{CLIENT_CA_FLAG} {client_ca} holds no usable CA certificate ({exc.reason or exc})"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(frozen=True)
class ServerTls:
    """A process's server certificate, its key, and the CA its clients' certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def load(cls, cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
        """The TLS settings of the three flags, checked (None when TLS is off); ``StartupError``
        naming the flag for a cert without a key (or the reverse), a client CA without a cert, or
        a file that is missing, unreadable, not PEM or does not fit."""
        if cert is None and key is None:
            if client_ca is not None:
                raise StartupError(f"{CLIENT_CA_FLAG} needs {CERT_FLAG} and {KEY_FLAG}: mutual TLS is TLS first")
            return None
        if cert is None or key is None:
            given, missing = (CERT_FLAG, KEY_FLAG) if key is None else (KEY_FLAG, CERT_FLAG)
            raise StartupError(f"{given} needs {missing} too: pass the certificate and its private key")
        server_ssl_context(cert, key, client_ca)  # every file readable, PEM, and the key fits
        return cls(cert, key, client_ca)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials: client certificates required when a client CA is set."""
        ca = read_pem(self.client_ca, CLIENT_CA_FLAG) if self.client_ca is not None else None
        return grpc.ssl_server_credentials(
            [(read_pem(self.key, KEY_FLAG), read_pem(self.cert, CERT_FLAG))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same settings for an HTTP server (``aiohttp.web.TCPSite(ssl_context=...)``)."""
        return server_ssl_context(self.cert, self.key, self.client_ca)


def channel_credentials(
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    flags: tuple[str, str, str] = ("--tls-ca", "--tls-cert", "--tls-key"),
) -> grpc.ChannelCredentials:
    """gRPC channel credentials: ``ca`` verifies the server (None: the system's roots), ``cert``
    and ``key`` are this client's certificate for mutual TLS. ``flags`` name the three in errors."""
    if (cert is None) != (key is None):
        given, missing = (flags[1], flags[2]) if key is None else (flags[2], flags[1])
        raise StartupError(f"{given} needs {missing} too: pass the client certificate and its private key")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, flags[0]) if ca is not None else None,
        private_key=read_pem(key, flags[2]) if key is not None else None,
        certificate_chain=read_pem(cert, flags[1]) if cert is not None else None,
    )
