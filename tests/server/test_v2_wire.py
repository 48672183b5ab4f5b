"""The pre-encoded ModelInfer response is byte-identical to serializing the protobuf message."""

from __future__ import annotations

import numpy as np
import pytest

from driftserve.api import grpc_service_pb2 as pb
from driftserve.core.errors import InvalidArgument
from driftserve.server.dataplane import InferenceResponse
from driftserve.server.grpc_v2 import encode_response
from driftserve.server.v2_wire import ResponseEncoder, serialize_infer_response

DTYPES = ("<f4", "<f8", "<i8", "<i4", "<u1", "?", "<f2", ">f4", ">i8")


def random_response(rng: np.random.Generator, request_id: str) -> InferenceResponse:
    outputs = {}
    for index in range(int(rng.integers(1, 4))):
        rows = int(rng.integers(0, 300))
        shape = (rows, *(int(d) for d in rng.integers(1, 5, size=int(rng.integers(0, 3)))))
        dtype = np.dtype(DTYPES[int(rng.integers(len(DTYPES)))])
        outputs[f"out_{index}"] = (rng.normal(size=shape) * 100).astype(dtype)
    return InferenceResponse(f"model_{int(rng.integers(3))}", str(int(rng.integers(0, 3)) or ""), request_id, outputs)


def test_encoded_bytes_equal_the_serialized_message_for_random_responses() -> None:
    rng = np.random.default_rng(7)
    encoder = ResponseEncoder()
    for case in range(400):
        request_id = "" if case % 3 == 0 else "req-" + "x" * int(rng.integers(0, 200)) + "-é"
        response = random_response(rng, request_id)
        encoded = encoder.encode(response)
        assert encoded == encode_response(response).SerializeToString()
        # Repeated layouts come from the cache and must still match.
        assert encoder.encode(response) == encoded


def test_large_outputs_use_multi_byte_lengths() -> None:
    response = InferenceResponse("m", "1", "id", {"big": np.arange(50_000, dtype=np.float32)})
    assert ResponseEncoder().encode(response) == encode_response(response).SerializeToString()


def test_bytes_outputs_round_trip() -> None:
    response = InferenceResponse("m", "1", "", {"text": np.array([b"a", b"", "é".encode()], dtype=object)})
    assert ResponseEncoder().encode(response) == encode_response(response).SerializeToString()


def test_unsupported_output_dtype_is_a_clear_error() -> None:
    response = InferenceResponse("m", "1", "", {"c": np.zeros(2, dtype=np.complex64)})
    with pytest.raises(InvalidArgument, match="complex64"):
        ResponseEncoder().encode(response)


def test_serializer_passes_bytes_through_and_serializes_messages() -> None:
    message = pb.ModelInferResponse(model_name="m", id="x")
    assert serialize_infer_response(b"\x0a\x01m") == b"\x0a\x01m"
    assert serialize_infer_response(message) == message.SerializeToString()
