"""REST requests tritonclient cannot make: malformed bodies, each a 4xx with a message; never a 500 or a hang.

Also the HTTP code of every gRPC status the data plane uses, readiness, draining at shutdown and
the metrics port answering /metrics only. Requests are plain ``http.client`` calls.
"""

from __future__ import annotations

import gzip
import http.client
import json
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto

from driftserve.api import grpc_service_pb2 as pb
from tests.server.support import InProcessServer, copy_model, v2_request, wait_until, write_identity_model

MLP = "breast_cancer_mlp"
SLOW = "mlp_slow_queue"
MAX_BODY_BYTES = 64 * 1024
TIMEOUT_S = 60.0
SLOW_QUEUE_CONFIG = (
    "max_batch_size: 64\n"
    "batching: {enabled: true, max_queue_delay_us: 3000000, max_queue_size: 3, adaptive_delay: false}\n"
)


@pytest.fixture(scope="module")
def server(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    root = tmp_path_factory.mktemp("rest-errors")
    copy_model(example_repository, root, MLP)
    copy_model(example_repository, root, MLP, new_name=SLOW, config=SLOW_QUEUE_CONFIG)
    write_identity_model(root / "ints", TensorProto.INT64, "max_batch_size: 8\n")
    write_identity_model(root / "words", TensorProto.STRING, "max_batch_size: 8\n")
    with InProcessServer(root, max_receive_message_bytes=MAX_BODY_BYTES) as running:
        yield running


def request(
    server: InProcessServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request on its own connection: status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        conn.close()


def infer(
    server: InProcessServer, document: Any, model: str = MLP, binary: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST an inference request (``document`` JSON, then ``binary``): status and the JSON reply."""
    head = document if isinstance(document, bytes) else json.dumps(document).encode()
    extra = dict(headers or {})
    if binary:
        extra.setdefault("Inference-Header-Content-Length", str(len(head)))
    status, reply_headers, body = request(server, "POST", f"/v2/models/{model}/infer", head + binary, extra)
    assert reply_headers["Content-Type"].startswith("application/json"), (status, body[:200])
    return status, json.loads(body)


def fp32_input(rows: int = 1, **changes: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [rows, 30], "data": [0.5] * (30 * rows)}
    tensor.update(changes)
    return {"inputs": [tensor]}


def assert_error(reply: tuple[int, dict[str, Any]], status: int, *words: str) -> None:
    code, document = reply
    assert code == status, document
    assert set(document) == {"error"}, document
    for word in words:
        assert word in document["error"], document["error"]


# ------------------------------------------------------------------------------ bodies that are wrong


def test_invalid_json_and_wrong_shapes_of_document(server: InProcessServer) -> None:
    assert_error(infer(server, b"{not json"), 400, "not valid JSON")
    assert_error(infer(server, b"\xff\xfe"), 400, "JSON")
    assert_error(infer(server, b"[1, 2]"), 400, "must be a JSON object, got a list")
    assert_error(infer(server, b""), 400, "not valid JSON")
    assert_error(infer(server, {"inputs": "x"}), 400, "'inputs' must be a list")
    assert_error(infer(server, {}), 400, "'inputs' must be a list")
    assert_error(infer(server, {"inputs": [5]}), 400, "inputs[0] must be an object")
    assert_error(infer(server, {"inputs": [{"datatype": "FP32"}]}), 400, "inputs[0] needs a string 'name'")
    assert_error(infer(server, {**fp32_input(), "id": 5}), 400, "'id' must be a string")
    assert_error(infer(server, {**fp32_input(), "outputs": [{"nam": "x"}]}), 400, "string 'name'")
    assert_error(infer(server, b"[" * 50_000), 400, "JSON")


def test_wrong_types_and_counts_in_tensors(server: InProcessServer) -> None:
    assert_error(infer(server, fp32_input(datatype="FP99")), 400, "unsupported datatype 'FP99'", "FP32")
    assert_error(infer(server, fp32_input(datatype=32)), 400, "'datatype' must be a string")
    assert_error(infer(server, fp32_input(shape="1,30")), 400, "'shape' must be a list of integers")
    assert_error(infer(server, fp32_input(shape=[1, -30])), 400, "negative dimension")
    assert_error(infer(server, fp32_input(shape=[1, 30.0])), 400, "'shape' must be a list of integers")
    assert_error(infer(server, fp32_input(data=["a"] * 30)), 400, "FP32 data must be numbers, got strings")
    assert_error(infer(server, fp32_input(data=[None] * 30)), 400, "FP32 data must be numbers")
    assert_error(infer(server, fp32_input(data=[True] * 30)), 400, "FP32 data must be numbers, got booleans")
    assert_error(infer(server, fp32_input(data=[0.5] * 29)), 400, "29 values in 'data' but shape [1, 30] needs 30")
    assert_error(infer(server, fp32_input(data=[[0.5] * 30, [0.5] * 29])), 400, "equal-length rows")
    assert_error(infer(server, fp32_input(rows=2, shape=[1, 30])), 400, "60 values in 'data' but shape [1, 30]")
    assert_error(
        infer(server, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30]}]}), 400, "needs 'data'"
    )
    # What the model checks, the same words as over gRPC.
    assert_error(infer(server, fp32_input(shape=[1, 29], data=[0.5] * 29)), 400, "input 'input'")
    assert_error(infer(server, fp32_input(datatype="FP64")), 400, "FP64")
    ints = {"name": "x", "datatype": "INT64", "shape": [1, 3]}
    assert_error(infer(server, {"inputs": [{**ints, "data": [1.5, 2, 3]}]}, "ints"), 400, "INT64 data must be integers")
    assert_error(infer(server, {"inputs": [{**ints, "data": [2**64, 2, 3]}]}, "ints"), 400, "INT64 data")
    words = {"name": "x", "datatype": "BYTES", "shape": [1, 3]}
    assert_error(
        infer(server, {"inputs": [{**words, "data": ["a", 2, "c"]}]}, "words"), 400, "BYTES data must be strings"
    )
    assert_error(infer(server, {"inputs": [{**words, "data": ["a"]}]}, "words"), 400, "1 values in 'data'")


def test_parameters_of_the_request(server: InProcessServer) -> None:
    assert_error(infer(server, {**fp32_input(), "parameters": []}), 400, "'parameters' must be an object")
    assert_error(
        infer(server, {**fp32_input(), "parameters": {"timeout": "soon"}}), 400, "'timeout' must be an integer"
    )
    assert_error(infer(server, {**fp32_input(), "parameters": {"priority": -1}}), 400, "'priority' must be >= 0")
    assert_error(
        infer(server, {**fp32_input(), "parameters": {"binary_data_output": "yes"}}), 400, "must be true or false"
    )
    # Unknown parameters are ignored, as over gRPC.
    assert infer(server, {**fp32_input(), "parameters": {"sequence_id": 0}})[0] == 200


def test_binary_sizes_that_do_not_add_up(server: InProcessServer) -> None:
    x = np.zeros((1, 30), np.float32).tobytes()
    binary_input = {"name": "input", "datatype": "FP32", "shape": [1, 30], "parameters": {"binary_data_size": len(x)}}
    assert infer(server, {"inputs": [binary_input]}, binary=x)[0] == 200
    assert_error(infer(server, {"inputs": [binary_input]}, binary=x + b"\0"), 400, "add up to 120")
    assert_error(infer(server, {"inputs": [binary_input]}, binary=x[:-4]), 400, "goes past the end")
    short = {**binary_input, "parameters": {"binary_data_size": 116}}
    assert_error(infer(server, {"inputs": [short]}, binary=x[:-4]), 400, "116 bytes of raw data", "needs 120")
    negative = {**binary_input, "parameters": {"binary_data_size": -1}}
    assert_error(infer(server, {"inputs": [negative]}, binary=x), 400, "binary_data_size must be an integer >= 0")
    both = {**binary_input, "data": [0.0] * 30}
    assert_error(infer(server, {"inputs": [both]}, binary=x), 400, "both 'data' and parameters.binary_data_size")
    head = json.dumps({"inputs": [binary_input]}).encode()
    for length in ("abc", str(len(head) + len(x) + 1), "-1"):
        reply = infer(server, head, binary=x, headers={"Inference-Header-Content-Length": length})
        assert_error(reply, 400, "Inference-Header-Content-Length")
    # Binary sizes without the header: the sizes point past a body that is all JSON.
    assert_error(infer(server, {"inputs": [binary_input]}), 400, "goes past the end")
    # BYTES whose length prefix claims more than there is.
    words = struct.pack("<I", 50) + b"abc"
    tensor = {"name": "x", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(words)}}
    assert_error(infer(server, {"inputs": [tensor]}, "words", binary=words), 400, "claims 50 bytes past the end")


def test_error_messages_are_the_grpc_ones(server: InProcessServer) -> None:
    x = np.zeros((2, 29), np.float32)
    with pytest.raises(grpc.RpcError) as info:
        server.v2().ModelInfer(v2_request(MLP, x), timeout=TIMEOUT_S)
    tensor = {"name": "input", "datatype": "FP32", "shape": [2, 29], "parameters": {"binary_data_size": x.nbytes}}
    status, document = infer(server, {"inputs": [tensor]}, binary=x.tobytes())
    assert status == 400 and document["error"] == info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        server.v2().ModelInfer(v2_request("nope", x), timeout=TIMEOUT_S)
    status, document = infer(server, fp32_input(), model="nope")
    assert status == 404 and document["error"] == info.value.details()


def test_body_over_the_limit_is_413(server: InProcessServer) -> None:
    big = fp32_input(rows=1000)  # 30k values: about 150 KB of JSON, past 64 KiB
    assert_error(infer(server, big), 413, f"limit of {MAX_BODY_BYTES} bytes", "--max-receive-message-bytes")
    assert infer(server, fp32_input())[0] == 200  # and the server goes on


def test_unsupported_content_unknown_paths_and_methods(server: InProcessServer) -> None:
    body = json.dumps(fp32_input()).encode()
    assert_error(
        infer(server, body, headers={"Content-Type": "multipart/form-data; boundary=x"}), 415, "application/json"
    )
    assert infer(server, body, headers={"Content-Type": "application/json"})[0] == 200
    status, _, reply = request(server, "GET", "/v2/nowhere")
    assert status == 404 and "no endpoint /v2/nowhere" in json.loads(reply)["error"]
    status, headers, reply = request(server, "GET", f"/v2/models/{MLP}/infer")
    assert status == 405 and headers["Allow"] == "POST" and "use POST" in json.loads(reply)["error"]
    status, _, reply = request(server, "GET", "/v2/models/nope")
    assert status == 404 and "unknown model 'nope'" in json.loads(reply)["error"]
    status, _, reply = request(server, "GET", f"/v2/models/{MLP}/versions/9/config")
    assert status == 404 and json.loads(reply)["error"]
    status, _, reply = request(server, "POST", "/v2/repository/index", b"{bad")
    assert status == 400 and "not valid JSON" in json.loads(reply)["error"]
    status, _, reply = request(server, "POST", "/v2/repository/index", json.dumps({"ready": True}).encode())
    assert status == 200 and all(row["state"] == "READY" for row in json.loads(reply))


def test_compressed_bodies(server: InProcessServer) -> None:
    body = json.dumps(fp32_input()).encode()
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        assert infer(server, packed, headers={"Content-Encoding": encoding})[0] == 200
    assert_error(infer(server, body, headers={"Content-Encoding": "compress"}), 415, "Content-Encoding 'compress'")
    assert_error(infer(server, b"not gzip at all", headers={"Content-Encoding": "gzip"}), 400, "could not be read")
    # 10 MB of spaces compress to about 10 KB: the limit counts the decompressed bytes.
    bomb = gzip.compress(b" " * 10_000_000)
    assert len(bomb) < MAX_BODY_BYTES
    assert_error(infer(server, bomb, headers={"Content-Encoding": "gzip"}), 413, "limit")


def test_load_with_a_config_override_is_refused(server: InProcessServer) -> None:
    override = json.dumps({"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}}).encode()
    status, _, reply = request(server, "POST", "/v2/repository/models/ints/load", override)
    assert status == 501 and "['config', 'file:1/model.onnx'] are not supported" in json.loads(reply)["error"]
    status, _, reply = request(server, "POST", "/v2/repository/models/ints/load", b'{"parameters": 3}')
    assert status == 400 and "'parameters' must be an object" in json.loads(reply)["error"]


# ------------------------------------------------------------------------ statuses of the data plane


def test_timeout_parameter_expires_in_the_queue_504(server: InProcessServer) -> None:
    reply = infer(server, {**fp32_input(), "parameters": {"timeout": 100_000}}, model=SLOW)
    assert_error(reply, 504, "in the queue")


def test_queue_full_is_429_with_retry_after(server: InProcessServer) -> None:
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(infer(server, fp32_input(), model=SLOW)[0])) for _ in range(3)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: server.metric("driftserve_batcher_queue_depth_requests", model=SLOW) == 3, TIMEOUT_S)
    started = time.monotonic()
    body = json.dumps(fp32_input()).encode()
    status, headers, reply = request(server, "POST", f"/v2/models/{SLOW}/infer", body)
    assert status == 429 and "is full" in json.loads(reply)["error"]
    assert headers["Retry-After"] == "3"
    assert time.monotonic() - started < 2.5, "a full queue must refuse at once"
    for t in threads:
        t.join(TIMEOUT_S)
    assert results == [200, 200, 200]


def test_infer_json_reply_shape(server: InProcessServer) -> None:
    status, document = infer(server, {**fp32_input(rows=2), "id": "abc"})
    assert status == 200
    assert document["id"] == "abc" and document["model_name"] == MLP and document["model_version"] == "1"
    by_name = {o["name"]: o for o in document["outputs"]}
    assert by_name["label"]["datatype"] == "INT64" and by_name["label"]["shape"] == [2]
    assert by_name["probabilities"]["shape"] == [2, 2] and len(by_name["probabilities"]["data"]) == 4
    # Nested data is the same tensor as flat data.
    nested = infer(server, fp32_input(rows=2, data=[[0.5] * 30, [0.5] * 30]))[1]
    assert nested["outputs"] == document["outputs"]


# ------------------------------------------------------------------- readiness, shutdown, metrics port


def test_ready_is_503_until_a_model_is_ready(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    (tmp_path / "broken" / "config.yaml").write_text("max_batch_size: 8\n")
    with InProcessServer(tmp_path) as server:
        assert request(server, "GET", "/v2/health/live")[0] == 200
        status, _, body = request(server, "GET", "/v2/health/ready")
        assert status == 503 and "not ready" in json.loads(body)["error"]
        assert not server.v2().ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT_S).ready
        assert request(server, "GET", "/v2/models/broken/ready")[0] in (404, 503)


def test_shutdown_drains_rest_requests_in_flight(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, MLP, new_name=SLOW, config=SLOW_QUEUE_CONFIG.replace("3000000", "1500000"))
    server = InProcessServer(tmp_path, drain_period_s=1.0)
    try:
        assert request(server, "GET", "/v2/health/ready")[0] == 200
        results: list[tuple[int, dict[str, Any]]] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(infer(server, {**fp32_input(), "id": str(i)}, SLOW)))
            for i in range(3)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: server.metric("driftserve_batcher_queue_depth_requests", model=SLOW) == 3, TIMEOUT_S)
        stopper = threading.Thread(target=server.terminate)
        stopper.start()
        wait_until(lambda: request(server, "GET", "/v2/health/ready")[0] == 503, TIMEOUT_S)
        for t in threads:
            t.join(TIMEOUT_S)
        stopper.join(TIMEOUT_S)
        assert sorted((status, doc.get("id")) for status, doc in results) == [(200, "0"), (200, "1"), (200, "2")]
        with pytest.raises(OSError):
            request(server, "GET", "/v2/health/live")
    finally:
        server.terminate()


def test_metrics_port_answers_metrics_only(server: InProcessServer) -> None:
    base = f"http://127.0.0.1:{server.metrics_port}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=TIMEOUT_S) as reply:
        assert reply.status == 200 and b"driftserve_server_requests_total" in reply.read()
    for path in ("/", "/v2/health/ready", "/metrics/x", "/favicon.ico"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}{path}", timeout=TIMEOUT_S)
        info.value.close()  # it holds the connection
        assert info.value.code == 404, path
