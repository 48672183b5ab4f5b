"""The load generator against the naive server started as a subprocess: counts, errors by
status code, coordinated omission, SLO verdicts and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from driftserve import cli
from driftserve.bench.defaults import EXIT_OK, EXIT_SLO_VIOLATED, EXIT_USAGE
from driftserve.bench.payload import TensorSpec, build_arrays, serialize_requests
from driftserve.bench.runner import LoadError, LoadSpec, run_load
from driftserve.bench.server_info import TargetError, check_target, fetch_input_specs

SPEC = [TensorSpec("input", "FP32", (-1, 30))]


def _requests(protocol: str, model: str = "linear", rows: int = 1) -> tuple[bytes, ...]:
    arrays = build_arrays(SPEC, rows, pool_size=8)
    return tuple(serialize_requests(arrays, SPEC, protocol, model))


def test_metadata_gives_the_input_spec(naive_server) -> None:
    assert fetch_input_specs(naive_server.target, "linear", "", 5.0) == SPEC


@pytest.mark.parametrize(("protocol", "streaming"), [("v2", False), ("native", False), ("native", True), ("v2", True)])
def test_closed_loop_counts_without_errors(naive_server, protocol: str, streaming: bool) -> None:
    spec = LoadSpec(
        target=naive_server.target,
        model="linear",
        requests=_requests(protocol, rows=4),
        protocol=protocol,
        streaming=streaming,
        concurrency=2,
        warmup_s=0.2,
        duration_s=1.0,
        workers=1,
    )
    result = run_load(spec)
    assert result.errors == {}
    assert result.requests == result.ok > 0
    assert HdrHistogram.decode(result.latency_hdr).get_total_count() == result.ok
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.workers == 1 and result.loadgen_cpu_cores > 0


def test_errors_are_counted_by_status_code(naive_server) -> None:
    spec = LoadSpec(
        target=naive_server.target,
        model="missing",
        requests=_requests("v2", "missing"),
        protocol="v2",
        mode="open",
        rate_rps=50,
        warmup_s=0.0,
        duration_s=1.0,
    )
    result = run_load(spec)
    assert result.ok == 0
    assert result.errors == {"NOT_FOUND": result.requests}
    assert result.requests >= 45
    assert any("no request succeeded" in w for w in result.warnings)


def test_streaming_errors_are_counted_by_status_code(naive_server) -> None:
    spec = LoadSpec(
        target=naive_server.target,
        model="missing",
        requests=_requests("native", "missing"),
        protocol="native",
        streaming=True,
        concurrency=1,
        warmup_s=0.0,
        duration_s=0.5,
    )
    result = run_load(spec)
    assert result.ok == 0 and set(result.errors) == {"NOT_FOUND"}


def test_open_loop_shows_a_server_stall_in_p99(start_naive_server) -> None:
    """The server freezes for 200 ms on its 5th request while only one request is in flight:
    the requests scheduled during the freeze must carry the queueing delay."""
    server = start_naive_server("--stall-ms", "200", "--stall-after", "5")
    spec = LoadSpec(
        target=server.target,
        model="linear",
        requests=_requests("v2"),
        protocol="v2",
        mode="open",
        rate_rps=20,
        warmup_s=0.0,
        duration_s=2.5,
    )
    result = run_load(spec)
    assert result.errors == {} and result.ok == 50
    hist = HdrHistogram.decode(result.latency_hdr)
    assert result.latency_ms["p99"] >= 200.0
    # With 50 samples p95 is the third largest: a request queued behind the stall.
    assert hist.get_value_at_percentile(95) >= 100_000


def test_target_must_be_loopback() -> None:
    assert check_target("127.0.0.1:8001") == "127.0.0.1:8001"
    assert check_target("[::1]:8001") == "[::1]:8001"
    assert check_target("localhost:1") == "localhost:1"
    with pytest.raises(TargetError, match="not a loopback address"):
        check_target("192.168.1.5:8001")
    with pytest.raises(TargetError, match="expected HOST:PORT"):
        check_target("127.0.0.1")
    assert check_target("example.com:443", allow_remote=True) == "example.com:443"


def _bench(target: str, *extra: str) -> list[str]:
    return [
        "bench",
        "--target",
        target,
        "--model",
        "linear",
        "--warmup-s",
        "0.2",
        "--duration-s",
        "1",
        "--no-progress",
        *extra,
    ]


def test_slo_violation_on_a_slow_server_exits_1(start_naive_server, tmp_path: Path) -> None:
    server = start_naive_server("--delay-ms", "30")
    out = tmp_path / "out.json"
    code = cli.main(_bench(server.target, "--concurrency", "2", "--slo", "p99<10ms", "--json", str(out)))
    assert code == EXIT_SLO_VIOLATED
    report = json.loads(out.read_text())
    (verdict,) = report["verdicts"]
    assert verdict["passed"] is False
    assert verdict["objectives"][0]["objective"] == "p99<10ms"
    assert verdict["objectives"][0]["measured"] >= 30.0
    assert report["exit_code"] == 1


def test_slo_met_exits_0_and_writes_outputs(start_naive_server, tmp_path: Path) -> None:
    server = start_naive_server("--delay-ms", "30")
    slo_file = tmp_path / "slo.yaml"
    slo_file.write_text("rate_rps: 20\nobjectives: ['p99<5s', 'p50<5s']\n")
    paths = {k: tmp_path / f"out.{k}" for k in ("json", "md", "png")}
    code = cli.main(
        _bench(
            server.target,
            "--slo-file",
            str(slo_file),
            "--json",
            str(paths["json"]),
            "--markdown",
            str(paths["md"]),
            "--plot",
            str(paths["png"]),
        )
    )
    assert code == EXIT_OK
    report = json.loads(paths["json"].read_text())
    assert report["results"][0]["mode"] == "open" and report["results"][0]["level"] == 20
    assert report["verdicts"][0]["passed"] is True
    assert "| open | 20 rps |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--slo", "p99<<1ms"), "cannot parse SLO objective"),
        (("--find-max-rate",), "--find-max-rate needs --slo"),
        (("--rate", "10", "--slo", "p99<1s@20rps"), "contradicts the SLO's rate"),
        (("--concurrency", "2", "--slo", "p99<1s@20rps"), "judged at 20 rps"),
        (
            (
                "--sweep",
                "closed:1.5",
            ),
            "integers",
        ),
        (("--shape=-1,x",), "bad shape"),
        (("--data", "/nonexistent.npz", "--concurrency", "1"), "cannot read data file"),
        (("--model", "missing", "--shape=-1,30", "--concurrency", "1"), "no request succeeded"),
    ],
)
def test_usage_errors_exit_2(naive_server, capsys, extra: tuple[str, ...], message: str) -> None:
    assert cli.main(_bench(naive_server.target, *extra)) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_unreachable_and_remote_targets_exit_2(capsys) -> None:
    assert cli.main(_bench("10.1.2.3:8001", "--concurrency", "1")) == EXIT_USAGE
    assert "not a loopback address" in capsys.readouterr().err
    assert cli.main(_bench("127.0.0.1:1", "--concurrency", "1", "--timeout-s", "1")) == 2
    assert "cannot connect to 127.0.0.1:1" in capsys.readouterr().err


def test_find_max_rate_is_bounded_and_reports_none_when_nothing_passes(naive_server, capsys) -> None:
    code = cli.main(
        _bench(
            naive_server.target,
            "--find-max-rate",
            "--slo",
            "p50<1us",
            "--start-rate",
            "20",
            "--max-steps",
            "2",
            "--no-confirm",
        )
    )
    assert code == EXIT_SLO_VIOLATED
    assert "highest rate meeting p50<1us: none" in capsys.readouterr().out


def test_targets_need_distinct_labels(naive_server, capsys) -> None:
    code = cli.main(_bench(naive_server.target, "--target", naive_server.target))
    assert code == EXIT_USAGE
    assert "distinct labels" in capsys.readouterr().err


def test_a_worker_that_cannot_connect_fails_the_run() -> None:
    spec = LoadSpec(
        target="127.0.0.1:1",
        model="linear",
        requests=_requests("v2"),
        concurrency=1,
        warmup_s=0.0,
        duration_s=0.5,
        timeout_s=0.5,
    )
    with pytest.raises(LoadError, match="worker failed: TimeoutError"):
        run_load(spec, server_stats=False)
