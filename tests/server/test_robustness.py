"""Hostile and broken input, end to end over the real gRPC wire: a precise status, never INTERNAL or
UNKNOWN, and the server keeps serving.

Versions of Unicode digits, absurd shapes, BYTES tensors declaring more than their bytes hold,
bytes that are not a protobuf message, client strings too long for a status header, model names
that are paths, and model directories that cannot be read.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2 as dpb
from driftserve.api import grpc_service_pb2 as pb
from driftserve.core.errors import MAX_MESSAGE_BYTES
from driftserve.server import repository as repository_module
from driftserve.server.metrics import ServerMetrics
from driftserve.server.repository import ModelRepository
from tests.server.support import InProcessServer, ServerProcess, copy_model, v2_request

TIMEOUT_S = 30
BAD_VERSIONS = ["²", "③", "9" * 4301, str(2**63), "-1", "1.0", " 1"]
VERSION_MESSAGE = "model version must be a decimal integer from 0 to 9223372036854775807 in ASCII digits 0-9"


@pytest.fixture(scope="module")
def repo(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models, plus what must never be served: broken files, bad names, a symlink out."""
    base = tmp_path_factory.mktemp("robustness")
    repo = base / "repository"
    repo.mkdir()
    for name in ("breast_cancer_lr", "breast_cancer_mlp"):
        copy_model(example_repository, repo, name)
    # A version directory named with a Unicode digit: skipped, never int()-ed.
    (repo / "breast_cancer_mlp" / "²").mkdir()
    (repo / "breast_cancer_mlp" / "²" / "model.onnx").write_bytes(b"not read")
    copy_model(example_repository, repo, "breast_cancer_mlp", new_name="not_utf8")
    (repo / "not_utf8" / "config.yaml").write_bytes(b"max_batch_size: 8 # \xff\xfe\n")
    copy_model(example_repository, repo, "breast_cancer_mlp", new_name="config_is_a_dir")
    (repo / "config_is_a_dir" / "config.yaml").unlink()
    (repo / "config_is_a_dir" / "config.yaml").mkdir()
    copy_model(example_repository, repo, "breast_cancer_mlp", new_name="garbage_onnx")
    (repo / "garbage_onnx" / "1" / "model.onnx").write_bytes(b"\x08\x01garbage")
    # Outside the repository: reachable only by a path or a symlink, both refused.
    copy_model(example_repository, base / "outside", "breast_cancer_mlp", new_name="evil")
    os.symlink(base / "outside" / "evil", repo / "linked")
    copy_model(example_repository, repo, "breast_cancer_mlp", new_name="file_linked")
    (repo / "file_linked" / "1" / "model.onnx").unlink()
    os.symlink(base / "outside" / "evil" / "1" / "model.onnx", repo / "file_linked" / "1" / "model.onnx")
    copy_model(example_repository, repo, "breast_cancer_mlp", new_name="bad name")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[InProcessServer]:
    with InProcessServer(repo, max_receive_message_bytes=4 << 20) as proc:
        yield proc


def x(rows: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((rows, 30)).astype(np.float32)


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT_S)
    return info.value


def assert_status(err: grpc.RpcError, code: grpc.StatusCode, fragment: str) -> None:
    assert err.code() == code, (err.code(), err.details())
    assert fragment in err.details(), err.details()
    assert len(err.details().encode()) <= MAX_MESSAGE_BYTES


def assert_still_serving(server: InProcessServer) -> None:
    reply = server.v2().ModelInfer(v2_request("breast_cancer_mlp", x()), timeout=TIMEOUT_S)
    assert reply.outputs and reply.model_name == "breast_cancer_mlp"


def requests_counted(server: InProcessServer, protocol: str, code: str) -> float:
    return server.metric("driftserve_server_requests_total", protocol=protocol, code=code)


# ---------------------------------------------------------------------- 1. versions
@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_invalid_version_on_every_rpc(server: InProcessServer, version: str) -> None:
    v2, native = server.v2(), server.native()
    name = "breast_cancer_lr"
    assert not v2.ModelReady(pb.ModelReadyRequest(name=name, version=version), timeout=TIMEOUT_S).ready
    for call, request in [
        (v2.ModelMetadata, pb.ModelMetadataRequest(name=name, version=version)),
        (v2.ModelConfig, pb.ModelConfigRequest(name=name, version=version)),
        (v2.ModelStatistics, pb.ModelStatisticsRequest(name=name, version=version)),
        (v2.ModelInfer, v2_request(name, x(), model_version=version)),
        (native.Predict, dpb.PredictRequest(model=name, version=version)),
    ]:
        assert_status(rpc_error(call, request), grpc.StatusCode.INVALID_ARGUMENT, VERSION_MESSAGE)
    [reply] = v2.ModelStreamInfer(iter([v2_request(name, x(), model_version=version, id="s")]), timeout=TIMEOUT_S)
    assert reply.error_message.startswith(f"INVALID_ARGUMENT: {VERSION_MESSAGE}") and reply.infer_response.id == "s"
    [native_reply] = native.PredictStream(
        iter([dpb.PredictRequest(model=name, version=version, request_id="n")]), timeout=TIMEOUT_S
    )
    assert native_reply.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert VERSION_MESSAGE in native_reply.error_message and native_reply.request_id == "n"


def test_valid_versions_still_route(server: InProcessServer) -> None:
    v2 = server.v2()
    assert v2.ModelReady(pb.ModelReadyRequest(name="breast_cancer_lr", version="1"), timeout=TIMEOUT_S).ready
    reply = v2.ModelInfer(v2_request("breast_cancer_lr", x(), model_version="01"), timeout=TIMEOUT_S)
    assert reply.model_version == "1"
    stats = v2.ModelStatistics(pb.ModelStatisticsRequest(name="breast_cancer_lr", version="1"), timeout=TIMEOUT_S)
    assert [s.version for s in stats.model_stats] == ["1"]
    err = rpc_error(v2.ModelStatistics, pb.ModelStatisticsRequest(name="breast_cancer_lr", version="7"))
    assert_status(err, grpc.StatusCode.NOT_FOUND, "has no served version 7")
    # The "²" directory is skipped: the model serves version 1 only.
    assert v2.ModelMetadata(pb.ModelMetadataRequest(name="breast_cancer_mlp"), timeout=TIMEOUT_S).versions == ["1"]


# ---------------------------------------------------------------------- 2, 3. shapes and BYTES
@pytest.mark.parametrize(
    "shape,fragment",
    [
        ([0, 2**63 - 1], "declares 9223372036854775807 elements; a request carries at most 2147483647"),
        ([1] * 100, "shape has 100 dimensions; at most 64 are supported"),
        ([2**32, 2**32], "declares 18446744073709551616 elements"),
        ([-1, 30], "has a negative dimension"),
    ],
)
def test_absurd_shapes(server: InProcessServer, shape: list[int], fragment: str) -> None:
    raw = v2_request("breast_cancer_mlp", x())
    del raw.inputs[0].shape[:]
    raw.inputs[0].shape.extend(shape)
    typed = pb.ModelInferRequest(
        model_name="breast_cancer_mlp",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=shape)],
    )
    typed.inputs[0].contents.fp32_contents.extend([1.0] * 60)
    native = dpb.PredictRequest(
        model="breast_cancer_mlp", inputs=[dpb.Tensor(name="input", datatype="FP32", shape=shape, data=x().tobytes())]
    )
    v2, predictor = server.v2(), server.native()
    for call, request in [(v2.ModelInfer, raw), (v2.ModelInfer, typed), (predictor.Predict, native)]:
        err = rpc_error(call, request)
        assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, fragment)
        assert err.details().startswith("input 'input': shape ")
    assert_still_serving(server)


@pytest.mark.parametrize("count", [2**40, 2**26, 2**20])
def test_bytes_declaring_more_than_its_payload(server: InProcessServer, count: int) -> None:
    request = pb.ModelInferRequest(
        model_name="breast_cancer_mlp",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="BYTES", shape=[count])],
        raw_input_contents=[struct.pack("<I", 0)],
    )
    err = rpc_error(server.v2().ModelInfer, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"declares {count}" in err.details()
    assert_still_serving(server)


# ---------------------------------------------------------------------- 4. undecodable messages
V2_METHODS = [m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods]
GARBAGE = b"\xff\x00garbage"


def bad_utf8_request() -> bytes:
    wire = pb.ModelInferRequest(model_name="breast_cancer_mlp@", id="x").SerializeToString()
    return wire.replace(b"@", b"\xff")


@pytest.mark.parametrize("method", [m for m in V2_METHODS if m != "ModelStreamInfer"])
def test_undecodable_v2_unary(server: InProcessServer, method: str) -> None:
    request_type = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name[method].input_type
    call = server.channel().unary_unary(
        f"/inference.GRPCInferenceService/{method}", request_serializer=None, response_deserializer=None
    )
    err = rpc_error(call, GARBAGE)
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {request_type.full_name}: ")


def test_undecodable_infer_is_counted_and_precise(server: InProcessServer) -> None:
    before = requests_counted(server, "v2", "INVALID_ARGUMENT")
    call = server.channel().unary_unary(
        "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None
    )
    err = rpc_error(call, bad_utf8_request())
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid inference.ModelInferRequest: ")
    assert "UTF-8" in err.details()
    assert requests_counted(server, "v2", "INVALID_ARGUMENT") == before + 1
    before = requests_counted(server, "native", "INVALID_ARGUMENT")
    call = server.channel().unary_unary("/driftserve.v1.Predictor/Predict", None, None)
    err = rpc_error(call, GARBAGE)
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid driftserve.v1.PredictRequest: ")
    assert requests_counted(server, "native", "INVALID_ARGUMENT") == before + 1
    assert_still_serving(server)


def test_undecodable_stream_messages_get_error_replies(server: InProcessServer) -> None:
    good = v2_request("breast_cancer_mlp", x(), id="good").SerializeToString()
    call = server.channel().stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer", request_serializer=None, response_deserializer=None
    )
    replies = [pb.ModelStreamInferResponse.FromString(r) for r in call(iter([GARBAGE, good]), timeout=TIMEOUT_S)]
    errors = [r.error_message for r in replies if r.error_message]
    assert len(replies) == 2 and len(errors) == 1
    assert errors[0].startswith("INVALID_ARGUMENT: request is not a valid inference.ModelInferRequest: ")
    assert [r.infer_response.id for r in replies if not r.error_message] == ["good"]

    good = dpb.PredictRequest(
        model="breast_cancer_mlp",
        request_id="good",
        inputs=[dpb.Tensor(name="input", datatype="FP32", shape=[2, 30], data=x().tobytes())],
    ).SerializeToString()
    call = server.channel().stream_stream("/driftserve.v1.Predictor/PredictStream", None, None)
    native = [dpb.PredictStreamResponse.FromString(r) for r in call(iter([GARBAGE, good]), timeout=TIMEOUT_S)]
    failed = [r for r in native if r.error_code]
    assert len(native) == 2 and len(failed) == 1
    assert failed[0].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert failed[0].error_message.startswith("request is not a valid driftserve.v1.PredictRequest: ")
    assert [r.request_id for r in native if not r.error_code] == ["good"]


# ---------------------------------------------------------------------- 5. long client strings
@pytest.mark.parametrize("name", ["m" * 12_000, "€" * 5_000])
def test_long_model_names_are_clipped(server: InProcessServer, name: str) -> None:
    err = rpc_error(server.v2().ModelInfer, v2_request(name, x()))
    assert_status(err, grpc.StatusCode.NOT_FOUND, f"unknown model '{name[:100]}... ({len(name)} characters)'")
    err = rpc_error(server.v2().ModelMetadata, pb.ModelMetadataRequest(name=name))
    assert_status(err, grpc.StatusCode.NOT_FOUND, "unknown model")
    err = rpc_error(server.native().Predict, dpb.PredictRequest(model=name))
    assert_status(err, grpc.StatusCode.NOT_FOUND, "unknown model")


def test_long_tensor_names_and_datatypes(server: InProcessServer) -> None:
    request = v2_request("breast_cancer_mlp", x())
    request.outputs.add(name="o" * 10_000)
    err = rpc_error(server.v2().ModelInfer, request)
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "not produced")
    assert "(10000 characters)" in err.details() and len(err.details()) < 500
    request = v2_request("breast_cancer_mlp", x())
    request.outputs.extend([pb.ModelInferRequest.InferRequestedOutputTensor(name=f"o{i}" * 50) for i in range(500)])
    err = rpc_error(server.v2().ModelInfer, request)
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "characters cut ...]")
    assert err.details().startswith("requested output(s) ['o0o0") and "not produced by model" in err.details()
    request = v2_request("breast_cancer_mlp", x(), name="i" * 10_000)
    err = rpc_error(server.v2().ModelInfer, request)
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "unexpected input")
    assert "(10000 characters)" in err.details() and len(err.details()) < 500
    request = v2_request("breast_cancer_mlp", x(), datatype="T" * 10_000)
    assert_status(
        rpc_error(server.v2().ModelInfer, request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unsupported datatype 'TTT",
    )
    assert "(10000 characters)" in rpc_error(server.v2().ModelInfer, request).details()
    request = v2_request("breast_cancer_mlp", x())
    request.inputs.add().CopyFrom(request.inputs[0])
    request.inputs[0].name = request.inputs[1].name = "d" * 10_000
    request.raw_input_contents.append(request.raw_input_contents[0])
    assert_status(rpc_error(server.v2().ModelInfer, request), grpc.StatusCode.INVALID_ARGUMENT, "is given twice")
    assert_still_serving(server)


# ---------------------------------------------------------------------- 6. path traversal
@pytest.mark.parametrize("name", ["../outside/evil", "..", ".", "a/b", "/etc", "x" * 129, "", "é", "-x"])
def test_model_names_that_are_not_plain_names_are_refused(server: InProcessServer, name: str) -> None:
    v2 = server.v2()
    err = rpc_error(v2.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=name))
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "is not valid: expected 1 to 128 of the characters")
    err = rpc_error(v2.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=name))
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "is not valid")
    assert name not in server.running.repository.models


def test_traversal_never_serves_a_model_from_outside(server: InProcessServer) -> None:
    v2 = server.v2()
    err = rpc_error(v2.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="nope"))
    assert_status(err, grpc.StatusCode.NOT_FOUND, "model 'nope' is not in the repository")
    err = rpc_error(v2.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="linked"))
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "resolves outside the model repository")
    for name in ("../outside/evil", "linked"):
        assert_status(rpc_error(v2.ModelInfer, v2_request(name, x())), grpc.StatusCode.NOT_FOUND, "unknown model")
        assert name not in server.running.repository.models
    index = {m.name: m for m in v2.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=TIMEOUT_S).models}
    assert index["linked"].state == "UNAVAILABLE" and "resolves outside the model repository" in index["linked"].reason
    assert index["bad name"].state == "UNAVAILABLE" and "a model name is 1 to 128" in index["bad name"].reason
    assert not any(m.state == "READY" for n, m in index.items() if n in ("linked", "bad name"))


# ---------------------------------------------------------------------- 7. broken model files
@pytest.mark.parametrize(
    "name,fragment",
    [
        ("not_utf8", "config.yaml: not UTF-8 text"),
        ("config_is_a_dir", "config.yaml: not a regular file"),
        ("garbage_onnx", "model.onnx: cannot be loaded by ONNX Runtime"),
        ("file_linked", "1/model.onnx: resolves outside the model repository"),
    ],
)
def test_broken_models_are_unavailable_with_reason(server: InProcessServer, name: str, fragment: str) -> None:
    index = server.v2().RepositoryIndex(pb.RepositoryIndexRequest(), timeout=TIMEOUT_S)
    [row] = [m for m in index.models if m.name == name]
    assert row.state == "UNAVAILABLE" and fragment in row.reason
    assert_status(rpc_error(server.v2().ModelInfer, v2_request(name, x())), grpc.StatusCode.UNAVAILABLE, fragment)
    assert_still_serving(server)


def test_any_load_exception_marks_only_that_model(
    example_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("breast_cancer_lr", "breast_cancer_mlp"):
        copy_model(example_repository, tmp_path, name)
    real = repository_module.load_model_version

    def flaky(name: str, *args: Any) -> Any:
        if name == "breast_cancer_lr":
            raise RuntimeError("warmup exploded")
        return real(name, *args)

    monkeypatch.setattr(repository_module, "load_model_version", flaky)
    repo = ModelRepository(tmp_path, ServerMetrics(CollectorRegistry()))

    async def load() -> None:
        await repo.load_all()
        await repo.close()

    asyncio.run(load())
    assert repo.models["breast_cancer_mlp"].ready and not repo.models["breast_cancer_lr"].ready
    reason = repo.models["breast_cancer_lr"].reason
    assert "model.onnx: cannot be loaded: RuntimeError: warmup exploded" in reason


def test_server_process_starts_despite_broken_models(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_mlp")
    copy_model(example_repository, tmp_path, "breast_cancer_mlp", new_name="not_utf8")
    (tmp_path / "not_utf8" / "config.yaml").write_bytes(b"\xff\xfe\xfd")
    copy_model(example_repository, tmp_path, "breast_cancer_mlp", new_name="config_is_a_dir")
    (tmp_path / "config_is_a_dir" / "config.yaml").unlink()
    (tmp_path / "config_is_a_dir" / "config.yaml").mkdir()
    with ServerProcess(tmp_path) as server:
        stub = server.v2()
        assert stub.ModelReady(pb.ModelReadyRequest(name="breast_cancer_mlp"), timeout=TIMEOUT_S).ready
        assert not stub.ModelReady(pb.ModelReadyRequest(name="not_utf8"), timeout=TIMEOUT_S).ready
        reply = stub.ModelInfer(v2_request("breast_cancer_mlp", x()), timeout=TIMEOUT_S)
        assert reply.model_name == "breast_cancer_mlp"
        assert server.terminate() == 0
    log = "\n".join(server.lines)
    assert "not UTF-8 text" in log and "not a regular file" in log
