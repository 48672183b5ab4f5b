"""TLS files: checked at start with one line naming the flag; the SSL context an HTTP server uses."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from driftserve.core.startup import StartupError
from driftserve.core.tls import ServerTls, channel_credentials, server_ssl_context
from tests.tls_support import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_no_flags_is_plaintext_and_a_full_set_loads(pki: Pki) -> None:
    assert ServerTls.load(None, None, None) is None
    tls = ServerTls.load(pki.cert, pki.key, pki.client_ca)
    assert tls is not None and tls.client_ca == pki.client_ca
    assert tls.grpc_credentials() is not None


@pytest.mark.parametrize(
    ("which", "words"),
    [
        ("cert_only", "--tls-cert needs --tls-key too"),
        ("key_only", "--tls-key needs --tls-cert too"),
        ("ca_only", "--tls-client-ca needs --tls-cert and --tls-key"),
        ("missing_cert", "--tls-cert {d}/nope.pem does not exist"),
        ("not_pem", "--tls-key {d}/junk.pem is not a PEM file"),
        ("wrong_key", "--tls-key {key} does not fit --tls-cert {cert}"),
        ("bad_ca", "--tls-client-ca {d}/empty-ca.pem holds no usable CA certificate"),
    ],
)
def test_bad_tls_flags_are_one_startup_error_naming_the_flag(pki: Pki, tmp_path: Path, which: str, words: str) -> None:
    (tmp_path / "junk.pem").write_text("not a key\n")
    (tmp_path / "empty-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    args = {
        "cert_only": (pki.cert, None, None),
        "key_only": (None, pki.key, None),
        "ca_only": (None, None, pki.client_ca),
        "missing_cert": (tmp_path / "nope.pem", pki.key, None),
        "not_pem": (pki.cert, tmp_path / "junk.pem", None),
        "wrong_key": (pki.cert, pki.client_key, None),
        "bad_ca": (pki.cert, pki.key, tmp_path / "empty-ca.pem"),
    }[which]
    with pytest.raises(StartupError) as caught:
        ServerTls.load(*args)
    assert caught.value.exit_code == 2
    assert words.format(d=tmp_path, key=pki.client_key, cert=pki.cert) in caught.value.message
    assert "\n" not in caught.value.message


def test_a_client_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(StartupError, match="--mirror-tls-cert needs --mirror-tls-key too"):
        channel_credentials(
            None, Path("c.pem"), None, flags=("--mirror-tls-ca", "--mirror-tls-cert", "--mirror-tls-key")
        )


async def _handshake(context: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """Serve TLS with ``context`` on a free port and connect with ``client``; the line read back."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        return line.decode().strip()
    finally:
        server.close()


def _client(pki: Pki, with_cert: bool) -> ssl.SSLContext:
    client = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return client


def test_the_http_ssl_context_serves_tls(pki: Pki) -> None:
    assert asyncio.run(_handshake(server_ssl_context(pki.cert, pki.key), _client(pki, False))) == "hello"


def test_the_http_ssl_context_with_a_client_ca_requires_a_client_certificate(pki: Pki) -> None:
    context = server_ssl_context(pki.cert, pki.key, pki.client_ca)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert asyncio.run(_handshake(context, _client(pki, True))) == "hello"
    try:  # TLS 1.3 reports the missing certificate on the first read, not in the handshake
        line = asyncio.run(_handshake(context, _client(pki, False)))
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        line = ""
    assert line == ""
