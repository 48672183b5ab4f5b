"""The Open Inference Protocol through the real server: tritonclient, raw stubs, metadata, repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tritongrpc

from driftserve.api import grpc_service_pb2 as pb
from examples.build_repository import load_split
from tests.server.support import InProcessServer, v2_request


@pytest.fixture(scope="module")
def server(example_repository: Path) -> Iterator[InProcessServer]:
    with InProcessServer(example_repository) as proc:
        yield proc


@pytest.fixture(scope="module")
def holdout(example_repository: Path) -> np.ndarray:
    x, _, _ = load_split(example_repository / "breast_cancer_mlp" / "data" / "holdout.npz")
    return x


def ort_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x})))


@pytest.mark.parametrize("model", ["breast_cancer_lr", "breast_cancer_mlp"])
def test_tritonclient_raw_inputs_match_onnxruntime(
    server: InProcessServer, example_repository: Path, holdout: np.ndarray, model: str
) -> None:
    client = tritongrpc.InferenceServerClient(server.address)
    x = holdout[:17]
    infer_input = tritongrpc.InferInput("input", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    result = client.infer(model, [infer_input], request_id="req-42")
    version = max(int(p.name) for p in (example_repository / model).iterdir() if p.name.isdigit())
    expected = ort_outputs(example_repository / model / str(version) / "model.onnx", x)
    assert np.max(np.abs(result.as_numpy("probabilities") - expected["probabilities"])) <= 1e-6
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    assert result.get_response().id == "req-42"
    assert result.get_response().model_version == str(version)


def test_typed_contents_through_raw_stub(
    server: InProcessServer, example_repository: Path, holdout: np.ndarray
) -> None:
    x = holdout[:5]
    request = pb.ModelInferRequest(
        model_name="breast_cancer_lr",
        model_version="1",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input",
                datatype="FP32",
                shape=x.shape,
                contents=pb.InferTensorContents(fp32_contents=x.reshape(-1).tolist()),
            )
        ],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")],
    )
    response = server.v2().ModelInfer(request)
    assert [o.name for o in response.outputs] == ["probabilities"]
    assert len(response.raw_output_contents) == 1 and not response.outputs[0].HasField("contents")
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(response.outputs[0].shape)
    expected = ort_outputs(example_repository / "breast_cancer_lr" / "1" / "model.onnx", x)["probabilities"]
    assert np.max(np.abs(got - expected)) <= 1e-6


def test_pinned_versions_differ(server: InProcessServer, holdout: np.ndarray) -> None:
    stub = server.v2()
    replies = [stub.ModelInfer(v2_request("breast_cancer_lr", holdout[:20], model_version=v)) for v in ("1", "2")]
    probs = [np.frombuffer(r.raw_output_contents[1], np.float32) for r in replies]
    assert [r.model_version for r in replies] == ["1", "2"]
    assert not np.allclose(probs[0], probs[1])


def test_server_and_model_metadata(server: InProcessServer) -> None:
    client = tritongrpc.InferenceServerClient(server.address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("breast_cancer_mlp")
    assert not client.is_model_ready("no_such_model")
    meta = client.get_server_metadata()
    assert meta.name == "driftserve" and "statistics" in meta.extensions
    model = client.get_model_metadata("breast_cancer_lr")
    assert model.versions == ["1", "2"] and model.platform == "onnxruntime_onnx"
    assert [(i.name, i.datatype, list(i.shape)) for i in model.inputs] == [("input", "FP32", [-1, 30])]
    assert {(o.name, o.datatype, tuple(o.shape)) for o in model.outputs} == {
        ("label", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, 2)),
    }


def test_model_config(server: InProcessServer) -> None:
    config = tritongrpc.InferenceServerClient(server.address).get_model_config("breast_cancer_mlp").config
    assert config.name == "breast_cancer_mlp" and config.max_batch_size == 64
    assert config.platform == "onnxruntime_onnx"
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [30])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.dynamic_batching.preferred_batch_size) == [32, 64]
    assert config.version_policy.latest.num_versions == 1


def test_statistics_count_requests(server: InProcessServer, holdout: np.ndarray) -> None:
    stub = server.v2()
    before = stub.ModelStatistics(pb.ModelStatisticsRequest(name="breast_cancer_lr", version="2")).model_stats[0]
    for _ in range(3):
        stub.ModelInfer(v2_request("breast_cancer_lr", holdout[:4], model_version="2"))
    after = stub.ModelStatistics(pb.ModelStatisticsRequest(name="breast_cancer_lr", version="2")).model_stats[0]
    assert after.inference_stats.success.count - before.inference_stats.success.count == 3
    assert after.inference_count - before.inference_count == 12
    assert after.inference_stats.queue.count - before.inference_stats.queue.count == 3
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert after.last_inference > 0
    every = stub.ModelStatistics(pb.ModelStatisticsRequest())
    assert {(s.name, s.version) for s in every.model_stats} >= {
        ("breast_cancer_lr", "1"),
        ("breast_cancer_lr", "2"),
        ("breast_cancer_mlp", "1"),
    }


def test_stream_infer(server: InProcessServer, holdout: np.ndarray) -> None:
    requests = [v2_request("breast_cancer_mlp", holdout[i : i + 2], id=f"s{i}") for i in range(20)]
    requests.append(v2_request("nope", holdout[:1], id="bad"))
    replies = list(server.v2().ModelStreamInfer(iter(requests)))
    assert len(replies) == 21
    by_id = {r.infer_response.id: r for r in replies}
    assert by_id["bad"].error_message.startswith("NOT_FOUND")
    assert all(not by_id[f"s{i}"].error_message for i in range(20))
    assert by_id["s3"].infer_response.outputs[1].shape == [2, 2]


def test_repository_index_unload_load(server: InProcessServer, holdout: np.ndarray) -> None:
    client = tritongrpc.InferenceServerClient(server.address)
    index = {
        (m["name"], m.get("version", "")): m.get("state")
        for m in client.get_model_repository_index(as_json=True)["models"]
    }
    assert index[("breast_cancer_lr", "1")] == "READY" and index[("breast_cancer_mlp", "1")] == "READY"
    client.unload_model("breast_cancer_lr")
    assert not client.is_model_ready("breast_cancer_lr")
    with pytest.raises(grpc.RpcError) as err:
        server.v2().ModelInfer(v2_request("breast_cancer_lr", holdout[:1]))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not ready" in err.value.details()
    client.load_model("breast_cancer_lr")
    assert client.is_model_ready("breast_cancer_lr", "2")
    assert server.v2().ModelInfer(v2_request("breast_cancer_lr", holdout[:1])).model_version == "2"
    with pytest.raises(tritongrpc.InferenceServerException, match="not in the repository"):
        client.load_model("does_not_exist")


def test_health_and_reflection(server: InProcessServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = server.channel()
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", "driftserve.v1.Predictor"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"inference.GRPCInferenceService", "driftserve.v1.Predictor", "grpc.health.v1.Health"} <= names


def test_prometheus_metrics(server: InProcessServer, holdout: np.ndarray) -> None:
    server.v2().ModelInfer(v2_request("breast_cancer_mlp", holdout[:1]))
    with pytest.raises(grpc.RpcError):
        server.v2().ModelInfer(v2_request("breast_cancer_mlp", holdout[:1, :29]))
    samples = server.metrics()
    ok = server.metric(
        "driftserve_server_requests_total", model="breast_cancer_mlp", protocol="v2", code="OK", version="1"
    )
    bad = server.metric(
        "driftserve_server_requests_total", model="breast_cancer_mlp", protocol="v2", code="INVALID_ARGUMENT"
    )
    assert ok >= 1 and bad >= 1
    name = "driftserve_server_request_duration_seconds_bucket"
    buckets = {dict(labels)["le"] for (n, labels) in samples if n == name}
    assert "2.5e-05" in buckets and "1.0" in buckets
    assert ("driftserve_server_inflight_requests", ()) in samples
    assert server.metric("driftserve_server_model_state", model="breast_cancer_mlp", version="1", state="READY") == 1.0
    assert server.metric("driftserve_batcher_batch_size_rows_count", model="breast_cancer_mlp") >= 1
