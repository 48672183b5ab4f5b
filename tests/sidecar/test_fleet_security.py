"""The fleet aggregator secured both ways: pulling from sidecars under TLS and tokens, serving its own port.

Real sidecars with TLS (one with mutual TLS) and bearer tokens run in this process on free ports;
the aggregator pulls them with the ``--replica-*`` settings. A replica that refuses the pull is
listed with the reason and counted, and never keeps the report from being served. The aggregator's
own port takes the sidecar's four flags; the start-up errors and the SIGHUP token reload run the
real command.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.ports import free_port
from tests.cli_support import one_line, run_cli
from tests.sidecar.fleet_support import FleetProcess, InProcessFleet
from tests.sidecar.support import MODEL, InProcessSidecar, batches_from, build_repository, reference_rows, wait_for
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


@pytest.fixture(scope="module")
def fleet_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("fleet-security") / "models", shadow=False)


@pytest.fixture(scope="module")
def session(fleet_repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(fleet_repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _publish(sidecar: InProcessSidecar, pki: Pki, session: ort.InferenceSession, rows: int, seed: int) -> None:
    """Mirror ``rows`` rows into a secured sidecar, with the mirror token (and a client certificate)."""
    credentials = grpc.ssl_channel_credentials(pki.read("ca"), pki.read("client_key"), pki.read("client_cert"))
    batches = batches_from(reference_rows(np.random.default_rng(seed), rows), session)
    with grpc.secure_channel(sidecar.running.address, credentials) as channel:
        summary = driftserve_pb2_grpc.MirrorStub(channel).Publish(
            iter(batches), metadata=bearer(MIRROR_TOKEN), timeout=60
        )
    assert summary.rows == rows
    assert sidecar.running.state.wait_idle(30.0), "sidecar did not drain its ingest queues"


@pytest.fixture(scope="module")
def secured(
    fleet_repository: Path, pki: Pki, tokens: Path, session: ort.InferenceSession
) -> Iterator[InProcessSidecar]:
    """A replica's sidecar with TLS and tokens, 300 rows in."""
    with InProcessSidecar(
        fleet_repository, report_interval_s=3600, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=tokens
    ) as sidecar:
        _publish(sidecar, pki, session, 300, seed=1)
        yield sidecar


@pytest.fixture(scope="module")
def mutual(fleet_repository: Path, pki: Pki, tokens: Path, session: ort.InferenceSession) -> Iterator[InProcessSidecar]:
    """A replica's sidecar with mutual TLS and tokens, 200 rows in."""
    with InProcessSidecar(
        fleet_repository,
        report_interval_s=3600,
        tls_cert=pki.cert,
        tls_key=pki.key,
        tls_client_ca=pki.client_ca,
        auth_tokens_file=tokens,
    ) as sidecar:
        _publish(sidecar, pki, session, 200, seed=2)
        yield sidecar


def _sample(fleet: InProcessFleet, name: str, **labels: str) -> float:
    return fleet.registry.get_sample_value(name, labels) or 0.0


def test_the_monitor_token_pulls_tls_and_mutual_tls_replicas(
    secured: InProcessSidecar, mutual: InProcessSidecar, fleet_repository: Path, pki: Pki, tmp_path: Path
) -> None:
    replicas = [secured.running.address, mutual.running.address]
    with InProcessFleet(
        fleet_repository,
        replicas,
        replica_tls_ca=pki.ca,
        replica_tls_cert=pki.client_cert,
        replica_tls_key=pki.client_key,
        replica_token_file=write_token(tmp_path / "token", MONITOR_TOKEN),
    ) as fleet:
        fleet.pull()
        report = fleet.report()
        assert {r.address: (r.status, r.rows) for r in report.fleet.replicas} == {
            replicas[0]: ("contributing", 300),
            replicas[1]: ("contributing", 200),
        }
        assert report.rows_seen == 500
        assert _sample(fleet, "driftserve_fleet_replicas", status="contributing") == 2
        for reason in ("unauthenticated", "permission_denied", "tls"):
            assert _sample(fleet, "driftserve_fleet_pull_rejections_total", reason=reason) == 0
        assert fleet.http_json(f"/api/drift/{MODEL}")["fleet"]["contributing"] == 2


@pytest.mark.parametrize(
    ("token", "ca", "reason", "expected"),
    [
        (
            INFER_TOKEN,
            "ca",
            "permission_denied",
            "refused: PERMISSION_DENIED — the token in --replica-token-file lacks the monitor scope",
        ),
        (UNKNOWN_TOKEN, "ca", "unauthenticated", "does not accept the token in --replica-token-file"),
        (None, "ca", "unauthenticated", "needs a bearer token: pass one with scope 'monitor' in --replica-token-file"),
        (MONITOR_TOKEN, "client_ca", "tls", "refused: TLS handshake failed — --replica-tls-ca must verify"),
    ],
)
def test_a_refused_pull_is_reported_counted_and_logged_once_while_others_merge(
    secured: InProcessSidecar,
    fleet_repository: Path,
    pki: Pki,
    session: ort.InferenceSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    token: str | None,
    ca: str,
    reason: str,
    expected: str,
) -> None:
    """``secured`` refuses; a TLS sidecar without tokens (same CA) accepts and is merged meanwhile."""
    overrides: dict[str, object] = {"replica_tls_ca": getattr(pki, ca)}
    if token is not None:
        overrides["replica_token_file"] = write_token(tmp_path / "token", token)
    with InProcessSidecar(fleet_repository, report_interval_s=3600, tls_cert=pki.cert, tls_key=pki.key) as open_:
        _publish(open_, pki, session, 100, seed=3)
        replicas = [secured.running.address, open_.running.address]
        with InProcessFleet(fleet_repository, replicas, **overrides) as fleet:
            caplog.set_level(logging.INFO, logger="driftserve.sidecar.fleet.aggregator")
            fleet.pull()  # after the round the aggregator ran at start: the refusal is logged by now
            before = _sample(fleet, "driftserve_fleet_pull_rejections_total", reason=reason)
            fleet.pull()
            report = fleet.report()
            statuses = {r.address: r for r in report.fleet.replicas}
            refused = statuses[secured.running.address]
            assert refused.status == "unreachable" and expected in refused.error, refused.error
            assert token is None or token not in refused.error  # never the secret itself
            after = _sample(fleet, "driftserve_fleet_pull_rejections_total", reason=reason)
            if reason == "tls":  # the open sidecar fails the same handshake: nothing to merge
                assert statuses[open_.running.address].status == "unreachable"
                assert report.rows_seen == 0 and after == before + 2
            else:
                assert statuses[open_.running.address].status == "contributing"
                assert report.rows_seen == 100 and after == before + 1
                assert _sample(fleet, "driftserve_fleet_replicas", status="unreachable") == 1
                assert caplog.text.count(f"replica {refused.address} refused:") == 1  # once, not per pull
            doc = fleet.http_json(f"/api/drift/{MODEL}")
            assert any(expected in r["error"] for r in doc["fleet"]["replicas"])


def _reflected_services(channel: grpc.Channel, metadata: object) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=30))
    return sorted(s.name for s in reply.list_services_response.service)


def test_the_aggregators_port_needs_a_monitor_token_but_health_does_not(
    secured: InProcessSidecar, fleet_repository: Path, pki: Pki, tokens: Path, tmp_path: Path
) -> None:
    with InProcessFleet(
        fleet_repository,
        [secured.running.address],
        tls_cert=pki.cert,
        tls_key=pki.key,
        auth_tokens_file=tokens,
        replica_tls_ca=pki.ca,
        replica_token_file=write_token(tmp_path / "token", MONITOR_TOKEN),
    ) as fleet:
        fleet.pull()
        credentials = grpc.ssl_channel_credentials(pki.read("ca"))
        with grpc.secure_channel(fleet.running.address, credentials) as channel:
            monitor = driftserve_pb2_grpc.MonitorStub(channel)
            request = driftserve_pb2.ListModelsRequest()
            for metadata, code, label in (
                (None, grpc.StatusCode.UNAUTHENTICATED, "missing"),
                (bearer(UNKNOWN_TOKEN), grpc.StatusCode.UNAUTHENTICATED, "unknown"),
                (bearer(MIRROR_TOKEN), grpc.StatusCode.PERMISSION_DENIED, "scope"),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    monitor.ListModels(request, metadata=metadata, timeout=30)
                assert caught.value.code() == code
                assert _sample(fleet, "driftserve_fleet_auth_rejections_total", reason=label) == 1
            assert list(monitor.ListModels(request, metadata=bearer(MONITOR_TOKEN), timeout=30).models) == [MODEL]
            report = monitor.GetDriftReport(
                driftserve_pb2.DriftReportRequest(model=MODEL), metadata=bearer(MONITOR_TOKEN), timeout=30
            )
            assert report.rows_seen == 300 and [r.status for r in report.fleet.replicas] == ["contributing"]
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert "driftserve.v1.Monitor" in " ".join(_reflected_services(channel, bearer(INFER_TOKEN)))
            with pytest.raises(grpc.RpcError) as caught:
                _reflected_services(channel, None)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(fleet.running.address) as plaintext:  # the port serves TLS only
            with pytest.raises(grpc.RpcError) as caught:
                driftserve_pb2_grpc.MonitorStub(plaintext).ListModels(
                    request, metadata=bearer(MONITOR_TOKEN), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(300)
def test_the_fleet_command_serves_tls_and_reloads_tokens_on_sighup(
    fleet_repository: Path, pki: Pki, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{MONITOR_TOKEN} monitor\n")
    os.chmod(tokens, 0o600)
    fleet = FleetProcess(
        fleet_repository,
        [f"127.0.0.1:{free_port()}"],
        *("--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-client-ca", str(pki.client_ca)),
        *("--auth-tokens-file", str(tokens), "--pull-timeout-s", "1"),
    )
    try:
        credentials = grpc.ssl_channel_credentials(pki.read("ca"), pki.read("client_key"), pki.read("client_cert"))
        with grpc.secure_channel(fleet.address, credentials) as channel:
            monitor = driftserve_pb2_grpc.MonitorStub(channel)
            request = driftserve_pb2.ListModelsRequest()
            assert list(monitor.ListModels(request, metadata=bearer(MONITOR_TOKEN), timeout=30).models) == [MODEL]
            with pytest.raises(grpc.RpcError) as caught:
                monitor.ListModels(request, metadata=bearer(INFER_TOKEN), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            tokens.write_text(f"{INFER_TOKEN} monitor\n")  # rotate: the new token in, the old one out
            os.kill(fleet.child.pid, signal.SIGHUP)

            def rotated() -> bool:
                try:
                    monitor.ListModels(request, metadata=bearer(INFER_TOKEN), timeout=30)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    return False
                return True

            wait_for(rotated, 60, "the rotated token accepted")
            with pytest.raises(grpc.RpcError) as caught:
                monitor.ListModels(request, metadata=bearer(MONITOR_TOKEN), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert fleet.terminate(30) == 0
    finally:
        fleet.child.kill()
    assert "reloaded 1 bearer token(s)" in fleet.child.output()


def test_startup_errors_name_the_flag_in_one_line(
    fleet_repository: Path, pki: Pki, tokens: Path, tmp_path: Path
) -> None:
    base = ("drift", "fleet", "--model-repository", str(fleet_repository), "--replicas", "127.0.0.1:1")
    base += ("--listen", "127.0.0.1:0", "--http-port", "-1")
    absent = str(tmp_path / "absent.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    token = str(write_token(tmp_path / "token", MONITOR_TOKEN))
    cases = [
        (("--tls-cert", absent, "--tls-key", str(pki.key)), {}, f"--tls-cert {absent} does not exist"),
        (("--tls-cert", str(pki.cert)), {}, "--tls-cert needs --tls-key too"),
        (("--auth-tokens-file", absent), {}, f"--auth-tokens-file {absent} does not exist"),
        (("--replica-token-file", str(tmp_path)), {}, f"--replica-token-file {tmp_path} cannot be read"),
        ((), {"DRIFTSERVE_FLEET_REPLICA_TOKEN_FILE": absent}, f"--replica-token-file {absent} does not exist"),
        (("--replica-tls-ca", str(not_pem)), {}, f"--replica-tls-ca {not_pem} is not a PEM file"),
        (("--replica-tls-cert", str(pki.client_cert)), {}, "--replica-tls-cert needs --replica-tls-key too"),
        (("--replica-tls-key", str(pki.client_key), "--replica-token-file", token), {}, "--replica-tls-key needs"),
    ]
    for extra, env, expected in cases:
        line = one_line(run_cli(*base, *extra, env=env))
        assert line.startswith("driftserve drift fleet: ") and expected in line, (extra, line)
