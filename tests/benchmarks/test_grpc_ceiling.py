"""The transport-ceiling server answers like the model would (shapes, types, errors), without it."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks.common import start_grpc_ceiling
from benchmarks.workers_bench import start_ceiling
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "yield-once"])
def ceiling(request: pytest.FixtureRequest, model_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_grpc_ceiling(model_repository, tmp_path_factory.mktemp("logs"), yield_once=request.param)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _request(model: str, rows: int) -> pb.ModelInferRequest:
    data = np.zeros((rows, 30), np.float32)
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[rows, 30])],
        raw_input_contents=[data.tobytes()],
    )


@pytest.mark.parametrize("rows", [1, 5])
def test_canned_reply_has_the_model_output_shape(ceiling, rows: int) -> None:
    with grpc.insecure_channel(ceiling.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(_request("linear", rows), timeout=10)
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="linear"), timeout=10)
    assert [o.name for o in reply.outputs] == [o.name for o in meta.outputs] == ["probabilities"]
    assert list(reply.outputs[0].shape) == [rows, 2]
    assert reply.outputs[0].datatype == "FP32"
    assert len(reply.raw_output_contents[0]) == rows * 2 * 4


def test_unknown_model_is_not_found(ceiling) -> None:
    with grpc.insecure_channel(ceiling.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_request("missing", 1), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_version_is_not_found_for_metadata_and_config(ceiling) -> None:
    with grpc.insecure_channel(ceiling.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call, request in (
            (stub.ModelMetadata, pb.ModelMetadataRequest(name="linear", version="99")),
            (stub.ModelConfig, pb.ModelConfigRequest(name="linear", version="99")),
            (stub.ModelMetadata, pb.ModelMetadataRequest(name="missing")),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "version '99'" in info.value.details() or "missing" in info.value.details()


def test_statistics_count_the_replies_sent(ceiling) -> None:
    with grpc.insecure_channel(ceiling.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def served() -> int:
            stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="linear"), timeout=10).model_stats
            assert [s.name for s in stats] == ["linear"]
            return stats[0].inference_stats.success.count

        before = served()
        for rows in (1, 2, 3):
            stub.ModelInfer(_request("linear", rows), timeout=10)
        assert served() == before + 3
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelStatistics(pb.ModelStatisticsRequest(name="missing"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_ceiling_processes_share_one_port_and_each_serves(model_repository: Path, tmp_path: Path) -> None:
    # The bound for `serve --workers 2`: two ceiling processes on one port (SO_REUSEPORT).
    servers = start_ceiling(model_repository, tmp_path, 2)
    try:
        for server in servers:
            server.wait_ready()
        assert len({server.target for server in servers}) == 1

        def new_connection() -> grpc.Channel:
            return grpc.insecure_channel(servers[0].target, options=[("grpc.use_local_subchannel_pool", 1)])

        for _ in range(41):  # new connections over both listeners; an odd count, so the two counts differ
            with new_connection() as channel:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request("linear", 1), timeout=10)
        counts = set()
        for _ in range(30):  # each process reports the replies it sent itself
            with new_connection() as channel:
                stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
                    pb.ModelStatisticsRequest(name="linear"), timeout=10
                )
            counts.add(stats.model_stats[0].inference_stats.success.count)
        assert len(counts) == 2 and sum(counts) == 41 and 0 not in counts
    finally:
        for server in servers:
            server.stop()


def test_ceiling_with_the_loop_writing_replies_answers_the_same(model_repository: Path, tmp_path: Path) -> None:
    server = start_grpc_ceiling(model_repository, tmp_path, reply_sender=False)
    try:
        server.wait_ready()
        with grpc.insecure_channel(server.target) as channel:
            reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request("linear", 3), timeout=10)
        assert list(reply.outputs[0].shape) == [3, 2]
        assert "--reply-sender" in server.proc.args and "off" in server.proc.args
    finally:
        server.stop()
