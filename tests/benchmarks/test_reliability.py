"""Short versions of the reliability scenarios (benchmarks/reliability/), against real processes."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from benchmarks.reliability import sidecar_kill, sigterm, slow_clients, soak


def test_sigterm_under_load_answers_every_request_sent_before_the_signal(example_repository: Path) -> None:
    args = argparse.Namespace(
        model_repository=example_repository,
        model="breast_cancer_mlp",
        rows=1,
        width=30,
        clients=16,
        load_s=1.5,
        grace_s=10.0,
        rounds=1,
    )
    result = asyncio.run(sigterm.run_scenario(args))
    (round_,) = result["rounds"]
    assert round_["sent_before_signal"] > 0 and round_["exit_code"] == 0
    assert round_["failed_before_signal"] == 0, round_["codes_before_signal"]
    # After the signal: served during the drain period, then refused; gRPC itself cancels what
    # reaches it after the transport stopped.
    assert set(round_["codes_after_signal"]) <= {"OK", "UNAVAILABLE", "CANCELLED"}


def _argv(repository: Path, flags: str) -> list[str]:
    """A scenario's command line: the repository, then ``flags`` (no spaces inside a value)."""
    return ["--model-repository", str(repository), *flags.split()]


def test_sidecar_kill_costs_clients_nothing_and_drift_resumes_on_a_new_sidecar(example_repository: Path) -> None:
    args = sidecar_kill.parse_args(
        _argv(example_repository, "--clients 4 --before-s 2 --down-s 2 --after-s 2 --resume-timeout-s 30")
    )
    result = asyncio.run(sidecar_kill.run_scenario(args))
    assert result["sent"] > 0 and result["old_sidecar_exit"] == -9
    assert result["client_errors"] == 0, result["codes"]
    assert result["sidecar_down"]["sent"] > 0 and result["after_restart"]["sent"] > 0
    assert result["drift_resumed"], (result["new_sidecar_rows"], result["new_sidecar_rows_seen"])
    assert result["new_sidecar_rows_seen"]["breast_cancer_lr"] > 0
    assert result["server_exit_code"] == 0 and result["passed"]


def test_idle_and_slow_clients_do_not_starve_a_normal_client(example_repository: Path) -> None:
    attackers = "--idle-streams 30 --slow-streams 4 --slow-requests 500 --idle-sockets 10"
    # Generous: starvation shows as seconds, a busy 2-core CI machine as tens of milliseconds.
    bound = "--factor 5 --slack-ms 100"
    args = slow_clients.parse_args(
        _argv(example_repository, f"--requests 200 {attackers} {bound} --release-wait-s 0.5")
    )
    result = asyncio.run(slow_clients.run_scenario(args))
    assert result["normal_client_errors"] == 0, (result["baseline"]["codes"], result["loaded"]["codes"])
    assert result["slow_requests_written"] > 0
    # The normal client's connection, 3 of the idle streams (10 per channel), 4 slow streams, 10 sockets.
    assert result["server_tcp_connections"] >= 1 + 3 + 4 + 10
    assert not result["starved"], (result["baseline"], result["loaded"], result["p99_bound_ms"])
    assert result["rss_growth_mib"] <= result["rss_bound_mib"]
    assert result["server_alive_at_end"] and result["server_exit_code"] == 0 and result["passed"]


def test_short_soak_has_only_expected_errors_and_no_fd_leak(example_repository: Path) -> None:
    args = soak.parse_args(_argv(example_repository, "--duration-s 15 --sample-s 2 --rate 100 --bad-every 10"))
    result = asyncio.run(soak.run_scenario(args))
    assert result["codes"]["good"].get("OK", 0) > 0 and result["codes"]["bad"].get("INVALID_ARGUMENT", 0) > 0
    assert result["unexpected_codes"] == 0, result["codes"]
    assert len(result["samples"]) >= 6
    for name, trend in result["trends"].items():
        assert trend["alive"], name
        assert abs(trend["fds"]["growth"]) <= trend["fd_tolerance"], (name, trend["fds"])
        assert trend["rss_mib"]["growth"] <= trend["rss_bound_mib"], (name, trend["rss_mib"])
    assert result["exit_codes"] == {"server": 0, "sidecar": 0} and result["passed"]
