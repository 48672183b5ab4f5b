"""The naive baseline server and a tiny linear model, for the load generator's and the benchmark scripts' tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from driftserve.core.processes import start_process

N_FEATURES = 30
ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0


def write_linear_model(path: Path, seed: int = 0) -> None:
    """MatMul+Add 30→2 with the example models' I/O: input FP32 [-1,30] → probabilities."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((N_FEATURES, 2)).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits"]),
            helper.make_node("Add", ["logits", "B"], ["probabilities"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    write_linear_model(root / "linear" / "1" / "model.onnx")
    return root


class NaiveServer:
    """A running `python -m benchmarks.naive_server`; `target` is its loopback address."""

    def __init__(self, repository: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "benchmarks.naive_server", "--model-repository", str(repository)]
        self.child = start_process("naive", [*command, "--port", "0", *extra], cwd=ROOT, output="keep")
        if not self.child.wait_ready(START_TIMEOUT_S):
            self.child.kill()
            raise RuntimeError(f"naive server did not start:\n{self.child.output()}")
        self.port = int(self.child.announced["grpc_port"])
        self.target = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):  # terminate() killed it then
            self.child.terminate(10.0)


@pytest.fixture
def start_naive_server(model_repository: Path) -> Iterator:
    servers: list[NaiveServer] = []

    def start(*extra: str) -> NaiveServer:
        server = NaiveServer(model_repository, *extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def naive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NaiveServer]:
    root = tmp_path_factory.mktemp("repo_module")
    write_linear_model(root / "linear" / "1" / "model.onnx")
    server = NaiveServer(root, "--threads", "4")
    yield server
    server.stop()
