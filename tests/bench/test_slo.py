"""The SLO grammar, SLO files and verdicts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from driftserve.bench.slo import SLOError, evaluate, load_slo_file, parse_slo


def test_parses_percentile_with_rate() -> None:
    slo = parse_slo("p99<100ms@2000rps")
    assert slo.rate_rps == 2000
    (objective,) = slo.objectives
    assert (objective.percentile, objective.limit_us, objective.inclusive) == (99.0, 100_000, False)


@pytest.mark.parametrize(
    ("text", "percentile", "limit_us", "inclusive"),
    [
        ("p50<=1ms", 50.0, 1_000.0, True),
        ("p99.9<250us@500rps", 99.9, 250.0, False),
        ("max<1.5s", 100.0, 1_500_000.0, False),
        (" p90 < 2 ms ", 90.0, 2_000.0, False),
    ],
)
def test_units_and_operators(text: str, percentile: float, limit_us: float, inclusive: bool) -> None:
    (objective,) = parse_slo(text).objectives
    assert objective.percentile == percentile
    assert math.isclose(objective.limit_us, limit_us)
    assert objective.inclusive is inclusive


def test_combined_objectives_share_one_rate_and_error_budget() -> None:
    slo = parse_slo("p99<100ms@2000rps,p50<=1ms,errors<0.5%")
    assert [o.percentile for o in slo.objectives] == [99.0, 50.0]
    assert slo.rate_rps == 2000
    assert slo.max_error_rate == pytest.approx(0.005)
    assert parse_slo(slo.label).objectives == slo.objectives


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty SLO"),
        ("p99<100", "cannot parse SLO objective 'p99<100'"),
        ("p99>100ms", "cannot parse"),
        ("p99<100ms,", "stray ','"),
        ("p0<1ms", "must be in (0, 100]"),
        ("p101<1ms", "must be in (0, 100]"),
        ("p99<0ms", "must be positive"),
        ("p99<1ms@100rps,p50<1ms@200rps", "several rates"),
        ("p99<1ms@0rps", "rate"),
        ("errors<150%", "above 100%"),
        ("latency<1ms", "expected e.g."),
    ],
)
def test_invalid_slo_messages(text: str, message: str) -> None:
    with pytest.raises(SLOError, match=None) as info:
        parse_slo(text)
    assert message in str(info.value)


def test_slo_file(tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text(
        "rate_rps: 500\nmax_error_rate: 0.01\nobjectives:\n"
        "  - p99<20ms\n  - {percentile: 99.9, max_ms: 50, inclusive: true}\n"
    )
    slo = load_slo_file(path)
    assert slo.rate_rps == 500 and slo.max_error_rate == 0.01
    assert [(o.percentile, o.limit_us, o.inclusive) for o in slo.objectives] == [
        (99.0, 20_000.0, False),
        (99.9, 50_000.0, True),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("objectives: [p99<1ms]\nrate: 5\n", "unknown keys ['rate']"),
        ("objectives: [{percentile: 99}]\n", "exactly one of max_us, max_ms, max_s"),
        ("objectives: [{percentile: 99, max_ms: 1, typo: 2}]\n", "unknown keys ['typo']"),
        ("objectives: [p99<<1ms]\n", "objectives[0]"),
        ("- p99<1ms\n", "expected a mapping"),
        ("objectives: [p99<1ms]\nmax_error_rate: 2\n", "share in [0, 1]"),
        ("objectives: [\n", "not valid YAML"),
    ],
)
def test_invalid_slo_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text(content)
    with pytest.raises(SLOError) as info:
        load_slo_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_slo_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SLOError, match="cannot read SLO file"):
        load_slo_file(tmp_path / "absent.yaml")


def test_verdict_lists_each_objective() -> None:
    slo = parse_slo("p50<=1ms,p99<10ms")
    verdict = evaluate(slo, {50.0: 1_000.0, 99.0: 12_000.0}, error_rate=0.0)
    assert [(r.objective, r.passed) for r in verdict.results] == [
        ("p50<=1ms", True),
        ("p99<10ms", False),
        ("errors<=0%", True),
    ]
    assert verdict.results[1].measured == 12.0
    assert not verdict.passed
    assert verdict.to_dict()["passed"] is False


def test_errors_fail_an_slo_without_budget_and_pass_within_one() -> None:
    fast = {99.0: 10.0}
    assert not evaluate(parse_slo("p99<1ms"), fast, error_rate=0.01).passed
    assert evaluate(parse_slo("p99<1ms,errors<=2%"), fast, error_rate=0.01).passed


def test_no_successful_request_fails_latency_objectives() -> None:
    verdict = evaluate(parse_slo("p99<1s,errors<=100%"), {99.0: math.nan}, error_rate=1.0)
    assert not verdict.results[0].passed
    assert not verdict.passed
