"""Helpers of the fleet tests: an aggregator in-process or as a process, and comparisons of reports."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.processes import start_child
from driftserve.sidecar.fleet.app import create_fleet
from driftserve.sidecar.fleet.settings import FleetSettings
from driftserve.sidecar.state import ModelReport
from tests.sidecar.support import MODEL, ROOT, START_TIMEOUT_S


class InProcessFleet:
    """``create_fleet`` on free ports, its loop in a background thread; pulls are driven by the test."""

    def __init__(self, repository: Path, replicas: list[str], **overrides: object) -> None:
        self.registry = CollectorRegistry()
        # A long pull interval: the tests pull explicitly with pull(), so rounds are deterministic.
        fields: dict[str, object] = {
            "listen": "127.0.0.1:0",
            "http_port": 0,
            "report_interval_s": 3600,
            "pull_interval_s": 3600,
            "pull_timeout_s": 5,
        }
        fields.update(overrides)
        self.settings = FleetSettings(model_repository=repository, replicas=",".join(replicas), **fields)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-fleet-loop", daemon=True)
        self._thread.start()
        try:
            self.running = self._call(create_fleet(self.settings, self.registry))
        except BaseException:
            self._stop_loop()
            raise
        self.channel = grpc.insecure_channel(self.running.address)

    def _call(self, coro: Any, timeout_s: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def pull(self) -> None:
        """One pull round of every replica."""
        self._call(self.running.state.pull_once())

    def report(self, model: str = MODEL) -> ModelReport:
        """A fresh fleet evaluation (one hysteresis step)."""
        report: ModelReport = self.running.state.report(model, max_age_s=0.0)
        return report

    def grpc_report(self, model: str = MODEL) -> driftserve_pb2.DriftReport:
        """The latest report through the aggregator's Monitor service."""
        request = driftserve_pb2.DriftReportRequest(model=model)
        return driftserve_pb2_grpc.MonitorStub(self.channel).GetDriftReport(request, timeout=30)

    def http_json(self, path: str) -> Any:
        """GET ``path`` on the aggregator's HTTP port as JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.running.http_port}{path}", timeout=30) as response:
            return json.loads(response.read())

    def close(self) -> None:
        """Stop the aggregator and its loop."""
        self.channel.close()
        try:
            self._call(self.running.stop(0.5))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> InProcessFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FleetProcess:
    """``driftserve drift fleet`` as a child process; the ready line gives the ports."""

    def __init__(self, repository: Path, replicas: list[str], *extra: str) -> None:
        argv = [
            "drift",
            "fleet",
            "--model-repository",
            str(repository),
            "--replicas",
            ",".join(replicas),
            "--listen",
            "127.0.0.1:0",
            "--http-port",
            "0",
            *extra,
        ]
        self.child = start_child("fleet", argv, cwd=ROOT, output="keep")
        if not self.child.wait_ready(START_TIMEOUT_S):
            self.child.kill()
            raise RuntimeError("fleet aggregator did not start:\n" + self.child.output())
        self.address = self.child.announced["address"]
        self.http_port = int(self.child.announced["http_port"])

    def http_json(self, path: str) -> Any:
        """GET ``path`` on the aggregator's HTTP port as JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as response:
            return json.loads(response.read())

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        code = self.child.terminate(timeout_s)
        self.child.kill()
        return code


def items_by_key(items: Any) -> dict[tuple[str, str], Any]:
    """Report items (dataclasses or FeatureDrift messages) by (feature, window)."""
    return {(i.feature, i.window): i for i in items}


def alert_set(items: Any) -> set[tuple[str, str]]:
    """(feature, window) of every item in alert."""
    return {(i.feature, i.window) for i in items if i.status == "alert"}
