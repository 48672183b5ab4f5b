"""Analysis of one shadow or canary step on live per-version samples.

Each step starts a fresh ``StepWindow``: per version, request and failure counts, latencies
(batcher time: queueing plus inference, the same measure for both versions) and one score per
output row; plus the rows compared between the two versions on the same inputs (shadow runs and
the sampled canary requests re-run on the primary). ``judge`` turns a window into checks; a check
with fewer than ``min_samples`` samples is not judged yet (noise must not roll a version back).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from driftserve.core.config import RolloutThresholds

# Bounded memory per version and step, whatever the traffic.
MAX_SAMPLES = 20_000
PSI_BINS = 10
PSI_EPSILON = 1e-4


@dataclass
class VersionSamples:
    """What one version did during the step."""

    requests: int = 0
    failures: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def p99_s(self) -> float:
        return (
            float(np.percentile(np.fromiter(self.latencies_s, dtype=np.float64), 99)) if self.latencies_s else math.nan
        )


@dataclass(frozen=True)
class Check:
    """One analysis check: its value, its limit, whether it passes, and on how many samples."""

    name: str
    value: float
    limit: float
    ok: bool
    samples: int
    judged: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class StepWindow:
    """The samples of one step: the candidate, the primary, and their comparisons."""

    candidate: VersionSamples = field(default_factory=VersionSamples)
    primary: VersionSamples = field(default_factory=VersionSamples)
    compared_rows: int = 0
    agreeing_rows: int = 0

    def add_comparison(self, rows: int, agreeing: int) -> None:
        self.compared_rows += rows
        self.agreeing_rows += agreeing


def output_scores(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """One number per output row: the last column of the first float output (the positive-class
    probability of a classifier), else the first integer output."""
    ordered = sorted(outputs, key=lambda n: (outputs[n].dtype.kind != "f", n))
    for name in ordered:
        array = outputs[name]
        if array.dtype.kind in "fiub" and array.ndim >= 1 and len(array):
            flat = array.reshape(len(array), -1)
            return flat[:, -1].astype(np.float64)
    return np.empty(0, dtype=np.float64)


def decisions(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per-row decisions: an integer label output, else the arg-max of a 2-D float output."""
    for name in sorted(outputs, key=lambda n: (outputs[n].dtype.kind == "f", n)):
        array = outputs[name]
        if array.dtype.kind in "iub" and (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
            return array.reshape(-1)
        if array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] > 1:
            decided: np.ndarray = np.argmax(array, axis=1)
            return decided
    return None


def agreement(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> tuple[int, int]:
    """(rows compared, rows deciding alike); (0, 0) when the outputs give no decision."""
    a, b = decisions(first), decisions(second)
    if a is None or b is None or a.shape != b.shape:
        return 0, 0
    return int(a.size), int(np.count_nonzero(a == b))


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``actual`` against ``expected`` on ``expected``'s quantile bins."""
    if expected.size == 0 or actual.size == 0:
        return math.nan
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / expected.size
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / actual.size
    e, a = np.maximum(e, PSI_EPSILON), np.maximum(a, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def judge(window: StepWindow, thresholds: RolloutThresholds, min_samples: int, baseline_p99_s: float) -> list[Check]:
    """The checks of the step so far. ``baseline_p99_s`` stands in for the primary's p99 when the
    primary served too little in this step (at a 100 % step it serves nothing)."""
    cand, prim = window.candidate, window.primary
    checks = []
    error_rate = cand.failures / cand.requests if cand.requests else math.nan
    checks.append(
        _check(
            "error_rate",
            error_rate,
            thresholds.max_error_rate,
            error_rate <= thresholds.max_error_rate,
            cand.requests,
            min_samples,
        )
    )
    primary_p99 = prim.p99_s() if len(prim.latencies_s) >= min_samples else baseline_p99_s
    ratio = cand.p99_s() / primary_p99 if primary_p99 > 0 and math.isfinite(primary_p99) else math.nan
    ok = ratio <= thresholds.max_p99_ratio
    checks.append(_check("p99_ratio", ratio, thresholds.max_p99_ratio, ok, len(cand.latencies_s), min_samples))
    share = window.agreeing_rows / window.compared_rows if window.compared_rows else math.nan
    checks.append(
        _check(
            "agreement",
            share,
            thresholds.min_agreement,
            share >= thresholds.min_agreement,
            window.compared_rows,
            min_samples,
        )
    )
    expected = np.fromiter(prim.scores, dtype=np.float64)
    actual = np.fromiter(cand.scores, dtype=np.float64)
    value = psi(expected, actual)
    checks.append(
        _check(
            "output_psi",
            value,
            thresholds.max_output_psi,
            value <= thresholds.max_output_psi,
            min(expected.size, actual.size),
            min_samples,
        )
    )
    return checks


def _check(name: str, value: float, limit: float, ok: bool, samples: int, min_samples: int) -> Check:
    judged = samples >= min_samples and math.isfinite(value)
    return Check(name, value, limit, ok or not judged, samples, judged)


def breaches(checks: list[Check]) -> list[Check]:
    """The judged checks that fail."""
    return [c for c in checks if c.judged and not c.ok]


def describe(check: Check) -> str:
    """One line for a breached check, as the rollback reason."""
    relation = ">=" if check.name == "agreement" else "<="
    return f"{check.name} {check.value:.4g} breaches {relation} {check.limit:g} ({check.samples} samples)"


def judge_sidecar(
    rows: int,
    agreeing_share: float,
    errors: int,
    shadow_p99_s: float,
    primary_p99_s: float,
    thresholds: RolloutThresholds,
    min_samples: int,
) -> list[Check]:
    """The checks of a shadow stage run in the sidecar: agreement on the compared rows, the p99 of
    both versions' inference time measured side by side there, and failed shadow runs (per run
    and compared row, an upper bound on the share of requests the candidate failed)."""
    error_rate = errors / (errors + rows) if errors + rows else math.nan
    ratio = shadow_p99_s / primary_p99_s if primary_p99_s > 0 and math.isfinite(primary_p99_s) else math.nan
    return [
        _check(
            "error_rate",
            error_rate,
            thresholds.max_error_rate,
            error_rate <= thresholds.max_error_rate,
            rows + errors,
            min_samples,
        ),
        _check("p99_ratio", ratio, thresholds.max_p99_ratio, ratio <= thresholds.max_p99_ratio, rows, min_samples),
        _check(
            "agreement",
            agreeing_share,
            thresholds.min_agreement,
            agreeing_share >= thresholds.min_agreement,
            rows,
            min_samples,
        ),
    ]
