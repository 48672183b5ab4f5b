"""Sweep parsing, interleaving and the max-rate search, with a fake runner (no servers)."""

from __future__ import annotations

import pytest

from driftserve.bench.runner import LoadSpec, RunResult
from driftserve.bench.slo import parse_slo
from driftserve.bench.sweep import SweepError, find_max_rate, parse_sweep, sweep


def _result(spec: LoadSpec, p99_ms: float, errors: int = 0) -> RunResult:
    return RunResult(
        label=spec.label,
        mode=spec.mode,
        level=spec.level,
        protocol="v2",
        streaming=False,
        duration_s=1.0,
        requests=100,
        ok=100 - errors,
        errors={"UNAVAILABLE": errors} if errors else {},
        throughput_rps=spec.level,
        latency_ms={"p50": p99_ms / 2, "p90": p99_ms, "p99": p99_ms, "p99.9": p99_ms, "max": p99_ms},
        mean_ms=p99_ms / 2,
        lag_p99_ms=0.0,
        late_sends=0,
        loadgen_cpu_cores=0.1,
        workers=1,
        server=None,
    )


SPEC = LoadSpec(target="127.0.0.1:1", model="m", requests=(b"",), label="a")


def test_parse_sweep() -> None:
    assert parse_sweep("closed:1,2,4") == ("closed", [1.0, 2.0, 4.0])
    assert parse_sweep("open:100,250.5") == ("open", [100.0, 250.5])
    for bad, message in [
        ("1,2", "expected 'closed"),
        ("closed:1.5", "integers"),
        ("open:", "one or more"),
        ("open:-1", "positive"),
        ("open:a", "numbers"),
    ]:
        with pytest.raises(SweepError, match=message):
            parse_sweep(bad)


def test_sweep_interleaves_targets_level_by_level() -> None:
    seen: list[tuple[str, float]] = []

    def runner(spec: LoadSpec) -> RunResult:
        seen.append((spec.label, spec.level))
        return _result(spec, 1.0)

    b = LoadSpec(target="127.0.0.1:2", model="m", requests=(b"",), label="b")
    sweep([SPEC, b], "closed", [1, 4], runner)
    assert seen == [("a", 1), ("b", 1), ("a", 4), ("b", 4)]


def test_max_rate_search_brackets_the_knee() -> None:
    """p99 jumps past the SLO above 700 rps: the answer lies in [625, 700]."""

    def runner(spec: LoadSpec) -> RunResult:
        return _result(spec, 5.0 if spec.rate_rps <= 700 else 50.0)

    search = find_max_rate(SPEC, parse_slo("p99<10ms"), 100, 8, runner, confirm_failures=False)
    assert search.max_rate_rps is not None and 600 <= search.max_rate_rps <= 700
    assert search.bounded
    assert len(search.steps) <= 8
    assert [r.level for r, _ in search.steps][:4] == [100, 200, 400, 800]


def test_max_rate_search_confirms_a_failure_before_believing_it() -> None:
    calls: dict[float, int] = {}

    def runner(spec: LoadSpec) -> RunResult:
        calls[spec.rate_rps] = calls.get(spec.rate_rps, 0) + 1
        stray_stall = spec.rate_rps == 200 and calls[spec.rate_rps] == 1
        return _result(spec, 500.0 if stray_stall or spec.rate_rps > 1000 else 1.0)

    search = find_max_rate(SPEC, parse_slo("p99<10ms"), 100, 5, runner)
    assert calls[200] == 2
    assert search.max_rate_rps is not None and search.max_rate_rps >= 800


def test_max_rate_search_counts_errors_and_reports_none() -> None:
    search = find_max_rate(
        SPEC, parse_slo("p99<10ms"), 100, 3, lambda spec: _result(spec, 1.0, errors=5), confirm_failures=False
    )
    assert search.max_rate_rps is None
    assert [r.level for r, _ in search.steps] == [100, 50, 25]


def test_max_rate_search_without_failure_is_a_floor() -> None:
    search = find_max_rate(SPEC, parse_slo("p99<10ms"), 100, 2, lambda s: _result(s, 1.0))
    assert search.max_rate_rps == 200 and not search.bounded
    assert search.to_dict()["bounded"] is False


def test_max_rate_search_starts_from_a_prior_sweep() -> None:
    """A sweep that passed at 500 and failed at 1000 leaves only bisection to do."""
    measured: list[float] = []

    def runner(spec: LoadSpec) -> RunResult:
        measured.append(spec.rate_rps)
        return _result(spec, 5.0 if spec.rate_rps <= 800 else 50.0)

    prior = [
        _result(SPEC.with_load("open", rate), p99) for rate, p99 in [(250, 2.0), (500, 4.0), (1000, 40.0), (2000, 90.0)]
    ]
    other_target = _result(
        LoadSpec(target="x:1", model="m", requests=(b"",), label="b", mode="open", rate_rps=100), 90.0
    )
    search = find_max_rate(
        SPEC, parse_slo("p99<10ms"), 100, 3, runner, confirm_failures=False, prior=[*prior, other_target]
    )
    assert measured == [750, 875, 812.5]
    assert search.max_rate_rps == 750 and search.bounded
    assert [row["rate_rps"] for row in search.to_dict()["prior"]] == [250, 500, 1000, 2000]
