"""The real server mirroring to the real sidecar, both as subprocesses: drift seen end to end.

One repository with three copies of the breast-cancer logistic regression: ``cancer`` (with a
shadow version) receives reference traffic, ``drifting`` a shifted feature, ``imputed`` (whose
preprocessing replaces NaN by the training median, so NaN is a legal input the server accepts)
a NaN-heavy feature. Last, the sidecar is killed mid-stream and restarted on the same address.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.ports import free_port
from driftserve.core.tensors import encode_raw
from tests.server.support import ServerProcess
from tests.sidecar.support import (
    SidecarProcess,
    build_repository,
    imputing_preprocessing,
    reference_rows,
    training_data,
    wait_for,
)

pytestmark = pytest.mark.slow

REQUEST_ROWS = 64
REFERENCE_ROWS = 100_032  # 1563 requests of 64 rows
SHIFT_ROWS = 4_992  # 78 requests: the alert must come within 5,000 rows
SHIFTED = "mean_concavity"
NAN_FEATURE = "worst_area"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e") / "models"
    build_repository(root, model="cancer")
    build_repository(root, model="drifting", shadow=False)
    build_repository(root, model="imputed", shadow=False, extra_config={"preprocessing": imputing_preprocessing()})
    return root


@pytest.fixture(scope="module")
def stack(repository: Path) -> Iterator[tuple[ServerProcess, dict[str, SidecarProcess], str]]:
    """Sidecar first, then the server mirroring to it; the sidecar entry may be replaced by a test."""
    address = f"127.0.0.1:{free_port()}"
    sidecars = {"current": SidecarProcess(repository, "--report-interval-s", "0.2", listen=address)}
    try:
        server = ServerProcess(repository, "--mirror-address", address)
    except BaseException:
        sidecars["current"].kill()
        raise
    try:
        with server:
            yield server, sidecars, address
            assert server.terminate() == 0
    finally:
        sidecars["current"].kill()


def _request(model: str, rows: np.ndarray) -> driftserve_pb2.PredictRequest:
    x = np.ascontiguousarray(rows, dtype=np.float32)
    return driftserve_pb2.PredictRequest(
        model=model,
        inputs=[driftserve_pb2.Tensor(name="input", datatype="FP32", shape=list(x.shape), data=encode_raw(x))],
    )


def _stream(server: ServerProcess, model: str, rows: np.ndarray) -> int:
    """Send ``rows`` in requests of 64 on one PredictStream; returns the number of failed requests."""
    requests = [_request(model, rows[i : i + REQUEST_ROWS]) for i in range(0, rows.shape[0], REQUEST_ROWS)]
    with server.channel() as channel:
        replies = list(server.native(channel).PredictStream(iter(requests), timeout=120))
    assert len(replies) == len(requests)
    return sum(1 for r in replies if r.error_code != 0)


def _report(address: str, model: str) -> driftserve_pb2.DriftReport:
    with grpc.insecure_channel(address) as channel:
        request = driftserve_pb2.DriftReportRequest(model=model, window="sliding")
        return driftserve_pb2_grpc.MonitorStub(channel).GetDriftReport(request, timeout=10)


def _wait_rows(address: str, model: str, rows: int) -> driftserve_pb2.DriftReport:
    """Wait until the sidecar has ingested ``rows`` rows of ``model`` and re-evaluated after that."""
    wait_for(lambda: _report(address, model).rows_seen >= rows, 30.0, f"{rows} mirrored rows of {model}")
    time.sleep(0.5)  # > 2 evaluation periods of 0.2 s, so the hysteresis has seen the data
    return _report(address, model)


def _input_status(report: driftserve_pb2.DriftReport) -> dict[str, str]:
    return {f.feature: f.status for f in report.features if f.kind == "input"}


def test_reference_stream_raises_no_alert(stack) -> None:
    server, sidecars, address = stack
    assert _stream(server, "cancer", reference_rows(np.random.default_rng(21), REFERENCE_ROWS)) == 0
    report = _wait_rows(address, "cancer", REFERENCE_ROWS)
    assert report.rows_seen == REFERENCE_ROWS
    assert set(_input_status(report).values()) == {"ok"}
    assert not [line for line in sidecars["current"].lines if "drift alert" in line or "-> alert" in line]
    assert report.shadow.rows == REFERENCE_ROWS and report.shadow.errors == 0
    assert report.shadow.agreement > 0.9 and report.shadow.primary_latency_p50_s > 0


def test_shifted_feature_alerts_within_5000_rows(stack) -> None:
    server, _, address = stack
    x, _, names = training_data()
    rows = reference_rows(np.random.default_rng(22), SHIFT_ROWS)
    rows[:, names.index(SHIFTED)] += 0.5 * x[:, names.index(SHIFTED)].std()
    assert _stream(server, "drifting", rows) == 0
    report = _wait_rows(address, "drifting", SHIFT_ROWS)
    status = _input_status(report)
    assert {n for n, s in status.items() if s != "ok"} == {SHIFTED}, status
    assert status[SHIFTED] == "alert"


def test_nan_heavy_feature_raises_missing_share_alert(stack) -> None:
    server, _, address = stack
    _, _, names = training_data()
    rows = reference_rows(np.random.default_rng(23), SHIFT_ROWS)
    rows[::3, names.index(NAN_FEATURE)] = np.nan
    assert _stream(server, "imputed", rows) == 0  # imputing preprocessing: NaN is legal input
    report = _wait_rows(address, "imputed", SHIFT_ROWS)
    status = _input_status(report)
    assert {n for n, s in status.items() if s != "ok"} == {NAN_FEATURE}, status
    item = next(f for f in report.features if f.feature == NAN_FEATURE)
    assert item.status == "alert" and item.missing_share == pytest.approx(1 / 3, abs=0.01)
    assert any("missing share" in reason for reason in item.reasons)


def test_killing_the_sidecar_fails_no_request_and_drift_resumes_after_restart(stack, repository: Path) -> None:
    server, sidecars, address = stack
    rows = reference_rows(np.random.default_rng(24), 4096)
    outcome = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def client() -> None:
        with server.channel() as channel:
            stub = server.native(channel)
            i = 0
            while not stop.is_set():
                start = (i * REQUEST_ROWS) % rows.shape[0]
                try:
                    stub.Predict(_request("drifting", rows[start : start + REQUEST_ROWS]), timeout=10)
                    outcome["ok"] += 1
                except grpc.RpcError:
                    outcome["failed"] += 1
                i += 1

    before = _report(address, "drifting").rows_seen
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        wait_for(lambda: _report(address, "drifting").rows_seen > before, 20.0, "mirrored rows before the kill")
        sidecars["current"].kill()
        served_while_down = outcome["ok"]
        wait_for(lambda: outcome["ok"] > served_while_down + 50, 30.0, "requests served while the sidecar is down")
        sidecars["current"] = SidecarProcess(repository, "--report-interval-s", "0.2", listen=address)
        # A fresh sidecar starts from empty windows; rows arriving again show the mirror reconnected.
        wait_for(lambda: _report(address, "drifting").rows_seen > 1_000, 30.0, "mirrored rows after the restart")
    finally:
        stop.set()
        thread.join(30)
    assert outcome["failed"] == 0 and outcome["ok"] > 100
