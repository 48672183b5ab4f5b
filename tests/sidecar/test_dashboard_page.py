"""The /dashboard page and its data: alert-scaled bars, PSI history, mirrored traffic, wording."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar import traffic
from driftserve.sidecar.dashboard import sparkline
from driftserve.sidecar.drift.detector import FeatureWindowReport
from driftserve.sidecar.ingest import MirroredBatch
from driftserve.sidecar.state import HISTORY_POINTS
from driftserve.sidecar.traffic import LATENCY_SAMPLES, RATE_WINDOW_S, TrafficTracker
from driftserve.sidecar.views import ks_alert_score, plural, psi_alert_score
from tests.sidecar.support import MODEL, InProcessSidecar, batches_from, reference_rows, training_data

SHIFTED = "mean_concavity"


def _shifted_rows(rows: int, seed: int) -> np.ndarray:
    x, _, names = training_data()
    out = reference_rows(np.random.default_rng(seed), rows)
    out[:, names.index(SHIFTED)] += 0.5 * x[:, names.index(SHIFTED)].std()
    return out


def test_plural() -> None:
    assert plural(1, "row") == "1 row" and plural(2, "row") == "2 rows" and plural(0, "feature") == "0 features"
    assert plural(1, "batch", "batches") == "1 batch" and plural(1200, "batch", "batches") == "1,200 batches"


def test_bars_cross_their_tick_exactly_when_the_detector_alerts_on_that_test(
    sidecar: InProcessSidecar, primary: ort.InferenceSession
) -> None:
    sidecar.publish(batches_from(reference_rows(np.random.default_rng(3), 4096), primary))
    sidecar.publish(batches_from(_shifted_rows(4096, 4), primary))
    report = sidecar.running.state.report(MODEL, max_age_s=0.0)
    config = sidecar.running.state.models[MODEL].config.drift
    assert config is not None
    judged = [i for i in report.items if i.status != "insufficient"]
    assert len(judged) > 30
    for item in judged:
        ks_reason = any(r.startswith("ks ") for r in item.reasons)
        psi_reason = any(r.startswith("psi ") and "(>= alert" in r for r in item.reasons)
        assert (ks_alert_score(item, config) >= 1.0) == ks_reason, (item.feature, item.window, item.reasons)
        assert (psi_alert_score(item, config) >= 1.0) == psi_reason, (item.feature, item.window, item.reasons)
        if item.status == "ok":  # NaN (no KS for a categorical output) draws an empty bar
            assert not ks_alert_score(item, config) >= 1.0 and psi_alert_score(item, config) < 1.0
    shifted = next(i for i in judged if i.feature == SHIFTED and i.window == "sliding")
    assert shifted.status == "alert" and ks_alert_score(shifted, config) >= 1.0


def test_ks_score_is_the_weaker_of_effect_size_and_significance() -> None:
    config = DriftConfig(reference="profile.json")  # alpha 0.01, min_statistic 0.05

    def item(stat: float, p: float) -> FeatureWindowReport:
        return FeatureWindowReport(SHIFTED, "input", "sliding", 0.0, 0.0, stat, 0.0, p, p, 0.0, 0.0, 0, 1000, "ok")

    assert ks_alert_score(item(0.10, 1e-4), config) == pytest.approx(2.0)  # both past: the weaker (2.0 and 2.0)
    assert ks_alert_score(item(0.20, 0.5), config) < 0.2  # big statistic, not significant
    assert ks_alert_score(item(0.01, 0.0), config) == pytest.approx(0.2)  # significant, tiny effect
    assert math.isnan(ks_alert_score(item(math.nan, math.nan), config))


def test_page_has_sparklines_distinct_titles_and_singular_wording(
    sidecar: InProcessSidecar, primary: ort.InferenceSession
) -> None:
    sidecar.publish(batches_from(reference_rows(np.random.default_rng(5), 2048), primary))
    for _ in range(3):
        sidecar.running.state.report(MODEL, max_age_s=0.0)
    status, page = sidecar.http("/dashboard")
    assert status == 200
    table = page.split('<table class="features">')[1].split("</table>")[0]
    titles = re.findall(r"<th>([^<]+)</th>", table.split("</tr>")[0])
    assert len(titles) == len(set(titles)) == 12
    assert "1 monitored model:" in page and "30 features and 3 outputs monitored" in page
    assert not re.search(r"\b1 (rows|features|batches|alerts|requests)\b", page)
    rows = re.findall(r'<tr data-feature="[^"]+" data-kind="input" data-status="ok".*?</tr>', page)
    assert len(rows) == 30 and all("<polyline" in row and 'stroke-dasharray="3,2"' in row for row in rows)
    assert "Server traffic seen by the sidecar" in page and "mirrored requests/s" in page
    assert "http" not in page.split("<body>")[1] and "<script" not in page


def test_psi_history_is_bounded_and_in_the_json_api(sidecar: InProcessSidecar, primary: ort.InferenceSession) -> None:
    sidecar.publish(batches_from(reference_rows(np.random.default_rng(6), 1024), primary))
    state = sidecar.running.state
    first = state.report(MODEL, max_age_s=0.0)
    model = state.models[MODEL]
    with model.report_lock:  # as an evaluation does, without paying for hundreds of them
        for _ in range(HISTORY_POINTS + 20):
            model.record_history(first.items, model.traffic.snapshot())
    report = state.report(MODEL, max_age_s=0.0)
    assert report.psi_history and all(len(h) == HISTORY_POINTS for h in report.psi_history.values())
    doc = json.loads(sidecar.http(f"/api/drift/{MODEL}?window=sliding")[1])
    feature = next(f for f in doc["features"] if f["feature"] == SHIFTED)
    assert len(feature["psi_excess_history"]) == HISTORY_POINTS
    assert feature["psi_excess_history"][-1] == pytest.approx(feature["psi"] - feature["psi_expected"])
    mirrored = doc["mirrored_traffic"]
    # batches_from: requests of 16 rows, each with the 1 ms server latency mirror_batch states.
    assert mirrored["requests_total"] == 1024 // 16 and mirrored["rows_total"] == 1024
    assert mirrored["latency_p50_s"] == pytest.approx(0.001) and mirrored["requests_per_s"] > 0


def _batch(requests: int, latency_s: float) -> MirroredBatch:
    return MirroredBatch(MODEL, "1", requests * 4, None, {}, {}, [4] * requests, [latency_s] * requests)


def test_traffic_tracker_rates_cover_the_last_minute_and_latency_is_bounded() -> None:
    tracker = TrafficTracker(now=0.0)
    tracker.observe(_batch(30, 0.002), now=10.0)
    snapshot = tracker.snapshot(now=30.0)  # 30 s since start: rates over 30 s
    assert snapshot.requests_per_s == pytest.approx(1.0) and snapshot.rows_per_s == pytest.approx(4.0)
    tracker.observe(_batch(120, 0.010), now=100.0)
    snapshot = tracker.snapshot(now=100.0 + RATE_WINDOW_S / 2)  # the first batch left the window
    assert snapshot.requests_per_s == pytest.approx(120 / RATE_WINDOW_S)
    assert snapshot.requests_total == 150 and snapshot.rows_total == 600
    assert snapshot.latency_p50_s == pytest.approx(0.010) and snapshot.latency_p99_s == pytest.approx(0.010)
    for _ in range(LATENCY_SAMPLES // 100 + 1):
        tracker.observe(_batch(100, 0.5), now=120.0)
    assert tracker.snapshot(now=120.0).latency_p50_s == pytest.approx(0.5)  # only the last samples are kept


def test_sparkline_leaves_gaps_for_unjudged_evaluations() -> None:
    svg = sparkline([math.nan, 0.1, 0.2, math.nan, 0.3, 0.4], "psi", threshold=0.25)
    assert svg.count("<polyline") == 2 and 'stroke-dasharray="3,2"' in svg
    assert "<polyline" not in sparkline([math.nan, 0.5], "psi") and "<circle" in sparkline([math.nan, 0.5], "psi")


def test_a_model_without_traffic_renders(repository: Path) -> None:
    with InProcessSidecar(repository) as fresh:
        status, page = fresh.http("/dashboard")
    assert status == 200 and "0 rows in 0 batches seen" in page and "–" in page


def test_traffic_tracker_keeps_at_most_max_batch_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "MAX_BATCH_ENTRIES", 10)
    tracker = TrafficTracker(now=0.0)
    for _ in range(15):
        tracker.observe(_batch(1, 0.001), now=RATE_WINDOW_S)
    snapshot = tracker.snapshot(now=RATE_WINDOW_S)
    assert snapshot.requests_per_s == pytest.approx(10 / RATE_WINDOW_S) and snapshot.requests_total == 15
