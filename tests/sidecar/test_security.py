"""The sidecar's gRPC port under TLS and tokens, the server's mirror into it, and where HTTP binds.

The mirror tests run the real server and the real sidecar in this process on free ports: a mirror
with the right CA and token delivers rows; one with a wrong token is refused, logged and counted
on both sides, and inference is not affected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc, grpc_service_pb2_grpc
from driftserve.cli import main
from driftserve.core.ports import free_port
from driftserve.core.processes import start_child
from tests.server.support import ROOT, InProcessServer, v2_request
from tests.sidecar.support import MODEL, InProcessSidecar, batches_from, reference_rows, wait_for
from tests.tls_support import (
    INFER_TOKEN,
    MIRROR_TOKEN,
    MONITOR_TOKEN,
    UNKNOWN_TOKEN,
    Pki,
    bearer,
    make_pki,
    write_token,
    write_tokens,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("auth") / "tokens")


@pytest.fixture
def secured(repository: Path, pki: Pki, tokens: Path) -> Iterator[InProcessSidecar]:
    with InProcessSidecar(repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=tokens) as sidecar:
        yield sidecar


def channel(sidecar: InProcessSidecar, pki: Pki) -> grpc.Channel:
    return grpc.secure_channel(sidecar.running.address, grpc.ssl_channel_credentials(pki.read("ca")))


def rejected(sidecar: InProcessSidecar, reason: str) -> float:
    return sidecar.sample("driftserve_sidecar_auth_rejections_total", reason=reason) or 0.0


def test_publish_needs_a_mirror_token_and_monitor_a_monitor_token(
    secured: InProcessSidecar, pki: Pki, primary: ort.InferenceSession
) -> None:
    batches = batches_from(reference_rows(np.random.default_rng(3), 256), primary)
    with channel(secured, pki) as ch:
        mirror = driftserve_pb2_grpc.MirrorStub(ch)
        monitor = driftserve_pb2_grpc.MonitorStub(ch)
        for metadata, code, reason in (
            (None, grpc.StatusCode.UNAUTHENTICATED, "missing"),
            (bearer(UNKNOWN_TOKEN), grpc.StatusCode.UNAUTHENTICATED, "unknown"),
            (bearer(MONITOR_TOKEN), grpc.StatusCode.PERMISSION_DENIED, "scope"),
        ):
            before = rejected(secured, reason)
            with pytest.raises(grpc.RpcError) as caught:
                mirror.Publish(iter(batches), metadata=metadata, timeout=30)
            assert caught.value.code() == code
            assert rejected(secured, reason) == before + 1
        assert (secured.sample("driftserve_sidecar_rows_total") or 0.0) == 0.0  # nothing refused got in
        assert mirror.Publish(iter(batches), metadata=bearer(MIRROR_TOKEN), timeout=30).rows == 256
        with pytest.raises(grpc.RpcError) as caught:
            monitor.ListModels(driftserve_pb2.ListModelsRequest(), metadata=bearer(MIRROR_TOKEN), timeout=30)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert list(monitor.ListModels(driftserve_pb2.ListModelsRequest(), metadata=bearer(MONITOR_TOKEN)).models) == [
            MODEL
        ]
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_drift_report_cli_uses_tls_ca_and_token_file(
    secured: InProcessSidecar, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["drift", "report", "--address", secured.running.address, "--timeout-s", "30"]
    assert main([*base, "--tls-ca", str(pki.ca), "--token-file", str(write_token(tmp_path / "t", MONITOR_TOKEN))]) == 0
    assert f"model {MODEL}:" in capsys.readouterr().out
    assert main([*base, "--tls-ca", str(pki.ca)]) == 1
    assert "UNAUTHENTICATED: missing bearer token" in capsys.readouterr().err
    assert main([*base, "--token", MONITOR_TOKEN]) == 1  # plaintext against the TLS port
    assert "UNAVAILABLE" in (err := capsys.readouterr().err) and "pass --tls-ca" in err
    assert main([*base, "--tls-ca", str(tmp_path / "absent.pem")]) == 2
    assert "--tls-ca" in capsys.readouterr().err


def test_http_binds_loopback_unless_told_otherwise(repository: Path) -> None:
    with InProcessSidecar(repository) as sidecar:
        assert sidecar.running.http is not None and sidecar.running.http.host == "127.0.0.1"
    with InProcessSidecar(repository, http_host="0.0.0.0") as sidecar:
        assert sidecar.running.http is not None and sidecar.running.http.host == "0.0.0.0"
        assert sidecar.http("/api/drift")[0] == 200


def _infer_until_mirrored(server: InProcessServer, predicate: object, what: str) -> None:
    stub = server.v2()
    x = reference_rows(np.random.default_rng(5), 8)

    def served_and_check() -> bool:
        reply = stub.ModelInfer(v2_request(MODEL, x), timeout=30)  # inference never fails meanwhile
        assert reply.model_name == MODEL
        return bool(predicate())  # type: ignore[operator]

    wait_for(served_and_check, timeout_s=60, what=what)


def test_mirror_over_tls_with_its_token_reaches_the_sidecar(
    repository: Path, pki: Pki, tokens: Path, tmp_path: Path
) -> None:
    with InProcessSidecar(repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=tokens) as sidecar:
        token = write_token(tmp_path / "mirror-token", MIRROR_TOKEN)
        with InProcessServer(
            repository,
            mirror_address=sidecar.running.address,
            mirror_tls_ca=pki.ca,
            mirror_token_file=token,
        ) as server:
            _infer_until_mirrored(
                server, lambda: (sidecar.sample("driftserve_sidecar_rows_total") or 0) >= 8, "mirrored rows"
            )
            assert server.metric("driftserve_mirror_rejections_total") == 0


def test_a_mirror_with_a_wrong_token_is_refused_counted_and_logged_while_inference_succeeds(
    repository: Path, pki: Pki, tokens: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with InProcessSidecar(repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=tokens) as sidecar:
        token = write_token(tmp_path / "mirror-token", INFER_TOKEN)  # valid, but not for the mirror
        with InProcessServer(
            repository,
            mirror_address=sidecar.running.address,
            mirror_tls_ca=pki.ca,
            mirror_token_file=token,
        ) as server:
            _infer_until_mirrored(
                server,
                lambda: server.metric("driftserve_mirror_rejections_total", reason="permission_denied") >= 2,
                "two counted mirror rejections",
            )
            assert rejected(sidecar, "scope") >= 1
            assert (sidecar.sample("driftserve_sidecar_rows_total") or 0.0) == 0.0
            assert server.metric("driftserve_mirror_records_total", outcome="dropped") >= 1
    assert caplog.text.count("refused the mirror (PERMISSION_DENIED") == 1  # once, not per retry
    assert "scope 'mirror'" in caplog.text


def test_a_refused_mirror_is_accepted_once_the_sidecar_grants_the_scope_and_says_so_once(
    repository: Path, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="driftserve.server.mirror")
    sidecar_tokens = write_tokens(tmp_path / "sidecar-tokens")
    with InProcessSidecar(repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=sidecar_tokens) as sidecar:
        token = write_token(tmp_path / "mirror-token", INFER_TOKEN)  # not for the mirror, yet
        with InProcessServer(
            repository, mirror_address=sidecar.running.address, mirror_tls_ca=pki.ca, mirror_token_file=token
        ) as server:
            _infer_until_mirrored(
                server,
                lambda: server.metric("driftserve_mirror_rejections_total", reason="permission_denied") >= 2,
                "two counted mirror rejections",
            )
            granted = sidecar_tokens.read_text().replace(f"{INFER_TOKEN} infer", f"{INFER_TOKEN} infer,mirror")
            sidecar_tokens.write_text(granted)
            assert sidecar.running.authority is not None
            sidecar.running.authority.reload()  # what SIGHUP does
            _infer_until_mirrored(
                server, lambda: (sidecar.sample("driftserve_sidecar_rows_total") or 0) >= 8, "mirrored rows"
            )
    assert caplog.text.count("refused the mirror (PERMISSION_DENIED") == 1
    # Known from the sidecar's acceptance header, not guessed from a stream that stayed open a while.
    assert caplog.text.count("accepts the mirror now") == 1


def test_a_mirror_that_cannot_verify_the_sidecar_is_counted_as_tls(repository: Path, pki: Pki, tmp_path: Path) -> None:
    with (
        InProcessSidecar(repository, tls_cert=pki.cert, tls_key=pki.key) as sidecar,
        InProcessServer(repository, mirror_address=sidecar.running.address, mirror_tls_ca=pki.client_ca) as server,
    ):  # the wrong CA
        _infer_until_mirrored(
            server,
            lambda: server.metric("driftserve_mirror_rejections_total", reason="tls") >= 1,
            "a TLS rejection",
        )


def test_run_secures_both_ports_and_the_loopback_mirror(
    example_repository: Path, pki: Pki, tokens: Path, tmp_path: Path
) -> None:
    grpc_port, metrics_port, sidecar_port = free_port(), free_port(), free_port()
    argv = [
        *("run", "--model-repository", str(example_repository), "--host", "127.0.0.1"),
        *("--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)),
        *("--sidecar-listen", f"127.0.0.1:{sidecar_port}", "--sidecar-http-port", "-1"),
        *("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(pki.client_ca)),
        *("--auth-tokens-file", str(tokens), "--mirror-tls-ca", str(pki.ca)),
        *("--mirror-tls-cert", str(pki.client_cert), "--mirror-tls-key", str(pki.client_key)),
        *("--mirror-token-file", str(write_token(tmp_path / "mirror-token", MIRROR_TOKEN))),
    ]
    stack = start_child("run", argv, cwd=ROOT, output="keep")
    try:
        wait_for(lambda: any("driftserve is up" in line for line in stack.lines), 120, "run's 'driftserve is up' line")
        credentials = grpc.ssl_channel_credentials(pki.read("ca"), pki.read("client_key"), pki.read("client_cert"))
        x = np.linspace(-1, 1, 30, dtype=np.float32).reshape(1, 30)
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", credentials) as channel:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(5):
                stub.ModelInfer(v2_request("breast_cancer_lr", x), metadata=bearer(INFER_TOKEN), timeout=30)
        with grpc.secure_channel(f"127.0.0.1:{sidecar_port}", credentials) as channel:
            monitor = driftserve_pb2_grpc.MonitorStub(channel)
            request = driftserve_pb2.DriftReportRequest(model="breast_cancer_lr")

            def rows_seen() -> int:
                return int(monitor.GetDriftReport(request, metadata=bearer(MONITOR_TOKEN), timeout=30).rows_seen)

            wait_for(lambda: rows_seen() >= 5, 60, "mirrored rows in the sidecar")
            with pytest.raises(grpc.RpcError) as caught:
                monitor.ListModels(driftserve_pb2.ListModelsRequest(), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stack.terminate(60) == 0
    finally:
        stack.kill()
