"""KServe V2 REST through Triton's own ``tritonclient.http``, unchanged, against a real server.

Health, metadata, readiness, config, statistics, inference (JSON and binary tensors, FP32, INT64,
BYTES, output selection), the repository extension, and the same numbers as the gRPC path.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto
from tritonclient.utils import InferenceServerException

from driftserve import __version__
from examples.build_repository import load_split
from tests.server.support import InProcessServer, copy_model, write_identity_model

MLP = "breast_cancer_mlp"
IDENTITY_CONFIG = "max_batch_size: 8\n"
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def repository(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rest-models")
    copy_model(example_repository, root, MLP)
    copy_model(example_repository, root, "breast_cancer_lr")
    write_identity_model(root / "ints", TensorProto.INT64, IDENTITY_CONFIG)
    write_identity_model(root / "words", TensorProto.STRING, IDENTITY_CONFIG)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[InProcessServer]:
    with InProcessServer(repository) as running:
        yield running


@contextlib.contextmanager
def http_client(server: InProcessServer, **options: Any) -> Iterator[httpclient.InferenceServerClient]:
    """A tritonclient.http client, freed in this thread when done.

    Its gevent pool may only be joined from the thread that made it, and its ``__del__`` joins it:
    left to the garbage collector, it could be collected on the server's loop thread and fail.
    """
    holder = [httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=TIMEOUT_S, **options)]
    try:
        yield holder[0]
    finally:
        holder.pop().close()
        gc.collect()


@pytest.fixture
def client(server: InProcessServer) -> Iterator[httpclient.InferenceServerClient]:
    with http_client(server) as c:
        yield c


@pytest.fixture(scope="module")
def holdout(example_repository: Path) -> np.ndarray:
    x, _, _ = load_split(example_repository / MLP / "data" / "holdout.npz")
    return np.ascontiguousarray(x[:5], dtype=np.float32)


def _input(name: str, array: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "driftserve" and meta["version"] == __version__
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_metadata_readiness_and_config_match_grpc(
    client: httpclient.InferenceServerClient, server: InProcessServer
) -> None:
    meta = client.get_model_metadata(MLP)
    assert meta == {
        "name": MLP,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ],
    }
    assert client.get_model_metadata(MLP, "1") == meta
    assert client.is_model_ready(MLP) and client.is_model_ready(MLP, "1")
    assert not client.is_model_ready(MLP, "7") and not client.is_model_ready("nope")
    config = client.get_model_config(MLP)
    with grpcclient.InferenceServerClient(server.address) as grpc_client:
        grpc_config = grpc_client.get_model_config(MLP, as_json=True)["config"]
    # tritonclient's gRPC JSON keeps protobuf's strings for 64-bit integers; REST gives numbers.
    assert config["name"] == grpc_config["name"] == MLP
    assert config["max_batch_size"] == int(grpc_config["max_batch_size"]) == 64
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [30], **_defaults(config)}]
    assert [int(d) for d in grpc_config["input"][0]["dims"]] == config["input"][0]["dims"]


def _defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The input's fields besides name, type and dims (printed with their defaults)."""
    return {k: v for k, v in config["input"][0].items() if k not in ("name", "data_type", "dims")}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_fp32_infer_gives_the_grpc_numbers(
    client: httpclient.InferenceServerClient, server: InProcessServer, holdout: np.ndarray, binary: bool
) -> None:
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = client.infer(MLP, [_input("input", holdout, "FP32", binary)], outputs=outputs, request_id="r-7")
    response = result.get_response()
    assert response["id"] == "r-7" and response["model_name"] == MLP and response["model_version"] == "1"
    assert all(("data" in o) != binary for o in response["outputs"])
    with grpcclient.InferenceServerClient(server.address) as grpc_client:
        tensor = grpcclient.InferInput("input", list(holdout.shape), "FP32")
        tensor.set_data_from_numpy(holdout)
        expected = grpc_client.infer(MLP, [tensor])
    for name in ("label", "probabilities"):
        got, want = result.as_numpy(name), expected.as_numpy(name)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_int64_and_bytes_round_trip_json_and_binary(client: httpclient.InferenceServerClient) -> None:
    ints = np.array([[1, -2, 3], [2**40, 0, -(2**62)]], dtype=np.int64)
    words = np.array([[b"a", b"bb", b""], [b"drift", b"serve", "é".encode()]], dtype=np.object_)
    for binary in (True, False):
        out = [httpclient.InferRequestedOutput("y", binary_data=binary)]
        got = client.infer("ints", [_input("x", ints, "INT64", binary)], outputs=out).as_numpy("y")
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ints)
        got = client.infer("words", [_input("x", words, "BYTES", binary)], outputs=out).as_numpy("y")
        assert got.shape == (2, 3)
        # Binary BYTES come back as bytes; JSON BYTES as the strings they were.
        assert [[bytes(v) if binary else v.encode() for v in row] for row in got.tolist()] == words.tolist()


def test_output_selection_and_mixed_binary(client: httpclient.InferenceServerClient, holdout: np.ndarray) -> None:
    only = client.infer(
        MLP,
        [_input("input", holdout, "FP32", True)],
        outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False)],
    )
    response = only.get_response()
    assert [o["name"] for o in response["outputs"]] == ["probabilities"]
    assert len(response["outputs"][0]["data"]) == holdout.shape[0] * 2
    assert only.as_numpy("label") is None
    mixed = client.infer(
        MLP,
        [_input("input", holdout, "FP32", False)],
        outputs=[
            httpclient.InferRequestedOutput("label", binary_data=True),
            httpclient.InferRequestedOutput("probabilities", binary_data=False),
        ],
    ).get_response()
    by_name = {o["name"]: o for o in mixed["outputs"]}
    assert by_name["label"]["parameters"] == {"binary_data_size": holdout.shape[0] * 8}
    assert "data" in by_name["probabilities"]
    # No output named: every output, in binary (tritonclient sets binary_data_output).
    every = client.infer(MLP, [_input("input", holdout, "FP32", True)]).get_response()
    assert {o["name"] for o in every["outputs"]} == {"label", "probabilities"}
    assert all("binary_data_size" in o["parameters"] for o in every["outputs"])


def test_errors_reach_tritonclient_with_status_and_message(
    client: httpclient.InferenceServerClient, holdout: np.ndarray
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [_input("input", holdout, "FP32", True)])
    assert info.value.status() == "404"
    assert "unknown model 'nope'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer(MLP, [_input("input", holdout[:, :29].copy(), "FP32", False)])
    assert info.value.status() == "400" and "input" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer(MLP, [_input("input", holdout, "FP32", True)], outputs=[httpclient.InferRequestedOutput("z")])
    assert info.value.status() == "400" and "'z'" in info.value.message()


def test_statistics_count_rest_requests(client: httpclient.InferenceServerClient, holdout: np.ndarray) -> None:
    def successes() -> int:
        stats = client.get_inference_statistics("breast_cancer_lr")["model_stats"]
        return sum(s["inference_stats"]["success"]["count"] for s in stats)

    before = successes()
    for _ in range(3):
        client.infer("breast_cancer_lr", [_input("input", holdout, "FP32", True)])
    assert successes() == before + 3
    every = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} >= {MLP, "breast_cancer_lr", "ints", "words"}
    one = client.get_inference_statistics("breast_cancer_lr", "2")["model_stats"]
    assert [(s["name"], s["version"]) for s in one] == [("breast_cancer_lr", "2")]
    assert isinstance(one[0]["inference_count"], int)


def test_repository_index_unload_and_load(client: httpclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} >= {(MLP, "READY"), ("ints", "READY"), ("words", "READY")}
    ints = np.array([[1, 2, 3]], dtype=np.int64)
    client.unload_model("ints")
    try:
        assert not client.is_model_ready("ints")
        with pytest.raises(InferenceServerException) as info:
            client.infer("ints", [_input("x", ints, "INT64", True)])
        assert info.value.status() in ("404", "503"), info.value
        assert ("ints", "READY") not in {(m["name"], m["state"]) for m in client.get_model_repository_index()}
    finally:
        client.load_model("ints")
    assert client.is_model_ready("ints")
    np.testing.assert_array_equal(client.infer("ints", [_input("x", ints, "INT64", True)]).as_numpy("y"), ints)
    with pytest.raises(InferenceServerException) as info:
        client.load_model("not_a_model")
    assert info.value.status() == "404" and "not_a_model" in info.value.message()


def test_concurrent_requests_each_get_their_own_answer(server: InProcessServer) -> None:
    # tritonclient.http's own concurrency: 8 connections, requests in flight on all of them at once.
    # (Its clients run on gevent and must stay in the thread that made them, hence not threads.)
    with http_client(server, concurrency=8) as c:
        sent = {}
        for k in range(96):
            ints = np.array([[k, -k, k * 1000]] * (1 + k % 4), dtype=np.int64)
            sent[str(k)] = (ints, c.async_infer("ints", [_input("x", ints, "INT64", k % 2 == 0)], request_id=str(k)))
        for key, (ints, pending) in sent.items():
            result = pending.get_result(timeout=TIMEOUT_S)
            assert result.get_response()["id"] == key
            np.testing.assert_array_equal(result.as_numpy("y"), ints)


def test_rest_requests_are_counted_with_protocol_rest(
    client: httpclient.InferenceServerClient, server: InProcessServer, holdout: np.ndarray
) -> None:
    before = server.metric("driftserve_server_requests_total", model=MLP, protocol="rest", code="OK")
    client.infer(MLP, [_input("input", holdout, "FP32", True)])
    with pytest.raises(InferenceServerException):
        client.infer(MLP, [_input("input", holdout[:, :3].copy(), "FP32", True)])
    assert server.metric("driftserve_server_requests_total", model=MLP, protocol="rest", code="OK") == before + 1
    assert server.metric("driftserve_server_requests_total", model=MLP, protocol="rest", code="INVALID_ARGUMENT") >= 1
