"""Hysteresis, actions (webhook to a loopback server, command hook, cooldown) and metrics."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftserve.core.drift_config import ActionsConfig, DriftConfig
from driftserve.core.ports import free_port
from driftserve.sidecar.drift.actions import AlertDispatcher
from driftserve.sidecar.drift.detector import (
    CUMULATIVE,
    SLIDING,
    DriftReportData,
    FeatureWindowReport,
    ModelDriftMonitor,
)
from driftserve.sidecar.drift.hysteresis import AlertTransition, HysteresisTracker
from driftserve.sidecar.drift.profile import build_profile
from driftserve.sidecar.metrics import DriftMetrics

KEY = ("f", "sliding")


def test_hysteresis_needs_consecutive_reports_to_rise_and_to_clear() -> None:
    tracker = HysteresisTracker(min_consecutive=2)
    assert tracker.step(KEY, 2, 2) == (0, 0)  # one report is not enough
    assert tracker.step(KEY, 0, 0) == (0, 0)  # and the streak resets
    assert tracker.step(KEY, 2, 2) == (0, 0)
    assert tracker.step(KEY, 2, 2) == (0, 2)
    # Below the entry threshold but above the clear one (hold level 2): stays in alert.
    for _ in range(5):
        assert tracker.step(KEY, 1, 2) == (2, 2)
    assert tracker.step(KEY, 0, 1) == (2, 2)
    assert tracker.step(KEY, 0, 1) == (2, 1)  # falls to what the clear thresholds still support
    assert tracker.step(KEY, 0, 0) == (1, 1)
    assert tracker.step(KEY, 0, 0) == (1, 0)
    assert tracker.clear(KEY) == 0


def test_hysteresis_does_not_flap_on_a_value_hovering_at_the_threshold() -> None:
    tracker = HysteresisTracker(min_consecutive=2)
    levels = []
    # A PSI alternating 0.26 / 0.24 around alert=0.25: entry level 2 / 1, clear level 2 both times.
    for value in [0.26, 0.26] + [0.24, 0.26] * 10:
        enter = 2 if value >= 0.25 else 1
        hold = 2 if value >= 0.25 * 0.8 else 1
        levels.append(tracker.step(KEY, enter, hold)[1])
    assert levels[0] == 0 and set(levels[1:]) == {2}


def test_detector_alert_rises_after_two_reports_and_clears_after_recovery() -> None:
    rng = np.random.default_rng(0)
    prof = build_profile(rng.normal(size=(20_000, 2)), ["a", "b"])
    cfg = DriftConfig(reference="p", window={"pane_seconds": 1.0, "panes": 1}, min_window_rows=500)
    mon = ModelDriftMonitor(prof, cfg, "m")
    statuses = []
    for second, shift in enumerate([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]):
        X = rng.normal(size=(2000, 2))
        X[:, 0] += shift
        mon.update(X, None, float(second))
        statuses.append(mon.report(float(second)).get("a", SLIDING).status)
    assert statuses == ["ok", "alert", "alert", "alert", "ok", "ok"]


def _report(status: str = "alert", previous: str = "ok") -> DriftReportData:
    item = FeatureWindowReport(
        feature="f0",
        source="input",
        window=SLIDING,
        psi=0.4,
        psi_expected=0.01,
        ks_statistic=0.2,
        ks_bound=0.001,
        ks_pvalue=0.0,
        ks_pvalue_corrected=0.0,
        missing_share=0.0,
        reference_missing_share=0.0,
        unseen_categories=0,
        window_rows=1000,
        status=status,
        reasons=["psi 0.4"],
    )
    transition = AlertTransition("m", "f0", SLIDING, previous, status, 12.0, ["psi 0.4"])
    return DriftReportData("m", 12.0, 1000, [item], [transition])


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[bytes]
    release: threading.Event

    def do_POST(self) -> None:
        self.release.wait(10)
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/drift", handler
    handler.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def test_webhook_posts_json_without_blocking_dispatch(hook_server: tuple[str, type[_Hook]]) -> None:
    url, handler = hook_server
    dispatcher = AlertDispatcher(ActionsConfig(webhook_url=url), "m")
    try:
        assert dispatcher.dispatch(_report()) is True  # returns while the server still holds the request
        assert handler.received == []
        handler.release.set()
        assert dispatcher.wait_idle(10)
    finally:
        dispatcher.close()
    payload = json.loads(handler.received[0])
    assert payload["model"] == "m"
    assert payload["transitions"][0]["current"] == "alert"
    assert payload["alerting"][0]["feature"] == "f0"
    assert dispatcher.actions_sent == 1


def test_command_hook_gets_the_payload_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "trigger.json"
    code = f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())"
    dispatcher = AlertDispatcher(ActionsConfig(command=[sys.executable, "-c", code]), "m")
    try:
        assert dispatcher.dispatch(_report())
        assert dispatcher.wait_idle(30)
    finally:
        dispatcher.close()
    assert json.loads(out.read_text())["transitions"][0]["feature"] == "f0"


def test_cooldown_and_only_alert_entries_trigger_actions(tmp_path: Path) -> None:
    clock = [100.0]
    command = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    dispatcher = AlertDispatcher(ActionsConfig(command=command, cooldown_s=60), "m", clock=lambda: clock[0])
    try:
        assert dispatcher.dispatch(_report("warn")) is False
        assert dispatcher.dispatch(_report()) is True
        clock[0] += 30
        assert dispatcher.dispatch(_report()) is False
        clock[0] += 31
        assert dispatcher.dispatch(_report()) is True
        assert dispatcher.wait_idle(30)
    finally:
        dispatcher.close()
    assert dispatcher.actions_sent == 2


def test_failing_webhook_and_command_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    cfg = ActionsConfig(webhook_url=f"http://127.0.0.1:{port}/", command=[sys.executable, "-c", "raise SystemExit(3)"])
    dispatcher = AlertDispatcher(cfg, "m")
    try:
        dispatcher.dispatch(_report())
        assert dispatcher.wait_idle(30)
    finally:
        dispatcher.close()
    assert dispatcher.actions_failed == 2
    assert "drift webhook" in caplog.text and "exited 3" in caplog.text


def test_metrics_publish_report_into_gauges() -> None:
    registry = CollectorRegistry()
    metrics = DriftMetrics(registry)
    rng = np.random.default_rng(1)
    prof = build_profile(rng.normal(size=(5000, 2)), ["a", "b"])
    mon = ModelDriftMonitor(prof, DriftConfig(reference="p", min_window_rows=1000), "m")
    X = rng.normal(size=(600, 2))
    X[:100, 1] = np.nan
    mon.update(X, None, 0.0)
    rep = mon.report(0.0)
    metrics.publish(rep)
    labels = {"model": "m", "feature": "b", "window": CUMULATIVE}
    item = rep.get("b", CUMULATIVE)
    assert registry.get_sample_value("driftserve_drift_psi", labels) == pytest.approx(item.psi)
    assert registry.get_sample_value("driftserve_drift_ks_statistic", labels) == pytest.approx(item.ks_statistic)
    assert registry.get_sample_value("driftserve_drift_ks_pvalue", labels) == pytest.approx(item.ks_pvalue)
    assert registry.get_sample_value("driftserve_drift_window_rows", labels) == 600
    assert registry.get_sample_value("driftserve_drift_missing_share", labels) == pytest.approx(100 / 600)
    assert registry.get_sample_value("driftserve_drift_alert", labels) == -1  # below min_window_rows
    assert registry.get_sample_value("driftserve_drift_rows_total", {"model": "m"}) == 600
    mon.update(rng.normal(size=(600, 2)), None, 1.0)
    metrics.publish(mon.report(1.0))
    assert registry.get_sample_value("driftserve_drift_rows_total", {"model": "m"}) == 1200
    assert registry.get_sample_value("driftserve_drift_alert", labels) == 0
