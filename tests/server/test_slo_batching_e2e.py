"""SLO batching through the real server and the real gRPC wire: requests succeed and the
controller's state shows in ModelStatistics and in the Prometheus metrics, within its bounds."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from driftserve.api import grpc_service_pb2 as pb
from examples.build_repository import load_split
from tests.cli_support import one_line, run_cli
from tests.server.support import InProcessServer, copy_model, v2_request, wait_until

MLP = "breast_cancer_mlp"


@pytest.fixture(scope="module")
def server(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    repo = tmp_path_factory.mktemp("slo")
    copy_model(
        example_repository, repo, MLP, new_name="mlp_slo", config="max_batch_size: 16\nbatching: {slo_p99_ms: 50}\n"
    )
    copy_model(
        example_repository,
        repo,
        MLP,
        new_name="mlp_slo_bounded",
        config="max_batch_size: 64\nbatching: {slo_p99_ms: 50, max_queue_delay_us: 300}\n",
    )
    copy_model(example_repository, repo, MLP, new_name="mlp_default", config="max_batch_size: 64\n")
    copy_model(
        example_repository, repo, MLP, new_name="mlp_off", config="max_batch_size: 64\nbatching: {enabled: false}\n"
    )
    with InProcessServer(repo, slo_p99_ms=40.0) as proc:
        yield proc


def _statistics(server: InProcessServer, model: str) -> pb.ModelStatistics:
    response = server.v2().ModelStatistics(pb.ModelStatisticsRequest(name=model))
    return response.model_stats[0]


def _load(
    server: InProcessServer, model: str, x: np.ndarray, clients: int = 12, per_client: int = 25
) -> list[np.ndarray]:
    stub = server.v2()

    def client(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(per_client):
            rows = x[rng.integers(0, len(x), size=int(rng.integers(1, 4)))]
            reply = stub.ModelInfer(v2_request(model, rows), timeout=30)
            probabilities = np.frombuffer(reply.raw_output_contents[1], np.float32).reshape(len(rows), 2)
            out.append(np.concatenate([rows, probabilities], axis=1))
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [pair for chunk in pool.map(client, range(clients)) for pair in chunk]


def test_requests_succeed_and_the_controller_reports_within_its_bounds(
    server: InProcessServer, example_repository: Path
) -> None:
    x, _, _ = load_split(example_repository / MLP / "data" / "train.npz")
    pairs = _load(server, "mlp_slo", x)
    session = ort.InferenceSession(str(example_repository / MLP / "1" / "model.onnx"))
    for pair in pairs:
        direct = session.run(["probabilities"], {"input": pair[:, :30]})[0]
        np.testing.assert_allclose(pair[:, 30:], direct, rtol=1e-5, atol=1e-6)

    wait_until(
        lambda: (
            _statistics(server, "mlp_slo").batch_control.cost_per_row_ns
            + _statistics(server, "mlp_slo").batch_control.cost_fixed_ns
            > 0
        )
    )
    stats = _statistics(server, "mlp_slo")
    control = stats.batch_control
    assert stats.HasField("batch_control")
    assert control.objective_ns == 50_000_000
    assert 1 <= control.target_batch_rows <= control.batch_limit_rows <= 16
    assert 0 <= control.queue_delay_ns <= 50_000_000  # the objective bounds the delay when the config gives none
    assert 0.0 < control.budget_fraction <= 1.0
    assert control.arrival_rows_per_s > 0
    assert 0.0 <= control.loop_busy <= 1.0
    assert stats.inference_count == sum(len(p) for p in pairs)
    assert max(b.batch_size for b in stats.batch_stats) <= 16

    labels = {"model": "mlp_slo", "version": "1"}
    assert server.metric("driftserve_batcher_slo_objective_seconds", **labels) == pytest.approx(0.05)
    assert 1 <= server.metric("driftserve_batcher_slo_batch_limit_rows", **labels) <= 16
    assert 0 <= server.metric("driftserve_batcher_slo_queue_delay_seconds", **labels) <= 0.05
    fixed = server.metric("driftserve_batcher_slo_cost_fixed_seconds", **labels)
    per_row = server.metric("driftserve_batcher_slo_cost_per_row_seconds", **labels)
    assert fixed >= 0 and per_row >= 0 and fixed + per_row > 0
    assert 0.0 <= server.metric("driftserve_batcher_slo_loop_busy_ratio", **labels) <= 1.0
    assert server.metric("driftserve_batcher_slo_probes", **labels) == control.probes


def test_a_configured_delay_bounds_the_controller(server: InProcessServer, example_repository: Path) -> None:
    x, _, _ = load_split(example_repository / MLP / "data" / "train.npz")
    _load(server, "mlp_slo_bounded", x, clients=8, per_client=15)
    control = _statistics(server, "mlp_slo_bounded").batch_control
    assert control.objective_ns == 50_000_000
    assert control.queue_delay_ns <= 300_000
    assert server.metric("driftserve_batcher_slo_queue_delay_seconds", model="mlp_slo_bounded") <= 300e-6


def test_the_server_default_objective_applies_to_models_without_one(server: InProcessServer) -> None:
    assert _statistics(server, "mlp_default").batch_control.objective_ns == 40_000_000
    # Batching off: no controller, nothing reported, and requests are still served.
    assert not _statistics(server, "mlp_off").HasField("batch_control")
    reply = server.v2().ModelInfer(v2_request("mlp_off", np.zeros((2, 30), np.float32)), timeout=30)
    assert len(reply.raw_output_contents) == 2
    assert server.metric("driftserve_batcher_slo_objective_seconds", model="mlp_off") == 0


def test_an_invalid_server_objective_is_one_line(example_repository: Path) -> None:
    line = one_line(run_cli("serve", "--model-repository", str(example_repository), "--slo-p99-ms", "0"), 2)
    assert line.startswith("driftserve serve: --slo-p99-ms (or DRIFTSERVE_SLO_P99_MS) is 0.0")
    assert "greater than 0" in line


def test_models_status_shows_what_the_controller_decided(server: InProcessServer, example_repository: Path) -> None:
    x, _, _ = load_split(example_repository / MLP / "data" / "train.npz")
    _load(server, "mlp_slo_bounded", x, clients=4, per_client=10)
    status = run_cli("models", "--address", server.address, "status", "mlp_slo_bounded")
    assert status.returncode == 0, status.stderr
    batching = [line for line in status.stdout.splitlines() if line.startswith("batching")]
    assert len(batching) == 1, status.stdout
    assert batching[0].startswith("batching   v1: objective 50 ms, delay ")
    assert " rows/s, p99 " in batching[0] and "CPU pressure " in batching[0]
    # Without a controller (batching off) there is nothing to show.
    off = run_cli("models", "--address", server.address, "status", "mlp_off")
    assert off.returncode == 0, off.stderr
    assert "batching" not in off.stdout
