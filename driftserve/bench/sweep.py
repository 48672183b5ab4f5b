"""Sweeps over load levels and the search for the highest rate that still meets an SLO.

Several targets (e.g. driftserve and the naive baseline) are measured interleaved at each level,
so slow drift of the machine affects both alike and their ratio stays honest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftserve.bench.runner import LoadSpec, RunResult, run_load
from driftserve.bench.slo import SLO, Verdict, evaluate

logger = logging.getLogger(__name__)

Runner = Callable[[LoadSpec], RunResult]
DEFAULT_MAX_STEPS = 8


class SweepError(ValueError):
    """A sweep description that does not parse."""


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """`closed:1,2,4` or `open:100,200` → (mode, levels)."""
    mode, sep, levels = text.partition(":")
    if not sep or mode not in ("closed", "open"):
        raise SweepError(f"bad sweep {text!r}: expected 'closed:1,2,4,...' or 'open:100,200,...'")
    try:
        values = [float(v) for v in levels.split(",") if v.strip()]
    except ValueError:
        raise SweepError(f"bad sweep {text!r}: levels must be numbers") from None
    if not values or any(v <= 0 for v in values):
        raise SweepError(f"bad sweep {text!r}: give one or more positive levels")
    if mode == "closed" and any(v != int(v) for v in values):
        raise SweepError(f"bad sweep {text!r}: concurrency levels must be integers")
    if len(values) > 64:
        raise SweepError(f"bad sweep {text!r}: at most 64 levels")
    return mode, values


def sweep(specs: Sequence[LoadSpec], mode: str, levels: Sequence[float], runner: Runner = run_load) -> list[RunResult]:
    """Run every level against every spec, interleaved (level by level, target by target)."""
    results = []
    for level in levels:
        for spec in specs:
            result = runner(spec.with_load(mode, level))
            logger.info(
                "%s %s %g: %.0f rps p99 %.3f ms",
                result.label,
                mode,
                level,
                result.throughput_rps,
                result.latency_ms["p99"],
            )
            results.append(result)
    return results


@dataclass
class MaxRateSearch:
    """Outcome of `find_max_rate`: the best passing rate and every step taken."""

    label: str
    slo: str
    max_rate_rps: float | None
    steps: list[tuple[RunResult, Verdict]] = field(default_factory=list)
    # Earlier open-loop runs (e.g. a sweep) the search started from, without re-measuring them.
    prior: list[tuple[RunResult, Verdict]] = field(default_factory=list)

    @property
    def bounded(self) -> bool:
        """Whether a rate above the answer failed, so `max_rate_rps` is bracketed, not a floor."""
        return any(
            not v.passed and (self.max_rate_rps is None or r.level > self.max_rate_rps)
            for r, v in self.prior + self.steps
        )

    def to_dict(self) -> dict[str, Any]:
        def rows(runs: list[tuple[RunResult, Verdict]]) -> list[dict[str, Any]]:
            return [
                {
                    "rate_rps": r.level,
                    "throughput_rps": r.throughput_rps,
                    "p99_ms": r.latency_ms["p99"],
                    "passed": v.passed,
                }
                for r, v in runs
            ]

        return {
            "label": self.label,
            "slo": self.slo,
            "max_rate_rps": self.max_rate_rps,
            "bounded": self.bounded,
            "prior": rows(self.prior),
            "steps": rows(self.steps),
        }


def _next_rate(passed: float | None, failed: float | None, start_rps: float) -> float:
    if passed is None and failed is None:
        return start_rps
    if failed is None:
        return 2 * passed  # type: ignore[operator]
    if passed is None:
        return failed / 2
    return (passed + failed) / 2


def _close_enough(passed: float | None, failed: float | None) -> bool:
    return passed is not None and failed is not None and failed - passed <= max(1.0, 0.05 * passed)


def find_max_rate(
    spec: LoadSpec,
    slo: SLO,
    start_rps: float = 100.0,
    max_steps: int = DEFAULT_MAX_STEPS,
    runner: Runner = run_load,
    confirm_failures: bool = True,
    prior: Sequence[RunResult] = (),
) -> MaxRateSearch:
    """Highest open-loop rate meeting `slo`: double from `start_rps` until a failure, then
    bisect between the last pass and the first failure; at most `max_steps` rates.

    `prior` open-loop results of the same target (a sweep just run) seed the bracket, so the
    search starts bisecting at once. On a shared machine one stray stall can sink a p99, so
    with `confirm_failures` a failing rate is measured once more and only counts as failed if
    it fails again (at most 2 × `max_steps` runs in all). Every run is kept in `steps`;
    `max_steps=0` only judges `prior`.
    """
    if start_rps <= 0 or max_steps < 0:
        raise SweepError("start rate must be positive and max steps non-negative")
    search = MaxRateSearch(spec.label or spec.target, slo.label, None)
    search.prior = [
        (r, evaluate(slo, r.percentiles_us(), r.error_rate))
        for r in prior
        if r.mode == "open" and r.label == search.label
    ]
    failures = [r.level for r, v in search.prior if not v.passed]
    failed: float | None = min(failures) if failures else None
    passes = [r.level for r, v in search.prior if v.passed and (failed is None or r.level < failed)]
    passed: float | None = max(passes) if passes else None
    for _ in range(max_steps):
        if _close_enough(passed, failed):
            break
        rate = _next_rate(passed, failed, start_rps)
        ok = _measure(search, spec, slo, rate, runner)
        if not ok and confirm_failures:
            logger.info("%s at %.0f rps failed; measuring once more to confirm", search.label, rate)
            ok = _measure(search, spec, slo, rate, runner)
        if ok:
            passed = rate
        else:
            failed = rate
    search.max_rate_rps = passed
    return search


def _measure(search: MaxRateSearch, spec: LoadSpec, slo: SLO, rate: float, runner: Runner) -> bool:
    result = runner(spec.with_load("open", rate))
    verdict = evaluate(slo, result.percentiles_us(), result.error_rate)
    search.steps.append((result, verdict))
    logger.info(
        "%s at %.0f rps: p99 %.3f ms, %s",
        search.label,
        rate,
        result.latency_ms["p99"],
        "pass" if verdict.passed else "fail",
    )
    return verdict.passed
