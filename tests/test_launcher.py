"""``driftserve run``'s "is up" line names the ports the children really opened, as they serve them."""

from __future__ import annotations

from pathlib import Path

from driftserve.launcher import up_line
from driftserve.server.settings import ServerSettings

SERVER = {"grpc_port": "8001", "http_port": "8000", "metrics_port": "8002"}
SIDECAR = {"role": "sidecar", "address": "127.0.0.1:8003", "grpc_port": "8003", "http_port": "8004"}


def test_plaintext_names_every_port(tmp_path: Path) -> None:
    line = up_line(ServerSettings(model_repository=tmp_path), SERVER, SIDECAR)
    assert line == (
        "driftserve is up: gRPC 0.0.0.0:8001, REST http://0.0.0.0:8000/v2, "
        "metrics http://0.0.0.0:8002/metrics, drift dashboard http://127.0.0.1:8004/dashboard"
    )


def test_rest_is_https_under_tls_and_metrics_stay_http(tmp_path: Path) -> None:
    settings = ServerSettings(model_repository=tmp_path, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    line = up_line(settings, SERVER, SIDECAR)
    assert "REST https://0.0.0.0:8000/v2" in line
    assert "metrics http://0.0.0.0:8002/metrics" in line


def test_ports_turned_off_are_named_off(tmp_path: Path) -> None:
    server = {"grpc_port": "8001", "http_port": "-1", "metrics_port": "-1"}
    line = up_line(ServerSettings(model_repository=tmp_path), server, {**SIDECAR, "http_port": "-1"})
    assert line == "driftserve is up: gRPC 0.0.0.0:8001, REST off, metrics off, drift dashboard off"
    assert ":-1" not in line
