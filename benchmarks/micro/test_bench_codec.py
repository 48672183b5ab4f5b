"""Micro-benchmarks of the request path: tensor decode/encode and batcher overhead per request.

Run: ``python -m pytest benchmarks/micro/test_bench_codec.py --benchmark-only -p no:cacheprovider``
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftserve.api import grpc_service_pb2 as pb
from driftserve.core.config import BatchingConfig
from driftserve.core.tensors import decode_raw, encode_raw
from driftserve.server.batcher import Batcher
from driftserve.server.dataplane import InferenceResponse
from driftserve.server.grpc_v2 import decode_request, encode_response
from driftserve.server.metrics import ServerMetrics
from driftserve.server.statistics import ModelStatistics
from driftserve.server.v2_wire import ResponseEncoder


@pytest.mark.parametrize("rows", [1, 32, 1024])
def test_decode_raw_fp32(benchmark: Any, rows: int) -> None:
    data = np.random.default_rng(0).random((rows, 30)).astype(np.float32).tobytes()
    result = benchmark(decode_raw, "FP32", [rows, 30], data, "input")
    assert result.shape == (rows, 30)


@pytest.mark.parametrize("rows", [1, 32, 1024])
def test_decode_v2_request_message(benchmark: Any, rows: int) -> None:
    x = np.random.default_rng(0).random((rows, 30)).astype(np.float32)
    wire = pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=x.shape)],
        raw_input_contents=[x.tobytes()],
    ).SerializeToString()

    def parse_and_decode() -> Any:
        return decode_request(pb.ModelInferRequest.FromString(wire))

    request = benchmark(parse_and_decode)
    assert request.inputs["input"].shape == (rows, 30)


@pytest.mark.parametrize("rows", [1, 32, 1024])
def test_encode_v2_response_message(benchmark: Any, rows: int) -> None:
    outputs = {"label": np.zeros(rows, np.int64), "probabilities": np.zeros((rows, 2), np.float32)}
    response = InferenceResponse("m", "1", "id", outputs)
    wire = benchmark(lambda: encode_response(response).SerializeToString())
    assert len(wire) > rows * 16


@pytest.mark.parametrize("rows", [1, 32, 1024])
def test_encode_v2_response_wire(benchmark: Any, rows: int) -> None:
    """What ModelInfer does instead of the above: cached output layout, bytes joined directly."""
    outputs = {"label": np.zeros(rows, np.int64), "probabilities": np.zeros((rows, 2), np.float32)}
    response = InferenceResponse("m", "1", "id", outputs)
    encoder = ResponseEncoder()
    wire = benchmark(encoder.encode, response)
    assert wire == encode_response(response).SerializeToString()


def test_encode_raw_bytes_tensor(benchmark: Any) -> None:
    words = np.array([b"drift"] * 256, dtype=np.object_)
    assert len(benchmark(encode_raw, words)) == 256 * 9


class _EchoModel:
    name, version, batched, max_batch_size, instances = "echo", 1, True, 64, 1

    def run(self, inputs: dict[str, np.ndarray], instance: int = 0) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}


@pytest.mark.parametrize("concurrent", [1, 32])
def test_batcher_overhead_per_request(benchmark: Any, concurrent: int) -> None:
    """Event-loop cost of submitting ``concurrent`` one-row requests through a batcher whose
    model does nothing: what batching adds per request, divided by ``concurrent`` in the table."""
    loop = asyncio.new_event_loop()
    x = np.zeros((1, 30), np.float32)

    async def make() -> Batcher:
        return Batcher(
            _EchoModel(),
            BatchingConfig(max_queue_delay_us=0),
            ModelStatistics(),  # type: ignore[arg-type]
            ServerMetrics(CollectorRegistry()),
        )

    batcher = loop.run_until_complete(make())

    async def burst() -> None:
        await asyncio.gather(*(batcher.submit({"x": x}, 1) for _ in range(concurrent)))

    benchmark(lambda: loop.run_until_complete(burst()))
    loop.run_until_complete(batcher.close())
    loop.close()
