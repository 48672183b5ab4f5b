"""Shared helpers of the sidecar tests: a small model repository and mirrored-batch builders."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml
from prometheus_client import CollectorRegistry
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.processes import start_child
from driftserve.core.tensors import encode_raw, v2_datatype
from driftserve.sidecar.app import create_sidecar
from driftserve.sidecar.drift.profile import ReferenceProfile, build_profile, profile_outputs
from driftserve.sidecar.settings import SidecarSettings

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
MODEL = "cancer"
N_FEATURES = 30
PROFILE_PATH = "drift/profile.json"


def training_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The breast-cancer rows (float32), labels and feature names, as the example repository uses."""
    data = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in data.feature_names]
    return np.asarray(data.data, dtype=np.float32), np.asarray(data.target, dtype=np.int64), names


def _export(pipeline: Pipeline) -> bytes:
    clf = pipeline.steps[-1][1]
    onx = to_onnx(
        pipeline,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        final_types=[("label", Int64TensorType([None])), ("probabilities", FloatTensorType([None, 2]))],
        target_opset={"": 17, "ai.onnx.ml": 1},
        options={id(clf): {"zipmap": False}},
    )
    return onx.SerializeToString()


def build_repository(
    root: Path, drift: dict | None = None, shadow: bool = True, model: str = MODEL, extra_config: dict | None = None
) -> Path:
    """``root/<model>`` with v1 (C=1) and v2 (C=0.01) logistic regressions, a profile and a config."""
    x, y, names = training_data()
    model_dir = root / model
    for version, c in ((1, 1.0), (2, 0.01)):
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(x, y)
        (model_dir / str(version)).mkdir(parents=True)
        (model_dir / str(version) / "model.onnx").write_bytes(_export(pipeline))
    profile = build_profile(x, names)
    profile = ReferenceProfile(profile.features, profile_outputs(model_dir / "1" / "model.onnx", x))
    profile.save(model_dir / PROFILE_PATH)
    drift_section = {
        "reference": PROFILE_PATH,
        "min_window_rows": 500,
        "window": {"pane_seconds": 5.0, "panes": 60},
        "hysteresis": {"min_consecutive": 1},
    }
    drift_section.update(drift or {})
    config = {
        "max_batch_size": 64,
        "version_policy": {"all": {}},
        "batching": {"enabled": True, "max_queue_delay_us": 100},
        "deployment": {"served_version": 1, **({"shadow_version": 2} if shadow else {})},
        "drift": drift_section,
        **(extra_config or {}),
    }
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def imputing_preprocessing() -> dict:
    """A preprocessing section that replaces NaN by the training median, so NaN is legal input."""
    x, _, names = training_data()
    medians = np.nanmedian(x.astype(np.float64), axis=0)
    return {
        "backend": "numba",
        "input": {"name": "input", "datatype": "FP32", "features": names},
        "steps": [
            {"feature": n, "ops": [{"impute": {"strategy": "constant", "value": float(m)}}]}
            for n, m in zip(names, medians)
        ],
    }


def tensor(name: str, array: np.ndarray) -> driftserve_pb2.Tensor:
    """A wire tensor with raw little-endian bytes."""
    return driftserve_pb2.Tensor(
        name=name, datatype=v2_datatype(array), shape=list(array.shape), data=encode_raw(array)
    )


def mirror_batch(
    x: np.ndarray,
    outputs: dict[str, np.ndarray] | None = None,
    model: str = MODEL,
    version: str = "1",
    request_rows: int = 16,
) -> driftserve_pb2.MirrorBatch:
    """A MirrorBatch of rows ``x`` split into requests of ``request_rows`` rows."""
    rows = x.shape[0]
    sizes = [min(request_rows, rows - i) for i in range(0, rows, request_rows)]
    return driftserve_pb2.MirrorBatch(
        model=model,
        version=version,
        rows=rows,
        inputs=[tensor("input", x)],
        outputs=[tensor(n, a) for n, a in (outputs or {}).items()],
        request_ids=[f"r{i}" for i in range(len(sizes))],
        request_rows=sizes,
        arrival_unix_s=[time.time()] * len(sizes),
        latency_s=[0.001] * len(sizes),
        sender="test:1",
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class InProcessSidecar:
    """``create_sidecar`` on free ports, its event loop in a background thread, for sync tests."""

    def __init__(self, repository: Path, **overrides: object) -> None:
        self.registry = CollectorRegistry()
        fields: dict[str, object] = {"listen": "127.0.0.1:0", "http_port": 0, "report_interval_s": 0.1}
        fields.update(overrides)
        self.settings = SidecarSettings(model_repository=repository, **fields)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-sidecar-loop", daemon=True)
        self._thread.start()
        try:
            self.running = self._call(create_sidecar(self.settings, self.registry))
        except BaseException:
            self._stop_loop()
            raise
        self.channel = grpc.insecure_channel(self.running.address)

    def _call(self, coro: Any, timeout_s: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def publish(self, batches: list[driftserve_pb2.MirrorBatch]) -> driftserve_pb2.PublishSummary:
        """Stream ``batches`` on one Publish call and wait until the sidecar has ingested them."""
        summary = driftserve_pb2_grpc.MirrorStub(self.channel).Publish(iter(batches), timeout=60)
        assert self.running.state.wait_idle(30.0), "sidecar did not drain its ingest queues"
        return summary

    def report(self, model: str = MODEL, window: str = "") -> driftserve_pb2.DriftReport:
        """The Monitor report, after forcing a fresh evaluation."""
        self.running.state.report(model, max_age_s=0.0)
        request = driftserve_pb2.DriftReportRequest(model=model, window=window)
        return driftserve_pb2_grpc.MonitorStub(self.channel).GetDriftReport(request, timeout=30)

    def http(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the sidecar's HTTP port: (status, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.running.http_port}{path}", timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample of the sidecar's registry."""
        return self.registry.get_sample_value(name, labels)

    def close(self) -> None:
        """Stop the sidecar and its loop."""
        self.channel.close()
        try:
            self._call(self.running.stop(0.5))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> InProcessSidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reference_rows(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Rows resampled from the training data: the reference distribution itself."""
    x, _, _ = training_data()
    return np.ascontiguousarray(x[rng.integers(0, x.shape[0], rows)])


def batches_from(rows: np.ndarray, session: Any, per_batch: int = 256) -> list[driftserve_pb2.MirrorBatch]:
    """MirrorBatches of ``rows`` with the primary's outputs computed by ``session`` (ORT)."""
    out = []
    for start in range(0, rows.shape[0], per_batch):
        x = np.ascontiguousarray(rows[start : start + per_batch])
        label, probabilities = session.run(["label", "probabilities"], {"input": x})
        out.append(mirror_batch(x, {"label": label, "probabilities": probabilities}))
    return out


class SidecarProcess:
    """``driftserve sidecar`` on free ports; the ready line gives the ports."""

    def __init__(self, repository: Path, *extra: str, listen: str = "127.0.0.1:0") -> None:
        argv = ["sidecar", "--model-repository", str(repository), "--listen", listen, "--http-port", "0", *extra]
        self.child = start_child("sidecar", argv, cwd=ROOT, output="keep")
        self.process = self.child.process
        self.lines = self.child.lines
        if not self.child.wait_ready(START_TIMEOUT_S):
            self.child.kill()
            raise RuntimeError("sidecar did not start:\n" + self.child.output())
        self.announced = self.child.announced
        self.address = self.announced["address"]
        self.http_port = int(self.announced["http_port"])

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        code = self.child.terminate(timeout_s)
        self.child.kill()  # reaps and joins the reader
        return code

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        self.child.kill()
