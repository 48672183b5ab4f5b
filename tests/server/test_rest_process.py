"""REST in real server processes: the ready line, ``--workers`` sharing the port, settings, SIGTERM."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from driftserve.server.settings import DEFAULT_HTTP_PORT, ServerSettings, serve_argv
from tests.server.support import ServerProcess, copy_model

TIMEOUT_S = 60.0


def _post(url: str, document: object) -> dict[str, object]:
    body = json.dumps(document).encode()
    with urllib.request.urlopen(urllib.request.Request(url, body), timeout=TIMEOUT_S) as reply:
        assert reply.status == 200
        return dict(json.loads(reply.read()))


def test_http_port_setting_default_env_and_child_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DRIFTSERVE_HTTP_PORT", raising=False)
    assert ServerSettings(model_repository=tmp_path).http_port == DEFAULT_HTTP_PORT == 8000
    monkeypatch.setenv("DRIFTSERVE_HTTP_PORT", "-1")
    settings = ServerSettings(model_repository=tmp_path)
    assert settings.http_port == -1
    # Workers and `run` start `serve` children with the same REST port.
    argv = serve_argv(settings, http_port=8123)
    assert argv[argv.index("--http-port") + 1] == "8123"
    with pytest.raises(ValueError, match="http_port"):
        ServerSettings(model_repository=tmp_path, http_port=-2)


def test_workers_share_the_rest_port_and_stop_on_sigterm(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    with ServerProcess(tmp_path, "--workers", "2") as server:
        assert server.http_port > 0
        with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT_S) as reply:
            assert reply.status == 200
        x = np.random.default_rng(3).normal(size=(2, 30)).astype(np.float32)
        tensor = {"name": "input", "datatype": "FP32", "shape": [2, 30], "data": x.ravel().tolist()}
        # A new connection each time: the kernel spreads them over both workers.
        replies = [_post(f"{server.http_url}/v2/models/breast_cancer_lr/infer", {"inputs": [tensor]}) for _ in range(6)]
        assert all(r["model_version"] == "2" for r in replies)
        assert len({json.dumps(r["outputs"]) for r in replies}) == 1
        assert server.metric("driftserve_server_requests_total", protocol="rest", code="OK") == 6
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=TIMEOUT_S) == 0
