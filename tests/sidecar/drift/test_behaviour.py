"""Statistical behaviour on streams, in-process with a fake clock.

Configuration for every scenario: the defaults (10 coarse bins, PSI warn/alert 0.1/0.25 on the
excess over the no-drift expectation, KS alpha 0.01 with Benjamini-Hochberg across the 30
features and min_statistic 0.05, min_window_rows 500, missing warn/alert +0.05/+0.2, hysteresis
2 reports, clear ratio 0.8), a sliding window of 6 panes x 10 s, 100 rows/s in batches of 100,
a report every 5 s (500 rows), and a 20,000-row reference of mixed shapes (normal, log-normal,
Poisson with ties, uniform, gamma).

Why the null stream stays quiet: the binned KS statistic is a lower bound of the raw one, so
binning only makes the test conservative; while windows are small, the corrected p-value needs a
statistic near 0.09 (500 rows), and once the sliding window is full (6,000 rows) a statistic of
min_statistic=0.05 has a null tail probability near 1e-10 per feature; PSI decisions subtract the
no-drift expectation (about 0.02 at 500 rows) and 0.1 is then far in the chi-square tail.
"""

from __future__ import annotations

import numpy as np
import pytest

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.detector import SLIDING, DriftReportData, ModelDriftMonitor
from driftserve.sidecar.drift.profile import build_profile

from .conftest import FEATURE_NAMES, mixed_rows

ROWS_PER_SECOND = 100
REPORT_EVERY_S = 5
REFERENCE_ROWS = 20_000


def _stream(X: np.ndarray, mon: ModelDriftMonitor, start_row: int = 0) -> list[tuple[int, DriftReportData]]:
    """Feed ``X`` one second (100 rows) at a time; returns (rows so far, report) every 5 s."""
    reports = []
    for i in range(0, X.shape[0], ROWS_PER_SECOND):
        now = (start_row + i) / ROWS_PER_SECOND
        mon.update(X[i : i + ROWS_PER_SECOND], None, now)
        if (start_row + i) // ROWS_PER_SECOND % REPORT_EVERY_S == REPORT_EVERY_S - 1:
            reports.append((start_row + i + ROWS_PER_SECOND, mon.report(now)))
    return reports


def _monitor(seed: int, cfg: DriftConfig) -> tuple[ModelDriftMonitor, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return ModelDriftMonitor(build_profile(mixed_rows(rng, REFERENCE_ROWS), FEATURE_NAMES), cfg, "m"), rng


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_stream_from_the_reference_raises_nothing_over_100k_rows(seed: int, base_config: DriftConfig) -> None:
    mon, rng = _monitor(seed, base_config)
    reports = _stream(mixed_rows(rng, 100_000), mon)
    flagged = {(i.feature, i.window, i.status) for _, r in reports for i in r.with_status("warn", "alert")}
    assert flagged == set()
    assert reports[-1][1].rows_total == 100_000
    assert all(not r.transitions for _, r in reports)


# Standard deviations: 1 for the normal f0, 7 / sqrt(12) for f3, uniform on [-2, 5].
@pytest.mark.parametrize("feature, scale", [("f0", 1.0), ("f3", 7.0 / np.sqrt(12.0))], ids=["normal", "uniform"])
@pytest.mark.parametrize("seed", [21, 22])
def test_half_sd_shift_alerts_on_that_feature_only_within_5000_rows(
    feature: str, scale: float, seed: int, base_config: DriftConfig
) -> None:
    mon, rng = _monitor(seed, base_config)
    warmup = _stream(mixed_rows(rng, 20_000), mon)
    assert not any(r.with_status("warn", "alert") for _, r in warmup)
    shifted = mixed_rows(rng, 5_000)
    shifted[:, FEATURE_NAMES.index(feature)] += 0.5 * scale
    reports = _stream(shifted, mon, start_row=20_000)
    first = next((rows - 20_000 for rows, r in reports if r.get(feature, SLIDING).status == "alert"), None)
    assert first is not None and first <= 5_000
    others = {(i.feature, i.window) for _, r in reports for i in r.with_status("warn", "alert") if i.feature != feature}
    assert others == set()
    alert_transitions = [t for _, r in reports for t in r.transitions if t.current == "alert"]
    assert alert_transitions and {t.feature for t in alert_transitions} == {feature}


def test_nan_heavy_feature_raises_missing_share_alert(base_config: DriftConfig) -> None:
    mon, rng = _monitor(31, base_config)
    _stream(mixed_rows(rng, 10_000), mon)
    live = mixed_rows(rng, 5_000)
    live[rng.random(5_000) < 0.6, 2] = np.nan
    reports = _stream(live, mon, start_row=10_000)
    item = reports[-1][1].get("f2", SLIDING)
    assert item.status == "alert"
    assert any(r.startswith("missing share") for r in item.reasons)
    assert item.reference_missing_share == 0.0 and item.missing_share > 0.3
    flagged = {i.feature for _, r in reports for i in r.with_status("warn", "alert")}
    assert flagged == {"f2"}
