"""Three real sidecar processes and a real ``driftserve drift fleet`` process: a replica killed mid-run.

The aggregator keeps reporting from the others while the killed replica is stale (its last state
still merged), and merges the restarted sidecar again (a new instance) once it answers on the same
address.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from driftserve.api import driftserve_pb2_grpc
from driftserve.core.ports import free_port
from tests.sidecar.fleet_support import FleetProcess
from tests.sidecar.support import MODEL, SidecarProcess, batches_from, build_repository, reference_rows, wait_for

pytestmark = pytest.mark.slow

ROWS = 300
WAIT_S = 60.0


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("fleet-e2e") / "models", shadow=False)


@pytest.fixture(scope="module")
def session(repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture
def replicas(repository: Path) -> Iterator[list[SidecarProcess]]:
    started: list[SidecarProcess] = []
    try:
        for _ in range(3):
            started.append(SidecarProcess(repository, listen=f"127.0.0.1:{free_port()}"))
        yield started
    finally:
        for sidecar in started:
            sidecar.kill()


def _publish(sidecar: SidecarProcess, session: ort.InferenceSession, rows: int, seed: int) -> None:
    batches = batches_from(reference_rows(np.random.default_rng(seed), rows), session)
    with grpc.insecure_channel(sidecar.address) as channel:
        summary = driftserve_pb2_grpc.MirrorStub(channel).Publish(iter(batches), timeout=60)
    assert summary.rows == rows


def _replicas(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["address"]: r for r in doc["fleet"]["replicas"]}


@pytest.mark.timeout(600)  # four processes started, one restarted: ~20 s normally; generous for a loaded box
def test_killed_replica_goes_stale_and_comes_back(
    repository: Path, replicas: list[SidecarProcess], session: ort.InferenceSession
) -> None:
    addresses = [s.address for s in replicas]
    fleet = FleetProcess(
        repository, addresses, "--pull-interval-s", "0.3", "--report-interval-s", "0.2", "--pull-timeout-s", "2"
    )
    try:
        report = lambda: fleet.http_json(f"/api/drift/{MODEL}")  # noqa: E731
        for i, sidecar in enumerate(replicas):
            _publish(sidecar, session, ROWS, seed=i)
        wait_for(lambda: report()["rows_seen"] == 3 * ROWS, WAIT_S, "the fleet to merge three replicas")
        doc = report()
        assert [r["status"] for r in doc["fleet"]["replicas"]] == ["contributing"] * 3
        killed = addresses[2]
        first_instance = _replicas(doc)[killed]["instance_id"]

        replicas[2].kill()
        for i, sidecar in enumerate(replicas[:2]):
            _publish(sidecar, session, ROWS, seed=10 + i)
        # The others keep being reported; the dead one is stale and its last 300 rows stay merged.
        wait_for(
            lambda: report()["rows_seen"] == 5 * ROWS and _replicas(report())[killed]["status"] == "stale",
            WAIT_S,
            "the fleet to report the live replicas with the killed one stale",
        )
        before = report()["generated_unix_s"]
        time.sleep(0.5)
        doc = report()
        assert doc["generated_unix_s"] > before, "reports must keep coming while a replica is down"
        stale = _replicas(doc)[killed]
        assert stale["error"].startswith("UNAVAILABLE") and stale["rows"] == ROWS
        assert doc["fleet"]["contributing"] == 2 and doc["fleet"]["stale"] == 1

        replicas[2] = SidecarProcess(repository, listen=killed)
        _publish(replicas[2], session, 100, seed=20)
        wait_for(
            lambda: _replicas(report())[killed]["status"] == "contributing" and report()["rows_seen"] == 4 * ROWS + 100,
            WAIT_S,
            "the fleet to merge the restarted replica",
        )
        back = _replicas(report())[killed]
        assert back["instance_id"] != first_instance and back["rows"] == 100
        assert fleet.terminate() == 0
    finally:
        fleet.child.kill()
