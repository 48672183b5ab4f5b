"""Rollouts end to end on a real server under concurrent load: discovery → gate → shadow → canary
steps → promote → rollback; automatic rollback at the breaching step; resume after kill -9."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from driftserve.api import driftserve_pb2 as dpb
from driftserve.api import driftserve_pb2_grpc
from driftserve.core.tensors import decode_raw
from tests.server.rollout_support import BASE_B, BASE_W, linear_model, make_model, ort_outputs, write_version
from tests.server.support import InProcessServer, ServerProcess, wait_until

CLIENTS = 16


class Clients:
    """``CLIENTS`` threads sending Predict with random rows (every other one with a request id)."""

    def __init__(self, address: str, x: np.ndarray) -> None:
        self.x = x
        self.stop = threading.Event()
        self.results: list[tuple[int, str, dict[str, np.ndarray]]] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(address, i)) for i in range(CLIENTS)]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, address: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with grpc.insecure_channel(address) as channel:
            stub = driftserve_pb2_grpc.PredictorStub(channel)
            while not self.stop.is_set():
                row = int(rng.integers(len(self.x)))
                x = self.x[row : row + 1]
                tensor = dpb.Tensor(name="input", datatype="FP32", shape=x.shape, data=x.tobytes())
                request_id = uuid.uuid4().hex if row % 2 else ""
                try:
                    reply = stub.Predict(
                        dpb.PredictRequest(model="m", request_id=request_id, inputs=[tensor]), timeout=60
                    )
                except grpc.RpcError as exc:
                    with self._lock:
                        self.failures.append(f"{exc.code()}: {exc.details()}")
                    continue
                outputs = {t.name: decode_raw(t.datatype, t.shape, t.data, t.name) for t in reply.outputs}
                with self._lock:
                    self.results.append((row, reply.version, outputs))

    def count(self) -> int:
        with self._lock:
            return len(self.results)


def _status(address: str) -> dpb.RolloutStatus:
    with grpc.insecure_channel(address) as channel:
        return driftserve_pb2_grpc.ModelsStub(channel).Status(dpb.ModelRef(model="m"), timeout=30)


def test_full_rollout_under_16_clients_then_rollback(tmp_path: Path) -> None:
    rollout = (
        "{shadow: {requests: 30}, steps: [20, 50, 100], step_duration_s: 0.5, step_requests: 30, "
        "analysis_interval_s: 0.2, min_samples: 50, compare_share: 1.0, keep_previous_s: 600, "
        "thresholds: {max_p99_ratio: 50, min_agreement: 0.8, max_output_psi: 2.0, max_error_rate: 0.0}}"
    )
    x = make_model(tmp_path / "m", rollout)
    versions = {
        "1": linear_model(BASE_W, BASE_B),
        "2": linear_model(BASE_W * 1.3, BASE_B + np.array([0.3, -0.3], np.float32)),
    }
    oracle = {v: ort_outputs(data, x) for v, data in versions.items()}
    with (
        InProcessServer(tmp_path, load_models=["m"], poll_interval_s=0.2) as server,
        Clients(server.address, x) as clients,
    ):
        wait_until(lambda: clients.count() > 200, 60)
        write_version(tmp_path / "m", 2, versions["2"])
        seen_stages: set[str] = set()

        def reached_primary() -> bool:
            status = _status(server.address)
            seen_stages.add(status.stage + (f"{status.step}" if status.stage == "canary" else ""))
            return status.stage == "primary"

        wait_until(reached_primary, 120, interval_s=0.02)
        assert {"shadow", "canary0", "canary1", "canary2"} <= seen_stages, seen_stages
        served_before = clients.count()
        wait_until(lambda: clients.count() > served_before + 200, 60)
        with grpc.insecure_channel(server.address) as channel:
            reply = driftserve_pb2_grpc.ModelsStub(channel).Rollback(dpb.ModelRef(model="m"), timeout=60)
        assert "version 1 serves again" in reply.message
        served_after = clients.count()
        wait_until(lambda: clients.count() > served_after + 200, 60)
    assert clients.failures == []
    by_version = {"1": 0, "2": 0}
    for row, version, outputs in clients.results:
        matches = [
            v
            for v, expected in oracle.items()
            if np.array_equal(outputs["label"], expected["label"][row : row + 1])
            and np.allclose(outputs["probabilities"], expected["probabilities"][row : row + 1], rtol=1e-5, atol=1e-6)
        ]
        assert matches == [version], (row, version, matches)
        by_version[version] += 1
    assert by_version["1"] > 0 and by_version["2"] > 0
    # After the rollback only version 1 answers.
    assert {version for _, version, _ in clients.results[served_after + 50 :]} == {"1"}
    status = _status_after(tmp_path)
    assert status["stage"] == "rolled_back" and status["primary"] == 1 and "2" in status["rejected"]


def _status_after(repository: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repository / ".driftserve" / "rollouts" / "m.json").read_text())
    return data


def _auto_rollback(tmp_path: Path, candidate: bytes, check: str) -> None:
    rollout = (
        "{steps: [50, 100], step_duration_s: 600, analysis_interval_s: 0.3, min_samples: 40, compare_share: 1.0, "
        "thresholds: {max_p99_ratio: 4, min_agreement: 0.9, max_output_psi: 5.0}}"
    )
    x = make_model(tmp_path / "m", rollout)
    with (
        InProcessServer(tmp_path, load_models=["m"], poll_interval_s=0.2) as server,
        Clients(server.address, x) as clients,
    ):
        wait_until(lambda: clients.count() > 100, 60)
        write_version(tmp_path / "m", 2, candidate)
        wait_until(lambda: _status(server.address).stage == "rolled_back", 120, interval_s=0.05)
        status = _status(server.address)
        assert status.reason.startswith("canary step 1 (50%)"), status.reason
        assert check in status.reason
        assert server.metric("driftserve_rollout_rollbacks_total", model="m", reason=check) == 1
        assert server.metric("driftserve_rollout_canary_weight_ratio", model="m") == 0
        served = clients.count()
        # Requests already on version 2 when it was rolled back finish there (at most one per client,
        # and a slow candidate's batch can take longer than a hundred of version 1's requests); every
        # later one is answered by version 1.
        wait_until(lambda: clients.count() > served + 100, 60)
        wait_until(lambda: {v for _, v, _ in clients.results[-50:]} == {"1"}, 60)
        assert [v for _, v, _ in clients.results[served:]].count("2") <= CLIENTS
    assert clients.failures == []


def test_a_slower_candidate_is_rolled_back_at_its_first_step(tmp_path: Path) -> None:
    _auto_rollback(tmp_path, linear_model(BASE_W, BASE_B, heavy_layers=24), "p99_ratio")


def test_a_disagreeing_candidate_is_rolled_back_at_its_first_step(tmp_path: Path) -> None:
    # Accurate enough for the gate's min 0.8 (the holdout is labelled by BASE_W) only when the
    # gate is off: this one checks the live analysis, so its gate has no validation.
    rollout_only = tmp_path / "repo"
    rollout_only.mkdir()
    _auto_rollback_without_gate(rollout_only)


def _auto_rollback_without_gate(tmp_path: Path) -> None:
    rollout = (
        "{steps: [50, 100], step_duration_s: 600, analysis_interval_s: 0.3, min_samples: 40, compare_share: 1.0, "
        "thresholds: {max_p99_ratio: 1000, min_agreement: 0.9, max_output_psi: 100}}"
    )
    x = make_model(tmp_path / "m", rollout)
    text = (tmp_path / "m" / "config.yaml").read_text()
    (tmp_path / "m" / "config.yaml").write_text(
        "\n".join(line for line in text.splitlines() if "validation" not in line) + "\n"
    )
    with (
        InProcessServer(tmp_path, load_models=["m"], poll_interval_s=0.2) as server,
        Clients(server.address, x) as clients,
    ):
        wait_until(lambda: clients.count() > 100, 60)
        write_version(tmp_path / "m", 2, linear_model(-BASE_W, BASE_B))
        wait_until(lambda: _status(server.address).stage == "rolled_back", 120, interval_s=0.05)
        status = _status(server.address)
        assert status.reason.startswith("canary step 1 (50%)") and "agreement" in status.reason, status.reason
        assert server.metric("driftserve_rollout_rollbacks_total", model="m", reason="agreement") == 1
    assert clients.failures == []


def test_kill_9_mid_rollout_resumes_at_the_persisted_step(tmp_path: Path) -> None:
    rollout = (
        "{steps: [10, 30, 100], step_duration_s: 2, analysis_interval_s: 0.2, min_samples: 100000, "
        "keep_previous_s: 600}"
    )
    x = make_model(tmp_path / "m", rollout)
    state_file = tmp_path / ".driftserve" / "rollouts" / "m.json"
    with ServerProcess(tmp_path, "--poll-interval-s", "0.2") as first:
        write_version(tmp_path / "m", 2, linear_model(BASE_W * 1.2, BASE_B))
        wait_until(lambda: state_file.is_file() and json.loads(state_file.read_text())["step"] >= 1, 120)
        first.process.kill()  # SIGKILL: no shutdown code runs
        first.process.wait(30)
    persisted = json.loads(state_file.read_text())
    assert persisted["stage"] == "canary" and persisted["step"] >= 1
    with ServerProcess(tmp_path, "--poll-interval-s", "0.2") as second, Clients(second.address, x) as clients:
        status = _status(second.address)
        assert status.stage == "canary" and status.step >= persisted["step"], status
        wait_until(lambda: clients.count() > 50, 60)
        versions = {v for _, v, _ in clients.results}
        assert versions <= {"1", "2"} and "1" in versions
        wait_until(lambda: _status(second.address).stage == "primary", 120)
        served = clients.count()
        wait_until(lambda: clients.count() > served + 50, 60)
        assert {v for _, v, _ in clients.results[served + 10 :]} == {"2"}
    assert clients.failures == []
