"""Start-up errors of ``driftserve sidecar``: one stderr line naming the flag, env var, address or port."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cli_support import one_line, run_cli


def run_sidecar(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m driftserve sidecar ARGV`` with no DRIFTSERVE_* variable from this environment."""
    return run_cli("sidecar", *argv, env=env)


def test_missing_model_repository_flag() -> None:
    line = one_line(run_sidecar("--listen", "127.0.0.1:0"))
    assert line == "driftserve sidecar: --model-repository (or DRIFTSERVE_SIDECAR_MODEL_REPOSITORY) is required"


def test_missing_repository_directory(tmp_path: Path) -> None:
    line = one_line(run_sidecar("--model-repository", str(tmp_path / "none"), "--listen", "127.0.0.1:0"))
    assert line == (
        f"driftserve sidecar: model repository {tmp_path / 'none'} is not a directory; "
        "pass an existing one with --model-repository or DRIFTSERVE_SIDECAR_MODEL_REPOSITORY"
    )


def test_invalid_listen_value_names_flag_and_env(tmp_path: Path) -> None:
    done = run_sidecar(env={"DRIFTSERVE_SIDECAR_MODEL_REPOSITORY": str(tmp_path), "DRIFTSERVE_SIDECAR_LISTEN": "x"})
    line = one_line(done)
    assert line.startswith("driftserve sidecar: --listen (or DRIFTSERVE_SIDECAR_LISTEN) is 'x': listen must be")


def test_invalid_http_port_names_flag_and_env(tmp_path: Path) -> None:
    line = one_line(run_sidecar("--model-repository", str(tmp_path), "--http-port", "-5"))
    assert line.startswith("driftserve sidecar: --http-port (or DRIFTSERVE_SIDECAR_HTTP_PORT) is -5")


def test_grpc_listen_address_in_use(tmp_path: Path, busy_port: int) -> None:
    done = run_sidecar("--model-repository", str(tmp_path), "--listen", f"127.0.0.1:{busy_port}", "--http-port", "-1")
    assert one_line(done) == (
        f"driftserve sidecar: gRPC address 127.0.0.1:{busy_port} is in use; "
        "pick another with --listen or DRIFTSERVE_SIDECAR_LISTEN"
    )


def test_http_port_in_use(tmp_path: Path, busy_port: int) -> None:
    done = run_sidecar("--model-repository", str(tmp_path), "--listen", "127.0.0.1:0", "--http-port", str(busy_port))
    assert one_line(done) == (
        f"driftserve sidecar: HTTP port {busy_port} on 127.0.0.1 is in use; "
        "pick another with --http-port or DRIFTSERVE_SIDECAR_HTTP_PORT (-1 turns HTTP off)"
    )


def test_unix_socket_in_a_missing_directory(tmp_path: Path) -> None:
    listen = f"unix:{tmp_path / 'none' / 'sidecar.sock'}"
    done = run_sidecar("--model-repository", str(tmp_path), "--listen", listen, "--http-port", "-1")
    assert one_line(done) == (
        f"driftserve sidecar: gRPC address {listen}: directory {tmp_path / 'none'} does not exist; "
        "pick another with --listen or DRIFTSERVE_SIDECAR_LISTEN"
    )
