"""Every bad request gets its precise status code and message, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from driftserve.api import driftserve_pb2 as dpb
from driftserve.api import grpc_service_pb2 as pb
from tests.server.support import InProcessServer, copy_model, v2_request, write_gather_model

GATHER_CONFIG = """\
max_batch_size: 8
batching: {enabled: true, max_queue_delay_us: 0}
"""


@pytest.fixture(scope="module")
def server(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    repo = tmp_path_factory.mktemp("errors")
    copy_model(example_repository, repo, "breast_cancer_mlp")
    write_gather_model(repo / "gather", GATHER_CONFIG)
    # A model whose config is broken: it must be reported, not crash the server.
    copy_model(
        example_repository, repo, "breast_cancer_lr", config="max_batch_size: 8\nbatchin: {}\n", new_name="broken"
    )
    with InProcessServer(repo, max_receive_message_bytes=1 << 20) as proc:
        yield proc


def call_error(server: InProcessServer, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        server.v2().ModelInfer(request)
    return info.value


def x(rows: int = 2, cols: int = 30, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(0).random((rows, cols)).astype(dtype)


def test_unknown_model_and_version(server: InProcessServer) -> None:
    err = call_error(server, v2_request("nope", x()))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in err.details()
    err = call_error(server, v2_request("breast_cancer_mlp", x(), model_version="7"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "no version 7" in err.details()


def test_missing_and_extra_inputs(server: InProcessServer) -> None:
    request = pb.ModelInferRequest(model_name="breast_cancer_mlp")
    err = call_error(server, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing input(s) ['input']" in err.details()
    request = v2_request("breast_cancer_mlp", x())
    request.inputs.add(name="extra", datatype="FP32", shape=[2, 30])
    request.raw_input_contents.append(x().tobytes())
    err = call_error(server, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "unexpected input(s) ['extra']" in err.details()


def test_wrong_dtype_shape_and_byte_length(server: InProcessServer) -> None:
    err = call_error(server, v2_request("breast_cancer_mlp", x(dtype=np.float64), datatype="FP64"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'input': datatype FP64 but model 'breast_cancer_mlp' expects FP32" in err.details()
    err = call_error(server, v2_request("breast_cancer_mlp", x(cols=29)))
    assert (
        err.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "shape [2, 29]" in err.details()
        and "[-1, 30]" in err.details()
    )
    request = v2_request("breast_cancer_mlp", x())
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    err = call_error(server, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "236 bytes of raw data but shape [2, 30] of FP32 needs 240 bytes" in err.details()
    err = call_error(server, v2_request("breast_cancer_mlp", x(), datatype="FLOAT"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "unsupported datatype 'FLOAT'" in err.details()


def test_too_many_rows_and_bad_parameters(server: InProcessServer) -> None:
    err = call_error(server, v2_request("breast_cancer_mlp", x(rows=65)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "65 rows exceed max_batch_size 64" in err.details()
    request = v2_request("breast_cancer_mlp", x())
    request.parameters["timeout"].string_param = "soon"
    err = call_error(server, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "parameter 'timeout' must be an integer" in err.details()
    request = v2_request("breast_cancer_mlp", x())
    request.outputs.add(name="logits")
    err = call_error(server, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "['logits'] not produced" in err.details()


def test_native_errors(server: InProcessServer) -> None:
    stub = server.native()
    data = x()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(
            dpb.PredictRequest(
                model="breast_cancer_mlp",
                inputs=[dpb.Tensor(name="input", datatype="FP32", shape=[2, 31], data=data.tobytes())],
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 248 bytes" in info.value.details()


def test_onnxruntime_failure_is_internal_and_server_keeps_serving(server: InProcessServer) -> None:
    bad = np.array([[100]], dtype=np.int64)
    err = call_error(server, v2_request("gather", bad, name="idx", datatype="INT64"))
    assert err.code() == grpc.StatusCode.INTERNAL and "ONNX Runtime failed on model 'gather'" in err.details()
    good = server.v2().ModelInfer(
        v2_request("gather", np.array([[3], [4]], dtype=np.int64), name="idx", datatype="INT64")
    )
    np.testing.assert_array_equal(np.frombuffer(good.raw_output_contents[0], np.float32), [3.0, 4.0])


def test_broken_config_reported_not_fatal(server: InProcessServer) -> None:
    index = server.v2().RepositoryIndex(pb.RepositoryIndexRequest())
    broken = [m for m in index.models if m.name == "broken"]
    assert broken and broken[0].state == "UNAVAILABLE"
    assert "unknown key 'batchin'" in broken[0].reason and "config.yaml" in broken[0].reason
    assert "allowed keys here" in broken[0].reason
    err = call_error(server, v2_request("broken", x()))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "unknown key 'batchin'" in err.details()


def test_oversize_message_refused_cleanly(server: InProcessServer) -> None:
    big = x(rows=64, cols=30)
    request = v2_request("breast_cancer_mlp", big)
    request.raw_input_contents[0] = b"\0" * (2 << 20)
    err = call_error(server, request)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.v2().ModelInfer(v2_request("breast_cancer_mlp", x())).model_name == "breast_cancer_mlp"
