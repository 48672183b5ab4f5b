"""Micro-batching through the real server and the real gRPC wire."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from driftserve.api import grpc_service_pb2 as pb
from examples.build_repository import load_split
from tests.server.support import InProcessServer, copy_model, v2_request, wait_until, write_gather_model


@pytest.fixture(scope="module")
def server(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    repo = tmp_path_factory.mktemp("batching")
    copy_model(
        example_repository,
        repo,
        "breast_cancer_mlp",
        config="max_batch_size: 64\nbatching: {enabled: true, max_queue_delay_us: 2000}\n",
    )
    copy_model(
        example_repository,
        repo,
        "breast_cancer_mlp",
        new_name="mlp_unbatched",
        config="max_batch_size: 64\nbatching: {enabled: false}\n",
    )
    copy_model(
        example_repository,
        repo,
        "breast_cancer_mlp",
        new_name="mlp_slow_queue",
        config=(
            "max_batch_size: 64\n"
            "batching: {enabled: true, max_queue_delay_us: 3000000, max_queue_size: 3, adaptive_delay: false}\n"
        ),
    )
    write_gather_model(
        repo / "gather",
        "max_batch_size: 2\nbatching: {enabled: true, max_queue_delay_us: 3000000, adaptive_delay: false}\n",
    )
    with InProcessServer(repo) as proc:
        yield proc


def test_batched_equals_unbatched_row_for_row(server: InProcessServer, example_repository: Path) -> None:
    rng = np.random.default_rng(7)
    x, _, _ = load_split(example_repository / "breast_cancer_mlp" / "data" / "train.npz")
    chunks = [x[rng.integers(0, len(x), size=int(n))] for n in rng.integers(1, 12, size=48)]
    stub = server.v2()
    with ThreadPoolExecutor(16) as pool:
        batched = list(pool.map(lambda c: stub.ModelInfer(v2_request("breast_cancer_mlp", c)), chunks))
    unbatched = [stub.ModelInfer(v2_request("mlp_unbatched", c)) for c in chunks]
    session = ort.InferenceSession(str(example_repository / "breast_cancer_mlp" / "1" / "model.onnx"))
    for chunk, b, u in zip(chunks, batched, unbatched):
        pb_, pu = (np.frombuffer(r.raw_output_contents[1], np.float32).reshape(len(chunk), 2) for r in (b, u))
        np.testing.assert_allclose(pb_, pu, rtol=1e-5, atol=1e-6)
        direct = session.run(["probabilities"], {"input": chunk})[0]
        np.testing.assert_allclose(pb_, direct, rtol=1e-5, atol=1e-6)
        assert list(b.outputs[0].shape) == [len(chunk)]
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="breast_cancer_mlp")).model_stats[0]
    assert stats.inference_count == sum(len(c) for c in chunks)
    assert stats.execution_count < len(chunks), "concurrent requests should share batches"
    assert server.metric("driftserve_batcher_batch_requests_bucket", model="breast_cancer_mlp", le="1.0") < len(chunks)


def test_v2_timeout_parameter_expires_in_queue(server: InProcessServer) -> None:
    request = v2_request("mlp_slow_queue", np.zeros((1, 30), np.float32))
    request.parameters["timeout"].int64_param = 100_000  # 100 ms, far below the 3 s queue delay
    with pytest.raises(grpc.RpcError) as info:
        server.v2().ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "in the queue" in info.value.details()
    assert server.metric("driftserve_batcher_rejections_total", model="mlp_slow_queue", reason="deadline") >= 1


def test_grpc_deadline_leaves_the_queue(server: InProcessServer) -> None:
    before = server.metric("driftserve_batcher_rejections_total", model="mlp_slow_queue")
    with pytest.raises(grpc.RpcError) as info:
        server.v2().ModelInfer(v2_request("mlp_slow_queue", np.zeros((1, 30), np.float32)), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: server.metric("driftserve_batcher_rejections_total", model="mlp_slow_queue") > before)
    wait_until(lambda: server.metric("driftserve_batcher_queue_depth_requests", model="mlp_slow_queue") == 0)


def test_cancelled_and_expired_calls_are_counted_as_such_with_their_model(server: InProcessServer) -> None:
    def requests(code: str) -> float:
        return server.metric("driftserve_server_requests_total", model="mlp_slow_queue", code=code)

    cancelled, expired = requests("CANCELLED"), requests("DEADLINE_EXCEEDED")
    call = server.v2().ModelInfer.future(v2_request("mlp_slow_queue", np.zeros((1, 30), np.float32)))
    wait_until(lambda: server.metric("driftserve_batcher_queue_depth_requests", model="mlp_slow_queue") == 1)
    call.cancel()
    wait_until(lambda: requests("CANCELLED") == cancelled + 1)
    with pytest.raises(grpc.RpcError):
        server.v2().ModelInfer(v2_request("mlp_slow_queue", np.zeros((1, 30), np.float32)), timeout=0.2)
    wait_until(lambda: requests("DEADLINE_EXCEEDED") == expired + 1)
    # Neither was answered, so neither counts as OK (for no version).
    assert server.metric("driftserve_server_requests_total", code="OK", version="") == 0


def test_queue_full_sheds_load(server: InProcessServer) -> None:
    stub = server.v2()
    zeros = np.zeros((1, 30), np.float32)
    queued = [stub.ModelInfer.future(v2_request("mlp_slow_queue", zeros)) for _ in range(3)]
    wait_until(lambda: server.metric("driftserve_batcher_queue_depth_requests", model="mlp_slow_queue") == 3)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(v2_request("mlp_slow_queue", zeros))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "is full" in info.value.details()
    # The retry hint gRPC clients honour: here the queue's own delay, 3 s.
    assert dict(info.value.trailing_metadata())["grpc-retry-pushback-ms"] == "3000"
    assert time.monotonic() - started < 2.5, "a full queue must refuse at once, not after the queue delay"
    assert all(f.result(timeout=30).model_name == "mlp_slow_queue" for f in queued)


def test_onnxruntime_failure_fails_exactly_its_batch(server: InProcessServer) -> None:
    stub = server.v2()
    bad = stub.ModelInfer.future(v2_request("gather", np.array([[100]], np.int64), name="idx", datatype="INT64"))
    mate = stub.ModelInfer.future(v2_request("gather", np.array([[1]], np.int64), name="idx", datatype="INT64"))
    codes = []
    for future in (bad, mate):
        with pytest.raises(grpc.RpcError) as info:
            future.result(timeout=30)
        codes.append(info.value.code())
    assert codes == [grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL]
    good = stub.ModelInfer(v2_request("gather", np.array([[5], [6]], np.int64), name="idx", datatype="INT64"))
    np.testing.assert_array_equal(np.frombuffer(good.raw_output_contents[0], np.float32), [5.0, 6.0])
