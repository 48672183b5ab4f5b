"""Test support: the real server in-process or as a subprocess, small ONNX models, metrics.

:class:`InProcessServer` runs ``create_server`` on port 0 (gRPC, REST and metrics) with its event
loop (uvloop, as in production) on a background thread: what every test that talks gRPC or REST
to the server uses.
:class:`ServerProcess` starts ``driftserve serve`` as a subprocess, for what only a process shows:
signals, exit codes, logs, ``--workers``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import uvloop
from onnx import TensorProto, helper
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from driftserve.api import driftserve_pb2_grpc, grpc_service_pb2_grpc
from driftserve.api import grpc_service_pb2 as pb
from driftserve.core.processes import start_child
from driftserve.server.app import create_server
from driftserve.server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0


class ServerClient:
    """What a test does with a running server, wherever it runs: stubs, REST and metrics."""

    address: str
    metrics_port: int
    http_port: int

    @property
    def http_url(self) -> str:
        """Base URL of the REST port (``/v2/...`` follows)."""
        return f"http://127.0.0.1:{self.http_port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def v2(self, channel: grpc.Channel | None = None) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel or self.channel())

    def native(self, channel: grpc.Channel | None = None) -> driftserve_pb2_grpc.PredictorStub:
        return driftserve_pb2_grpc.PredictorStub(channel or self.channel())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the metrics endpoint keyed by (name, sorted labels)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            value
            for (n, lbls), value in self.metrics().items()
            if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())
        )


class InProcessServer(ServerClient):
    """``create_server`` on free ports in this process; ``overrides`` are ServerSettings fields."""

    def __init__(self, repository: Path, **overrides: Any) -> None:
        fields: dict[str, Any] = {"host": "127.0.0.1", "grpc_port": 0, "http_port": 0, "metrics_port": 0, **overrides}
        self.settings = ServerSettings(model_repository=repository, **fields)
        self.registry = CollectorRegistry()
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-server-loop", daemon=True)
        self._thread.start()
        try:
            self.running = self._call(create_server(self.settings, self.registry))
        except BaseException:
            self._stop_loop()
            raise
        self.port = self.running.port
        self.metrics_port = self.running.metrics_port
        self.http_port = self.running.http_port
        self.address = f"127.0.0.1:{self.port}"

    def _call(self, coro: Any, timeout_s: float = START_TIMEOUT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def terminate(self, timeout_s: float = 30.0) -> None:
        """The graceful stop that SIGTERM triggers in a process (NOT_SERVING, drain, release)."""
        if self._loop.is_closed():
            return
        try:
            self._call(self.running.stop(self.settings.grace_period_s), timeout_s)
        finally:
            self._stop_loop()

    def __enter__(self) -> InProcessServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.terminate()


class ServerProcess(ServerClient):
    """``driftserve serve`` (or ``run``) on free ports; the ready line gives the ports."""

    def __init__(
        self, repository: Path, *extra: str, env: dict[str, str] | None = None, command: str = "serve"
    ) -> None:
        argv = [
            command,
            "--model-repository",
            str(repository),
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--metrics-port",
            "0",
            *extra,
        ]
        self.child = start_child("server", argv, env, cwd=ROOT, output="keep")
        self.process = self.child.process
        if not self.child.wait_ready(START_TIMEOUT_S):
            self.child.kill()
            raise RuntimeError("server did not start:\n" + self.child.output())
        self.announced = self.child.announced
        self.lines = self.child.lines
        self.port = int(self.announced["grpc_port"])
        self.metrics_port = int(self.announced["metrics_port"])
        self.http_port = int(self.announced["http_port"])
        self.address = f"127.0.0.1:{self.port}"

    def terminate(self, timeout_s: float = 30.0) -> int:
        return self.child.terminate(timeout_s)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.child.kill()


def wait_until(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def v2_request(
    model: str, x: np.ndarray, name: str = "input", datatype: str = "FP32", **kw: Any
) -> pb.ModelInferRequest:
    """A raw-input ModelInferRequest with one input tensor."""
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=x.shape)],
        raw_input_contents=[x.tobytes()],
        **kw,
    )


def copy_model(
    src_repo: Path, dst_repo: Path, name: str, config: str | None = None, new_name: str | None = None
) -> Path:
    """Copy one model of a repository, optionally replacing its config.yaml."""
    dst = dst_repo / (new_name or name)
    shutil.copytree(src_repo / name, dst)
    if config is not None:
        (dst / "config.yaml").write_text(config)
    return dst


def write_gather_model(model_dir: Path, config: str) -> None:
    """A model that fails at run time for out-of-range indices: Gather(table, idx).

    ``idx`` is INT64 [N, 1]; the output is ``table[idx]`` (FP32 [N, 1, 1]). Index 100 makes ONNX
    Runtime raise, which is how tests provoke an execution error inside one batch.
    """
    table = helper.make_tensor("table", TensorProto.FLOAT, [10, 1], [float(i) for i in range(10)])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["value"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1, 1])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.yaml").write_text(config)


def write_identity_model(model_dir: Path, datatype: int, config: str, dims: list[Any] | None = None) -> None:
    """Identity over one tensor of the given ONNX element type (for datatype round trips)."""
    shape = dims or ["N", 3]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", datatype, shape)],
        [helper.make_tensor_value_info("y", datatype, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.yaml").write_text(config)


def thread_cpus(pid: int) -> dict[int, tuple[str, set[int]]]:
    """Each thread of ``pid`` by id: its native name and the CPUs it may run on (/proc/<pid>/task)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text().splitlines()
        except OSError:  # the thread ended meanwhile
            continue
        for line in status:
            if line.startswith("Cpus_allowed_list:"):
                cpus: set[int] = set()
                for part in line.split(":", 1)[1].strip().split(","):
                    low, _, high = part.partition("-")
                    cpus.update(range(int(low), int(high or low) + 1))
                threads[int(task.name)] = (name, cpus)
    return threads
