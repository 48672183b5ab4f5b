"""TLS, mutual TLS and bearer tokens on the server's gRPC port, through the real wire.

Certificates are made at test time (``tests.tls_support``); servers run in-process on port 0,
and the start-up errors through the ``driftserve`` command.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from driftserve.api import driftserve_pb2 as npb
from driftserve.api import grpc_service_pb2 as pb
from tests.cli_support import one_line, run_cli
from tests.server.support import InProcessServer, ServerProcess, v2_request, wait_until
from tests.tls_support import (
    ADMIN_TOKEN,
    INFER_TOKEN,
    MONITOR_TOKEN,
    UNKNOWN_TOKEN,
    Pki,
    bearer,
    make_pki,
    write_token,
    write_tokens,
)

MODEL = "breast_cancer_lr"
X = np.linspace(-1, 1, 30, dtype=np.float32).reshape(1, 30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("auth") / "tokens")


@pytest.fixture(scope="module")
def secured(example_repository: Path, pki: Pki, tokens: Path) -> Iterator[InProcessServer]:
    """TLS and tokens."""
    with InProcessServer(example_repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=tokens) as server:
        yield server


def tls_channel(server: InProcessServer, pki: Pki, client_cert: bool = False, stranger: bool = False) -> grpc.Channel:
    key, cert = (pki.stranger_key, pki.stranger_cert) if stranger else (pki.client_key, pki.client_cert)
    credentials = grpc.ssl_channel_credentials(
        pki.read("ca"),
        key.read_bytes() if client_cert or stranger else None,
        cert.read_bytes() if client_cert or stranger else None,
    )
    return grpc.secure_channel(server.address, credentials)


def rejected(server: InProcessServer, reason: str) -> float:
    return server.metric("driftserve_server_auth_rejections_total", reason=reason)


def test_tritonclient_over_tls_with_a_token_infers(secured: InProcessServer, pki: Pki) -> None:
    client = tritongrpc.InferenceServerClient(secured.address, ssl=True, root_certificates=str(pki.ca))
    headers = {"authorization": f"Bearer {INFER_TOKEN}"}
    assert client.is_server_live()  # V2 health: no token needed
    infer_input = tritongrpc.InferInput("input", list(X.shape), "FP32")
    infer_input.set_data_from_numpy(X)
    result = client.infer(MODEL, [infer_input], headers=headers)
    assert result.as_numpy("probabilities").shape == (1, 2)
    assert client.get_model_metadata(MODEL, headers=headers).name == MODEL
    with pytest.raises(tritongrpc.InferenceServerException, match="UNAUTHENTICATED") as caught:
        client.infer(MODEL, [infer_input])
    assert "missing bearer token" in str(caught.value)


def test_a_plaintext_client_cannot_talk_to_the_tls_port(secured: InProcessServer) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        secured.v2().ServerLive(pb.ServerLiveRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_missing_unknown_and_malformed_tokens_are_unauthenticated_and_counted(
    secured: InProcessServer, pki: Pki
) -> None:
    stub = secured.v2(tls_channel(secured, pki))
    served_before = secured.metric("driftserve_server_requests_total")
    cases = [(None, "missing"), (bearer(UNKNOWN_TOKEN), "unknown"), ((("authorization", "Basic abc"),), "malformed")]
    for metadata, reason in cases:
        before = rejected(secured, reason)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(v2_request(MODEL, X), metadata=metadata, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert UNKNOWN_TOKEN not in (caught.value.details() or "")
        assert rejected(secured, reason) == before + 1
    # Refused before any handler ran: the data plane counted no request.
    assert secured.metric("driftserve_server_requests_total") == served_before


def test_a_token_without_the_scope_is_permission_denied(secured: InProcessServer, pki: Pki) -> None:
    channel = tls_channel(secured, pki)
    before = rejected(secured, "scope")
    with pytest.raises(grpc.RpcError) as caught:
        secured.v2(channel).ModelInfer(v2_request(MODEL, X), metadata=bearer(MONITOR_TOKEN), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks scope 'infer'" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as caught:
        secured.v2(channel).RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name=MODEL), metadata=bearer(INFER_TOKEN), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks scope 'admin'" in (caught.value.details() or "")
    assert rejected(secured, "scope") == before + 2
    # The admin token may use the control RPCs (a load of a loaded model is a no-op reload).
    secured.v2(channel).RepositoryIndex(pb.RepositoryIndexRequest(), metadata=bearer(ADMIN_TOKEN), timeout=10)


def test_every_service_and_stream_checks_the_token(secured: InProcessServer, pki: Pki) -> None:
    channel = tls_channel(secured, pki)
    native = secured.native(channel)
    request = npb.PredictRequest(
        model=MODEL, inputs=[npb.Tensor(name="input", datatype="FP32", shape=[1, 30], data=X.tobytes())]
    )
    with pytest.raises(grpc.RpcError) as caught:
        native.Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert native.Predict(request, metadata=bearer(INFER_TOKEN), timeout=10).outputs
    with pytest.raises(grpc.RpcError) as caught:
        list(secured.v2(channel).ModelStreamInfer(iter([v2_request(MODEL, X)]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    replies = list(
        secured.v2(channel).ModelStreamInfer(iter([v2_request(MODEL, X)]), metadata=bearer(INFER_TOKEN), timeout=10)
    )
    assert len(replies) == 1 and not replies[0].error_message


def test_health_needs_no_token_and_reflection_needs_any_valid_one(secured: InProcessServer, pki: Pki) -> None:
    channel = tls_channel(secured, pki)
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert secured.v2(channel).ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as caught:
        list(reflect.ServerReflectionInfo(iter([ask]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    replies = list(reflect.ServerReflectionInfo(iter([ask]), metadata=bearer(MONITOR_TOKEN), timeout=10))
    assert "inference.GRPCInferenceService" in {s.name for r in replies for s in r.list_services_response.service}


def test_mutual_tls_accepts_only_certificates_of_the_client_ca(example_repository: Path, pki: Pki) -> None:
    with InProcessServer(example_repository, tls_cert=pki.cert, tls_key=pki.key, tls_client_ca=pki.client_ca) as server:
        reply = server.v2(tls_channel(server, pki, client_cert=True)).ModelInfer(v2_request(MODEL, X), timeout=10)
        assert reply.model_name == MODEL
        for channel in (tls_channel(server, pki), tls_channel(server, pki, stranger=True)):
            with pytest.raises(grpc.RpcError) as caught:
                server.v2(channel).ModelInfer(v2_request(MODEL, X), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tokens_without_tls_guard_a_plaintext_port(example_repository: Path, tokens: Path) -> None:
    with InProcessServer(example_repository, auth_tokens_file=tokens) as server:
        with pytest.raises(grpc.RpcError) as caught:
            server.v2().ModelInfer(v2_request(MODEL, X), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert server.v2().ModelInfer(v2_request(MODEL, X), metadata=bearer(INFER_TOKEN), timeout=10).outputs


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--tls-cert", "{cert}"), "--tls-cert needs --tls-key too"),
        (("--tls-cert", "{tmp}/absent.pem", "--tls-key", "{key}"), "--tls-cert {tmp}/absent.pem does not exist"),
        (("--auth-tokens-file", "{tmp}/absent"), "--auth-tokens-file {tmp}/absent does not exist"),
        (("--tls-client-ca", "{ca}"), "--tls-client-ca needs --tls-cert and --tls-key"),
        (
            ("--mirror-address", "127.0.0.1:1", "--mirror-token-file", "{tmp}/absent"),
            "--mirror-token-file {tmp}/absent does not exist",
        ),
        (("--mirror-address", "127.0.0.1:1", "--mirror-tls-ca", "{tmp}/absent"), "--mirror-tls-ca {tmp}/absent"),
        (("--mirror-tls-ca", "{ca}"), "need --mirror-address"),
    ],
)
def test_bad_security_flags_are_one_line_and_exit_2(
    example_repository: Path, pki: Pki, tmp_path: Path, flags: tuple[str, ...], words: str
) -> None:
    values = {"cert": pki.cert, "key": pki.key, "ca": pki.ca, "tmp": tmp_path}
    argv = [flag.format(**values) for flag in flags]
    line = one_line(run_cli("serve", "--model-repository", str(example_repository), "--grpc-port", "0", *argv), 2)
    assert line.startswith("driftserve serve: ")
    assert words.format(**values) in line


def test_run_names_what_the_loopback_mirror_lacks(
    example_repository: Path, pki: Pki, tokens: Path, tmp_path: Path
) -> None:
    base = ("run", "--model-repository", str(example_repository), "--grpc-port", "0")
    line = one_line(run_cli(*base, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)), 2)
    assert "pass --mirror-tls-ca" in line
    line = one_line(run_cli(*base, "--auth-tokens-file", str(tokens)), 2)
    assert "pass --mirror-token-file" in line
    token = write_token(tmp_path / "token", "short")
    line = one_line(run_cli(*base, "--auth-tokens-file", str(tokens), "--mirror-token-file", str(token)), 2)
    assert f"--mirror-token-file {token}: a token must be 16 to 512 characters" in line


def test_sighup_reloads_the_tokens_file_and_keeps_the_old_tokens_when_it_is_invalid(
    example_repository: Path, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "tokens")
    new_token = "rotated-token-0123456789abcdef"
    with ServerProcess(example_repository, "--auth-tokens-file", str(tokens)) as server:

        def status(token: str) -> grpc.StatusCode:
            try:
                server.v2().ModelInfer(v2_request(MODEL, X), metadata=bearer(token), timeout=10)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        assert status(INFER_TOKEN) == grpc.StatusCode.OK
        tokens.write_text(f"{new_token} infer\n")
        os.kill(server.process.pid, signal.SIGHUP)
        wait_until(lambda: status(new_token) == grpc.StatusCode.OK)
        assert status(INFER_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
        tokens.write_text("short infer\n")
        os.kill(server.process.pid, signal.SIGHUP)
        wait_until(lambda: any("tokens not reloaded" in line for line in server.lines))
        assert status(new_token) == grpc.StatusCode.OK
        assert server.terminate() == 0
