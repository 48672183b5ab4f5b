"""``driftserve models ...`` against a real server: readable tables, errors as one line."""

from __future__ import annotations

from pathlib import Path

from tests.cli_support import one_line, run_cli
from tests.server.rollout_support import BASE_B, BASE_W, linear_model, make_model, write_version
from tests.server.support import InProcessServer

ROLLOUT = "{steps: [100], step_duration_s: 0, analysis_interval_s: 0.1, keep_previous_s: 600}"


def test_models_commands_print_tables_and_errors(tmp_path: Path) -> None:
    make_model(tmp_path / "m", ROLLOUT)
    with InProcessServer(tmp_path, load_models=["m"]) as server:
        address = ("--address", server.address)
        listed = run_cli("models", *address, "list")
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()[:2]
        assert header.split() == ["MODEL", "VERSION", "STATE", "ROLE", "WEIGHT", "REASON"]
        assert row.split() == ["m", "1", "READY", "primary", "100%"]
        write_version(tmp_path / "m", 2, linear_model(-BASE_W, BASE_B))
        refused = run_cli("models", *address, "load", "m")
        assert refused.returncode == 1
        assert refused.stderr.startswith("driftserve models load: FAILED_PRECONDITION: ")
        assert "accuracy" in refused.stderr and "below min 0.8" in refused.stderr
        write_version(tmp_path / "m", 3, linear_model(BASE_W * 1.1, BASE_B))
        loaded = run_cli("models", *address, "load", "m", "--version", "3")
        assert loaded.returncode == 0, loaded.stderr
        assert "version 3 passed the gate" in loaded.stdout
        status = run_cli("models", *address, "status", "m")
        assert status.returncode == 0, status.stderr
        assert "rejected versions: 2:" in status.stdout
        rollback = run_cli("models", *address, "rollback", "m")
        assert rollback.returncode == 0, rollback.stderr
        assert "version 1 serves again" in rollback.stdout
        again = run_cli("models", *address, "rollback", "m")
        assert again.returncode == 1 and "nothing to roll back" in again.stderr
        unknown = run_cli("models", *address, "status", "nope")
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    down = run_cli("models", "--address", server.address, "--timeout-s", "2", "list")
    assert down.returncode == 2 and "UNAVAILABLE" in down.stderr


def test_polling_needs_one_worker(tmp_path: Path) -> None:
    make_model(tmp_path / "m", ROLLOUT)
    done = run_cli("serve", "--model-repository", str(tmp_path), "--workers", "2", "--poll-interval-s", "1")
    assert "--poll-interval-s (or DRIFTSERVE_POLL_INTERVAL_S) needs --workers 1" in one_line(done)
