"""Actions on alerts: log every transition, fire the webhook and the command hook.

A report in which some feature *enters* ``alert`` fires the webhook (POST of a JSON payload) and
the command hook (argv with the same JSON on stdin), at most once per ``cooldown_s`` per model,
from one background thread with a timeout, so that neither a slow endpoint nor a slow command
ever blocks ``update`` or ``report``.
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
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from driftserve.core.drift_config import ActionsConfig
from driftserve.sidecar.drift.detector import DriftReportData

logger = logging.getLogger(__name__)

_ACTION_QUEUE_SIZE = 64
_STDERR_TAIL_CHARS = 500


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
            log(
                "drift %s: model=%s feature=%s window=%s %s -> %s: %s",
                t.current,
                t.model,
                t.feature,
                t.window,
                t.previous,
                t.current,
                "; ".join(t.reasons),
            )
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
            logger.warning(
                "drift command %s for model=%s exited %s: %s",
                argv,
                self._model,
                done.returncode,
                done.stderr.decode(errors="replace")[-_STDERR_TAIL_CHARS:],
            )
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
