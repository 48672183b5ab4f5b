"""Alert levels with hysteresis, actions on alerts (log, webhook, command hook) and metrics.

Levels are ``ok`` (0) < ``warn`` (1) < ``alert`` (2). Each (model, feature, window) has a small
state machine: it rises to a higher level only after ``min_consecutive`` reports at or above it
(entry thresholds), and falls only after ``min_consecutive`` reports below the level under the
*clear* thresholds (entry thresholds times ``clear_ratio``), so a value hovering at a threshold
does not flap.

Actions: every transition is logged. A report in which some feature *enters* ``alert`` fires the
webhook (POST of a JSON payload) and the command hook (argv with the same JSON on stdin), at most
once per ``cooldown_s`` per model, from one background thread with a timeout, so that neither a
slow endpoint nor a slow command ever blocks ``update`` or ``report``.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.drift.config import ActionsConfig

if TYPE_CHECKING:
    from monitoring.drift.detector import DriftReportData

logger = logging.getLogger(__name__)

LEVELS: Mapping[str, int] = {"ok": 0, "warn": 1, "alert": 2}
LEVEL_NAMES = ("ok", "warn", "alert")
# Gauge value for a window too small to judge; below ok so "alert >= 2" rules are unaffected.
INSUFFICIENT_GAUGE = -1.0
_ACTION_QUEUE_SIZE = 64
_STDERR_TAIL_CHARS = 500


@dataclass(frozen=True)
class AlertTransition:
    """A change of level of one (model, feature, window), with the evidence behind it."""

    model: str
    feature: str
    window: str
    previous: str
    current: str
    timestamp: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class _State:
    level: int = 0
    streak: int = 0


class HysteresisTracker:
    """Per-key level state machine; keys are ``(feature, window)`` within one model."""

    def __init__(self, min_consecutive: int) -> None:
        if min_consecutive < 1:
            raise ValueError(f"min_consecutive must be >= 1, got {min_consecutive}")
        self._min_consecutive = min_consecutive
        self._states: dict[tuple[str, str], _State] = {}

    def level(self, key: tuple[str, str]) -> int:
        """Current level of ``key`` (0 when never seen)."""
        state = self._states.get(key)
        return state.level if state else 0

    def step(self, key: tuple[str, str], enter_level: int, hold_level: int) -> tuple[int, int]:
        """Feed one report; returns ``(previous_level, new_level)``.

        ``enter_level`` is the level under the entry thresholds, ``hold_level`` (>= it) under the
        clear thresholds. The level rises to ``enter_level`` after ``min_consecutive`` reports
        above the current level and falls to ``hold_level`` after as many reports below it.
        """
        state = self._states.setdefault(key, _State())
        previous = state.level
        if enter_level > state.level or hold_level < state.level:
            state.streak += 1
            if state.streak >= self._min_consecutive:
                state.level = enter_level if enter_level > state.level else hold_level
                state.streak = 0
        else:
            state.streak = 0
        return previous, state.level

    def clear(self, key: tuple[str, str]) -> int:
        """Drop ``key``'s state (no data to judge); returns the level it had."""
        state = self._states.pop(key, None)
        return state.level if state else 0

    def reset(self) -> None:
        """Forget every key."""
        self._states.clear()


class AlertDispatcher:
    """Runs the configured actions for a model's reports without blocking the caller.

    Parameters
    ----------
    config : ActionsConfig
        Webhook URL, command, cooldown and timeout.
    model : str
        Model name, used in log lines and payloads.
    clock : callable, optional
        Monotonic clock for the cooldown (tests pass a fake one).
    """

    def __init__(self, config: ActionsConfig, model: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._model = model
        self._clock = clock
        self._last_action: float | None = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=_ACTION_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.actions_sent = 0
        self.actions_failed = 0
        self.actions_dropped = 0

    def dispatch(self, report: DriftReportData) -> bool:
        """Log the report's transitions; queue the actions if one enters alert. True if queued."""
        for t in report.transitions:
            log = logger.warning if t.current == "alert" else logger.info
            log("drift %s: model=%s feature=%s window=%s %s -> %s: %s",
                t.current, t.model, t.feature, t.window, t.previous, t.current, "; ".join(t.reasons))  # fmt: skip
        if not any(t.current == "alert" for t in report.transitions):
            return False
        if self._config.webhook_url is None and self._config.command is None:
            return False
        now = self._clock()
        if self._last_action is not None and now - self._last_action < self._config.cooldown_s:
            logger.info("drift actions for model=%s skipped: cooldown of %ss", self._model, self._config.cooldown_s)
            return False
        payload = build_payload(report)
        self._ensure_worker()
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.actions_dropped += 1
            logger.warning("drift actions for model=%s dropped: %s actions pending", self._model, _ACTION_QUEUE_SIZE)
            return False
        self._last_action = now
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until queued actions have run (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the queued actions; gives up waiting after ``timeout``."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("drift action worker for model=%s still running after %ss", self._model, timeout)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"drift-actions-{self._model}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            try:
                if payload is None:
                    return
                body = json.dumps(payload).encode()
                if self._config.webhook_url is not None:
                    self._post(str(self._config.webhook_url), body)
                if self._config.command is not None:
                    self._run_command(self._config.command, body)
            finally:
                self._queue.task_done()

    def _post(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._config.timeout_s) as response:
                response.read()
            self.actions_sent += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.actions_failed += 1
            logger.warning("drift webhook %s for model=%s failed: %s", url, self._model, exc)

    def _run_command(self, argv: list[str], body: bytes) -> None:
        try:
            done = subprocess.run(argv, input=body, capture_output=True, timeout=self._config.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.actions_failed += 1
            logger.warning("drift command %s for model=%s failed: %s", argv, self._model, exc)
            return
        if done.returncode != 0:
            self.actions_failed += 1
            logger.warning("drift command %s for model=%s exited %s: %s", argv, self._model, done.returncode,
                           done.stderr.decode(errors="replace")[-_STDERR_TAIL_CHARS:])  # fmt: skip
        else:
            self.actions_sent += 1


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def build_payload(report: DriftReportData) -> dict[str, Any]:
    """The JSON document sent to webhooks and commands (strict JSON: NaN becomes null)."""
    alerting = [i for i in report.items if i.status == "alert"]
    return {
        "model": report.model,
        "timestamp": report.timestamp,
        "rows_total": report.rows_total,
        "transitions": [asdict(t) for t in report.transitions],
        "alerting": [{k: _finite_or_none(v) for k, v in asdict(i).items()} for i in alerting],
    }


class DriftMetrics:
    """Prometheus gauges for drift reports, built on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "feature", "window")
        self.psi = Gauge("driftserve_drift_psi", "PSI over coarse bins.", labels, registry=registry)
        self.psi_expected = Gauge(
            "driftserve_drift_psi_expected", "PSI expected with no drift at this window size.", labels, registry=registry
        )
        self.ks_statistic = Gauge("driftserve_drift_ks_statistic", "Binned two-sample KS statistic.", labels, registry=registry)
        self.ks_pvalue = Gauge("driftserve_drift_ks_pvalue", "Asymptotic KS p-value (uncorrected).", labels, registry=registry)
        self.ks_pvalue_corrected = Gauge(
            "driftserve_drift_ks_pvalue_corrected", "KS p-value after multiple-test correction.", labels, registry=registry
        )
        self.window_rows = Gauge("driftserve_drift_window_rows", "Rows in the window.", labels, registry=registry)
        self.missing_share = Gauge("driftserve_drift_missing_share", "Share of missing values in the window.", labels, registry=registry)
        self.alert = Gauge(
            "driftserve_drift_alert", "Alert level: 0 ok, 1 warn, 2 alert, -1 too few rows.", labels, registry=registry
        )
        self.rows = Counter("driftserve_drift_rows_total", "Rows ingested by the drift detector.", ("model",), registry=registry)
        self._published_rows: dict[str, int] = {}
        self._lock = threading.Lock()

    def publish(self, report: DriftReportData) -> None:
        """Set the gauges from one report and advance the rows counter."""
        for item in report.items:
            labels = (report.model, item.feature, item.window)
            self.psi.labels(*labels).set(item.psi)
            self.psi_expected.labels(*labels).set(item.psi_expected)
            self.ks_statistic.labels(*labels).set(item.ks_statistic)
            self.ks_pvalue.labels(*labels).set(item.ks_pvalue)
            self.ks_pvalue_corrected.labels(*labels).set(item.ks_pvalue_corrected)
            self.window_rows.labels(*labels).set(item.window_rows)
            self.missing_share.labels(*labels).set(item.missing_share)
            level = INSUFFICIENT_GAUGE if item.status == "insufficient" else LEVELS[item.status]
            self.alert.labels(*labels).set(level)
        with self._lock:
            delta = report.rows_total - self._published_rows.get(report.model, 0)
            self._published_rows[report.model] = report.rows_total
        if delta > 0:
            self.rows.labels(report.model).inc(delta)
