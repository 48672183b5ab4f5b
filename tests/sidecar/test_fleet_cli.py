"""``driftserve drift fleet`` from the command line: settings errors are one line, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.cli_support import one_line, run_cli


def test_missing_replicas_names_the_flag_and_the_variable(tmp_path: Path) -> None:
    line = one_line(run_cli("drift", "fleet", "--model-repository", str(tmp_path)))
    assert line == "driftserve drift fleet: --replicas (or DRIFTSERVE_FLEET_REPLICAS) is required"


def test_a_bad_replica_entry_says_what_is_expected(tmp_path: Path) -> None:
    line = one_line(run_cli("drift", "fleet", "--model-repository", str(tmp_path), "--replicas", "a:1,sidecar"))
    assert "--replicas (or DRIFTSERVE_FLEET_REPLICAS)" in line and "'sidecar' is not host:port" in line
    line = one_line(
        run_cli("drift", "fleet", "--model-repository", str(tmp_path), env={"DRIFTSERVE_FLEET_REPLICAS": "x:99999"})
    )
    assert "'x:99999' is not host:port (port 1..65535)" in line


def test_a_missing_repository_and_a_port_in_use_are_one_line(tmp_path: Path) -> None:
    line = one_line(run_cli("drift", "fleet", "--model-repository", str(tmp_path / "nope"), "--replicas", "a:1"))
    assert "model repository" in line and "--model-repository or DRIFTSERVE_FLEET_MODEL_REPOSITORY" in line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli(
            "drift", "fleet", "--model-repository", str(tmp_path), "--replicas", "a:1", "--listen", f"127.0.0.1:{port}"
        )
        assert f"gRPC address 127.0.0.1:{port} is in use" in one_line(done)
