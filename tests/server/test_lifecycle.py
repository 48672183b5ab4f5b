"""Process lifecycle: env settings, SIGTERM draining with requests in flight, native API, datatypes."""

from __future__ import annotations

import queue
import signal
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto

from driftserve.api import driftserve_pb2 as dpb
from driftserve.api import grpc_service_pb2 as pb
from examples.build_repository import load_split
from tests.server.support import ServerProcess, copy_model, v2_request, wait_until, write_identity_model

SLOW_BATCH_CONFIG = """\
max_batch_size: 64
batching: {enabled: true, max_queue_delay_us: 1500000, max_queue_size: 64, adaptive_delay: false}
"""


def test_sigterm_lets_in_flight_requests_finish(example_repository: Path, tmp_path: Path) -> None:
    # A 1.5 s queue delay holds requests in the queue, so SIGTERM lands while they are in flight.
    copy_model(example_repository, tmp_path, "breast_cancer_mlp", config=SLOW_BATCH_CONFIG)
    x, _, _ = load_split(example_repository / "breast_cancer_mlp" / "data" / "holdout.npz")
    with ServerProcess(tmp_path) as server:
        channel = server.channel()
        stub = server.v2(channel)
        futures = [stub.ModelInfer.future(v2_request("breast_cancer_mlp", x[i : i + 1], id=str(i))) for i in range(12)]
        wait_until(lambda: server.metric("driftserve_batcher_queue_depth_requests", model="breast_cancer_mlp") == 12)
        server.process.send_signal(signal.SIGTERM)
        health = health_pb2_grpc.HealthStub(channel)

        def not_serving() -> bool:
            # NOT_SERVING while draining, or the new RPC is refused outright once stopping.
            try:
                return (
                    health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
                )
            except grpc.RpcError as exc:
                return exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)

        wait_until(not_serving, timeout_s=5)
        replies = [f.result(timeout=30) for f in futures]
        assert sorted(r.id for r in replies) == sorted(str(i) for i in range(12))
        assert all(np.frombuffer(r.raw_output_contents[1], np.float32).shape == (2,) for r in replies)
        assert server.process.wait(timeout=30) == 0
        # After shutdown nothing accepts connections any more.
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(v2_request("breast_cancer_mlp", x[:1]), timeout=2)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        channel.close()
    assert any("draining" in line for line in server.lines)


def test_sigterm_answers_stream_messages_in_flight_and_readiness_turns_false(
    example_repository: Path, tmp_path: Path
) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_mlp", config=SLOW_BATCH_CONFIG)
    x, _, _ = load_split(example_repository / "breast_cancer_mlp" / "data" / "holdout.npz")
    with ServerProcess(tmp_path, "--drain-period-s", "2") as server:
        stub = server.v2()
        sent = queue.Queue()
        for i in range(6):
            sent.put(v2_request("breast_cancer_mlp", x[i : i + 1], id=f"s{i}"))
        replies = stub.ModelStreamInfer(iter(sent.get, None))
        wait_until(lambda: server.metric("driftserve_batcher_queue_depth_requests", model="breast_cancer_mlp") == 6)
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: not stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready, timeout_s=10)
        answered = [next(replies) for _ in range(6)]
        assert all(not r.error_message for r in answered), [r.error_message for r in answered]
        assert sorted(r.infer_response.id for r in answered) == [f"s{i}" for i in range(6)]
        sent.put(None)  # the client ends its stream
        assert server.process.wait(timeout=30) == 0


def test_environment_settings_and_process_metrics(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    # The flag --grpc-port 0 given by ServerProcess wins over the environment, as documented;
    # so check the environment on settings the helper does not pass.
    env = {"DRIFTSERVE_LOG_LEVEL": "DEBUG", "DRIFTSERVE_GRACE_PERIOD_S": "1.5"}
    with ServerProcess(tmp_path, env=env) as server:
        reply = server.v2().ModelInfer(v2_request("breast_cancer_lr", np.zeros((1, 30), np.float32)))
        assert reply.model_version == "2"
        assert any(" DEBUG " in line for line in server.lines)
        # A serving process is a Prometheus target of its own: CPU, memory, the collector's work.
        assert server.metric("process_cpu_seconds_total") > 0 and server.metric("process_resident_memory_bytes") > 0
        assert server.metric("python_gc_collections_total", generation="0") >= 1
        assert server.terminate() == 0
    assert any("draining for up to 1.5 s" in line for line in server.lines)


def test_native_predict_and_stream(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    x, _, _ = load_split(example_repository / "breast_cancer_lr" / "data" / "holdout.npz")
    with ServerProcess(tmp_path) as server:
        stub = server.native()
        reply = stub.Predict(
            dpb.PredictRequest(
                model="breast_cancer_lr",
                version="1",
                request_id="n1",
                outputs=["label"],
                inputs=[dpb.Tensor(name="input", datatype="FP32", shape=[3, 30], data=x[:3].tobytes())],
            )
        )
        assert reply.request_id == "n1" and reply.version == "1" and [t.name for t in reply.outputs] == ["label"]
        assert reply.outputs[0].datatype == "INT64" and list(reply.outputs[0].shape) == [3]
        stream_requests = [
            dpb.PredictRequest(
                model="breast_cancer_lr",
                request_id=f"r{i}",
                inputs=[dpb.Tensor(name="input", datatype="FP32", shape=[1, 30], data=x[i : i + 1].tobytes())],
            )
            for i in range(10)
        ] + [
            dpb.PredictRequest(
                model="breast_cancer_lr",
                request_id="bad",
                inputs=[dpb.Tensor(name="input", datatype="FP32", shape=[1, 3], data=b"\0" * 12)],
            )
        ]
        replies = {r.request_id: r for r in stub.PredictStream(iter(stream_requests))}
        assert len(replies) == 11
        assert replies["bad"].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "shape [1, 3]" in replies["bad"].error_message
        assert all(replies[f"r{i}"].error_code == 0 and replies[f"r{i}"].response.version == "2" for i in range(10))
        assert server.terminate() == 0


@pytest.mark.parametrize(
    "onnx_type,datatype,dtype",
    [
        (TensorProto.BOOL, "BOOL", np.bool_),
        (TensorProto.INT8, "INT8", np.int8),
        (TensorProto.INT16, "INT16", np.int16),
        (TensorProto.INT32, "INT32", np.int32),
        (TensorProto.INT64, "INT64", np.int64),
        (TensorProto.UINT8, "UINT8", np.uint8),
        (TensorProto.UINT16, "UINT16", np.uint16),
        (TensorProto.UINT32, "UINT32", np.uint32),
        (TensorProto.UINT64, "UINT64", np.uint64),
        (TensorProto.FLOAT16, "FP16", np.float16),
        (TensorProto.FLOAT, "FP32", np.float32),
        (TensorProto.DOUBLE, "FP64", np.float64),
    ],
)
def test_datatype_round_trip_codec(onnx_type: int, datatype: str, dtype: type, tmp_path: Path) -> None:
    """Every V2 datatype ONNX models use decodes and encodes losslessly (codec level)."""
    from driftserve.core.tensors import decode_raw, encode_raw, v2_datatype

    array = (np.arange(12) % 2 == 0) if dtype is np.bool_ else np.arange(12).astype(dtype)
    array = array.reshape(4, 3)
    decoded = decode_raw(datatype, [4, 3], encode_raw(array), "x")
    np.testing.assert_array_equal(decoded, array)
    assert v2_datatype(decoded) == datatype


def test_datatypes_through_server(tmp_path: Path) -> None:
    """Identity models of several datatypes, including BYTES, served end to end."""
    cases = {
        "id_fp16": (TensorProto.FLOAT16, "FP16", np.float16),
        "id_int8": (TensorProto.INT8, "INT8", np.int8),
        "id_uint64": (TensorProto.UINT64, "UINT64", np.uint64),
        "id_bool": (TensorProto.BOOL, "BOOL", np.bool_),
        "id_fp64": (TensorProto.DOUBLE, "FP64", np.float64),
    }
    for name, (onnx_type, _, _) in cases.items():
        write_identity_model(tmp_path / name, onnx_type, "max_batch_size: 8\n")
    write_identity_model(tmp_path / "id_bytes", TensorProto.STRING, "max_batch_size: 8\n")
    with ServerProcess(tmp_path) as server:
        stub = server.v2()
        for name, (_, datatype, dtype) in cases.items():
            array = (
                (np.arange(6) % 3 == 0).reshape(2, 3) if dtype is np.bool_ else np.arange(6, dtype=dtype).reshape(2, 3)
            )
            reply = stub.ModelInfer(v2_request(name, array, name="x", datatype=datatype))
            assert reply.outputs[0].datatype == datatype
            np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], dtype).reshape(2, 3), array)
        from driftserve.core.tensors import decode_raw, encode_raw

        words = np.array([[b"a", b"bb", b""], [b"drift", b"serve", "é".encode()]], dtype=np.object_)
        request = v2_request("id_bytes", words, name="x", datatype="BYTES")
        request.raw_input_contents[0] = encode_raw(words)
        reply = stub.ModelInfer(request)
        assert reply.outputs[0].datatype == "BYTES"
        got = decode_raw("BYTES", list(reply.outputs[0].shape), reply.raw_output_contents[0], "y")
        assert got.tolist() == words.tolist()
        request.raw_input_contents[0] = encode_raw(np.array([[b"\xff", b"", b""], [b"", b"", b""]], dtype=np.object_))
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not valid UTF-8" in info.value.details()
        assert server.terminate() == 0


def test_concurrent_clients_share_batches(example_repository: Path, tmp_path: Path) -> None:
    """Concurrent single-row requests are merged: fewer executions than requests."""
    copy_model(
        example_repository,
        tmp_path,
        "breast_cancer_mlp",
        config="max_batch_size: 64\nbatching: {enabled: true, max_queue_delay_us: 20000}\n",
    )
    x, _, _ = load_split(example_repository / "breast_cancer_mlp" / "data" / "holdout.npz")
    with ServerProcess(tmp_path) as server:
        stub = server.v2()
        errors: list[BaseException] = []

        def client(offset: int) -> None:
            try:
                for i in range(10):
                    stub.ModelInfer(v2_request("breast_cancer_mlp", x[(offset + i) % 100 : (offset + i) % 100 + 1]))
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(k * 10,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors

        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="breast_cancer_mlp")).model_stats[0]
        assert stats.inference_count == 160 + 0 * stats.execution_count
        assert stats.execution_count < 160
        assert any(b.batch_size > 1 for b in stats.batch_stats)
        assert server.terminate() == 0
