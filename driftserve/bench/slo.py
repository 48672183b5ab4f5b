"""Latency service-level objectives: the `p99<100ms@2000rps` grammar, SLO files and verdicts.

Grammar (objectives joined by `,`)::

    objective := "p" PERCENTILE ("<" | "<=") NUMBER UNIT ["@" NUMBER "rps"]
               | "max" ("<" | "<=") NUMBER UNIT ["@" NUMBER "rps"]
               | "errors" ("<" | "<=") NUMBER "%" ["@" NUMBER "rps"]
    UNIT      := "us" | "ms" | "s"

All objectives in one SLO must name the same rate (or none). An SLO file is YAML::

    rate_rps: 2000            # optional: the open-loop rate the objectives are judged at
    max_error_rate: 0.001     # optional: share of failed requests allowed
    objectives:
      - "p99<100ms"
      - {percentile: 99.9, max_ms: 250, inclusive: false}
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

_UNIT_TO_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0}
_OBJECTIVE_RE = re.compile(
    r"^\s*(?:p(?P<pct>\d+(?:\.\d+)?)|(?P<max>max))\s*(?P<op><=|<)\s*"
    r"(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s)\s*(?:@\s*(?P<rate>\d+(?:\.\d+)?)\s*rps)?\s*$"
)
_ERROR_RE = re.compile(
    r"^\s*errors\s*(?P<op><=|<)\s*(?P<value>\d+(?:\.\d+)?)\s*%\s*"
    r"(?:@\s*(?P<rate>\d+(?:\.\d+)?)\s*rps)?\s*$"
)
# Share of failed requests an SLO without `errors<...` tolerates.
DEFAULT_MAX_ERROR_RATE = 0.0
_EXAMPLES = "expected e.g. 'p99<100ms@2000rps', 'p50<=1ms', 'p99.9<250us', 'max<1s' or 'errors<0.1%'"


class SLOError(ValueError):
    """An SLO string or file that does not follow the grammar; the message says what and why."""


@dataclass(frozen=True)
class Objective:
    """One latency bound: the given percentile (100 for max) must stay below `limit_us`."""

    percentile: float
    limit_us: float
    inclusive: bool = False

    @property
    def label(self) -> str:
        """The objective written back in the grammar, e.g. `p99<100ms`."""
        name = "max" if self.percentile == 100.0 else f"p{self.percentile:g}"
        op = "<=" if self.inclusive else "<"
        return f"{name}{op}{format_us(self.limit_us)}"

    def holds(self, measured_us: float) -> bool:
        """Whether a measured value satisfies this bound."""
        return measured_us <= self.limit_us if self.inclusive else measured_us < self.limit_us


@dataclass(frozen=True)
class SLO:
    """A set of objectives, optionally tied to an open-loop rate and an error budget."""

    objectives: tuple[Objective, ...]
    rate_rps: float | None = None
    max_error_rate: float | None = None

    @property
    def label(self) -> str:
        """The SLO written back in the grammar."""
        parts = [o.label for o in self.objectives]
        if self.max_error_rate is not None:
            parts.append(f"errors<={self.max_error_rate * 100:g}%")
        if self.rate_rps is not None:
            parts[0] += f"@{self.rate_rps:g}rps"
        return ",".join(parts)


@dataclass(frozen=True)
class ObjectiveResult:
    """One objective's outcome in a verdict."""

    objective: str
    measured: float
    limit: float
    unit: str
    passed: bool


@dataclass
class Verdict:
    """Every objective with its measured value; `passed` only when all of them hold."""

    slo: str
    results: list[ObjectiveResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "passed": self.passed,
            "objectives": [r.__dict__ for r in self.results],
        }


def format_us(value_us: float) -> str:
    """Microseconds in the largest unit that keeps the number readable (`250us`, `1.5ms`, `2s`)."""
    if value_us >= 1_000_000 and value_us % 100_000 == 0:
        return f"{value_us / 1_000_000:g}s"
    if value_us >= 1_000:
        return f"{value_us / 1_000:g}ms"
    return f"{value_us:g}us"


def _parse_one(text: str) -> tuple[Objective | None, float | None, float | None]:
    """Parse one objective; returns (latency objective, rate, error budget)."""
    err = _ERROR_RE.match(text)
    if err:
        budget = float(err["value"]) / 100.0
        if budget > 1.0:
            raise SLOError(f"error budget {err['value']}% in {text!r} is above 100%")
        return None, None, budget
    m = _OBJECTIVE_RE.match(text)
    if not m:
        raise SLOError(f"cannot parse SLO objective {text!r}: {_EXAMPLES}")
    pct = 100.0 if m["max"] else float(m["pct"])
    if not 0.0 < pct <= 100.0:
        raise SLOError(f"percentile p{m['pct']} in {text!r} must be in (0, 100]")
    limit_us = float(m["value"]) * _UNIT_TO_US[m["unit"]]
    if limit_us <= 0:
        raise SLOError(f"latency bound in {text!r} must be positive")
    rate = float(m["rate"]) if m["rate"] else None
    if rate is not None and rate <= 0:
        raise SLOError(f"rate in {text!r} must be positive")
    return Objective(pct, limit_us, m["op"] == "<="), rate, None


def _combine(parsed: Iterable[tuple[Objective | None, float | None, float | None]], source: str) -> SLO:
    objectives: list[Objective] = []
    rates: set[float] = set()
    budget: float | None = None
    for objective, rate, error_budget in parsed:
        if objective is not None:
            objectives.append(objective)
        if rate is not None:
            rates.add(rate)
        if error_budget is not None:
            budget = error_budget if budget is None else min(budget, error_budget)
    if len(rates) > 1:
        raise SLOError(f"SLO {source!r} names several rates {sorted(rates)}; one SLO is judged at one rate")
    if not objectives and budget is None:
        raise SLOError(f"SLO {source!r} has no objectives: {_EXAMPLES}")
    return SLO(tuple(objectives), rates.pop() if rates else None, budget)


def parse_slo(text: str) -> SLO:
    """Parse `p99<100ms@2000rps,p50<=1ms`; raises SLOError naming the bad part."""
    if not text or not text.strip():
        raise SLOError(f"empty SLO: {_EXAMPLES}")
    parts = [p for p in text.split(",")]
    if any(not p.strip() for p in parts):
        raise SLOError(f"empty objective in SLO {text!r} (stray ',')")
    return _combine((_parse_one(p) for p in parts), text)


def _objective_from_mapping(item: Mapping[str, Any], where: str) -> Objective:
    allowed = {"percentile", "max_ms", "max_us", "max_s", "inclusive"}
    unknown = set(item) - allowed
    if unknown:
        raise SLOError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
    if "percentile" not in item:
        raise SLOError(f"{where}: missing 'percentile'")
    limits = [k for k in ("max_us", "max_ms", "max_s") if k in item]
    if len(limits) != 1:
        raise SLOError(f"{where}: give exactly one of max_us, max_ms, max_s")
    try:
        pct = float(item["percentile"])
        limit_us = float(item[limits[0]]) * _UNIT_TO_US[limits[0][4:]]
    except (TypeError, ValueError) as exc:
        raise SLOError(f"{where}: percentile and limit must be numbers ({exc})") from None
    if not 0.0 < pct <= 100.0 or limit_us <= 0:
        raise SLOError(f"{where}: percentile must be in (0, 100] and the limit positive")
    return Objective(pct, limit_us, bool(item.get("inclusive", False)))


def load_slo_file(path: str | Path) -> SLO:
    """Load a YAML SLO file (see the module docstring); unknown keys are errors."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SLOError(f"cannot read SLO file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SLOError(f"SLO file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SLOError(f"SLO file {path}: expected a mapping with 'objectives'")
    allowed = {"objectives", "rate_rps", "max_error_rate"}
    unknown = set(data) - allowed
    if unknown:
        raise SLOError(f"SLO file {path}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
    items = data.get("objectives") or []
    if not isinstance(items, list):
        raise SLOError(f"SLO file {path}: 'objectives' must be a list")
    parsed: list[tuple[Objective | None, float | None, float | None]] = []
    for i, item in enumerate(items):
        where = f"SLO file {path}, objectives[{i}]"
        if isinstance(item, str):
            try:
                parsed.append(_parse_one(item))
            except SLOError as exc:
                raise SLOError(f"{where}: {exc}") from None
        elif isinstance(item, dict):
            parsed.append((_objective_from_mapping(item, where), None, None))
        else:
            raise SLOError(f"{where}: expected a string or a mapping, got {type(item).__name__}")
    for key in ("rate_rps", "max_error_rate"):
        value = data.get(key)
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            raise SLOError(f"SLO file {path}: {key} must be a non-negative number, got {value!r}")
    if data.get("rate_rps") is not None:
        parsed.append((None, float(data["rate_rps"]), None))
    if data.get("max_error_rate") is not None:
        if data["max_error_rate"] > 1:
            raise SLOError(f"SLO file {path}: max_error_rate is a share in [0, 1]")
        parsed.append((None, None, float(data["max_error_rate"])))
    return _combine(parsed, str(path))


def evaluate(slo: SLO, percentile_us: Mapping[float, float], error_rate: float) -> Verdict:
    """Judge measured percentiles (µs, keyed by percentile; 100 = max) against the SLO.

    Without an explicit error budget any failed request violates the SLO: a run that sheds load
    must not pass on the latency of the few requests that got through. A percentile with no
    measurement (nothing succeeded) fails.
    """
    verdict = Verdict(slo.label)
    for objective in slo.objectives:
        measured = percentile_us.get(objective.percentile, math.nan)
        verdict.results.append(
            ObjectiveResult(
                objective.label,
                round(measured / 1_000.0, 4),
                objective.limit_us / 1_000.0,
                "ms",
                not math.isnan(measured) and objective.holds(measured),
            )
        )
    budget = DEFAULT_MAX_ERROR_RATE if slo.max_error_rate is None else slo.max_error_rate
    verdict.results.append(
        ObjectiveResult(f"errors<={budget * 100:g}%", round(error_rate, 6), budget, "share", error_rate <= budget)
    )
    return verdict
