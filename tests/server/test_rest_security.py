"""TLS, mutual TLS and bearer tokens on the REST port: the same flags, tokens and scopes as gRPC.

Certificates are made at test time (``tests.tls_support``); the server runs in-process with both
ports, and the REST side is spoken by the standard library's HTTPS client and by
``tritonclient.http``.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server.support import InProcessServer
from tests.tls_support import ADMIN_TOKEN, INFER_TOKEN, MONITOR_TOKEN, UNKNOWN_TOKEN, Pki, make_pki, write_tokens

MODEL = "breast_cancer_lr"
X = np.linspace(-1, 1, 30, dtype=np.float32).reshape(1, 30)
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(example_repository: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    tokens = write_tokens(tmp_path_factory.mktemp("auth") / "tokens")
    with InProcessServer(example_repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=tokens) as server:
        yield server


def client_context(pki: Pki, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def request(
    server: InProcessServer,
    context: ssl.SSLContext,
    method: str,
    path: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One HTTPS request; the status, the headers and the JSON body."""
    connection = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=context, timeout=TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        text = response.read()
        return response.status, dict(response.getheaders()), json.loads(text) if text else {}
    finally:
        connection.close()


def infer_body() -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}]}


def test_health_is_open_and_everything_else_needs_a_token(secured: InProcessServer, pki: Pki) -> None:
    context = client_context(pki)
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        status, _, _ = request(secured, context, "GET", path)
        assert status == 200, path
    before = secured.metric("driftserve_server_auth_rejections_total", reason="missing")
    status, headers, body = request(secured, context, "POST", f"/v2/models/{MODEL}/infer", body=infer_body())
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert "authorization: Bearer <token>" in body["error"]
    assert secured.metric("driftserve_server_auth_rejections_total", reason="missing") == before + 1


def test_a_known_token_infers_and_an_unknown_one_is_refused(secured: InProcessServer, pki: Pki) -> None:
    context = client_context(pki)
    status, _, body = request(secured, context, "POST", f"/v2/models/{MODEL}/infer", INFER_TOKEN, infer_body())
    assert status == 200, body
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 2]
    status, _, body = request(secured, context, "GET", f"/v2/models/{MODEL}", UNKNOWN_TOKEN)
    assert status == 401
    assert "unknown bearer token" in body["error"]
    assert UNKNOWN_TOKEN not in body["error"]


def test_a_token_without_the_scope_is_forbidden(secured: InProcessServer, pki: Pki) -> None:
    context = client_context(pki)
    status, _, body = request(secured, context, "POST", f"/v2/repository/models/{MODEL}/load", INFER_TOKEN, {})
    assert status == 403
    assert "lacks scope 'admin'" in body["error"]
    status, _, body = request(secured, context, "GET", f"/v2/models/{MODEL}", MONITOR_TOKEN)
    assert status == 403
    status, _, body = request(secured, context, "POST", f"/v2/repository/models/{MODEL}/load", ADMIN_TOKEN, {})
    assert status == 200, body


def test_plain_http_is_refused_at_the_tls_port(secured: InProcessServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", secured.http_port, timeout=TIMEOUT_S)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            connection.request("GET", "/v2/health/live")
            response = connection.getresponse()
            response.read()
            # A TLS listener may answer plain HTTP with a TLS alert rather than close; never a 200.
            assert response.status != 200
            raise ConnectionError(f"plain HTTP got status {response.status}")
    finally:
        connection.close()


@contextlib.contextmanager
def triton_https(server: InProcessServer, pki: Pki) -> Iterator[httpclient.InferenceServerClient]:
    """``tritonclient.http`` over HTTPS, freed in this thread (its gevent pool must be)."""
    holder = [
        httpclient.InferenceServerClient(
            f"127.0.0.1:{server.http_port}",
            ssl=True,
            ssl_options={"ca_certs": str(pki.ca)},
            network_timeout=TIMEOUT_S,
        )
    ]
    try:
        yield holder[0]
    finally:
        holder.pop().close()
        gc.collect()


# tritonclient.http's HTTPS goes through geventhttpclient and gevent's ssl module, which still use
# deprecated ssl APIs (PROTOCOL_TLS, match_hostname): their warnings, not ours.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tritonclient_http_over_tls_with_a_token(secured: InProcessServer, pki: Pki) -> None:
    headers = {"Authorization": f"Bearer {INFER_TOKEN}"}
    with triton_https(secured, pki) as client:
        assert client.is_server_ready()
        infer_input = httpclient.InferInput("input", list(X.shape), "FP32")
        infer_input.set_data_from_numpy(X, binary_data=True)
        result = client.infer(MODEL, [infer_input], headers=headers)
        assert result.as_numpy("probabilities").shape == (1, 2)


def test_mutual_tls_on_the_rest_port_needs_a_client_certificate(example_repository: Path, pki: Pki) -> None:
    with InProcessServer(example_repository, tls_cert=pki.cert, tls_key=pki.key, tls_client_ca=pki.client_ca) as server:
        status, _, _ = request(server, client_context(pki, client_cert=True), "GET", "/v2/health/ready")
        assert status == 200
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            request(server, client_context(pki), "GET", "/v2/health/ready")
