"""The codec refuses what a request cannot justify, precisely, before allocating anything for it."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

from driftserve.api import grpc_service_pb2 as pb
from driftserve.core.errors import InvalidArgument
from driftserve.core.tensors import MAX_DIMS, MAX_ELEMENTS, decode_contents, decode_raw, element_count


def bytes_layout(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def refused(call: object, *args: object) -> str:
    with pytest.raises(InvalidArgument) as info:
        call(*args)  # type: ignore[operator]
    return info.value.message


# ---------------------------------------------------------------------- shapes
def test_raw_fast_path_is_a_zero_copy_view() -> None:
    data = np.arange(60, dtype=np.float32).tobytes()
    array = decode_raw("FP32", [2, 30], data, "input")
    assert array.shape == (2, 30) and not array.flags.writeable
    assert array.base is not None and array[1, 29] == 59


@pytest.mark.parametrize(
    "shape,fragment",
    [
        ([0, 2**63 - 1], f"declares {2**63 - 1} elements; a request carries at most {MAX_ELEMENTS}"),
        ([0, 2**31, 2**31, 4], "declares 18446744073709551616 elements"),
        ([1] * 100, f"shape has 100 dimensions; at most {MAX_DIMS} are supported"),
        ([2**32, 2**32], f"shape [4294967296, 4294967296] declares {2**64} elements; a request carries at most"),
        ([2**20, 30], "0 bytes of raw data but shape [1048576, 30] of FP32 needs 125829120 bytes"),
        ([-1, 30], "shape [-1, 30] has a negative dimension; dimensions must be >= 0"),
        ([-2, -30], "has a negative dimension"),
        ([2, 30], "0 bytes of raw data but shape [2, 30] of FP32 needs 240 bytes (60 elements x 4)"),
    ],
)
def test_bad_raw_shapes_are_invalid_argument(shape: list[int], fragment: str) -> None:
    data = b"" if shape[0] != -2 else b"\0" * 240
    message = refused(decode_raw, "FP32", shape, data, "input")
    assert message.startswith("input 'input': ") and fragment in message


def test_empty_tensors_decode_when_their_shape_is_sane() -> None:
    assert decode_raw("FP32", [0, 30], b"", "input").shape == (0, 30)
    assert decode_raw("INT64", [], np.int64(7).tobytes(), "x").shape == ()
    assert decode_raw("BYTES", [0, 3], b"", "x").shape == (0, 3)


def test_rank_is_checked_before_the_product() -> None:
    # Thousands of huge dimensions would make the product itself expensive; the rank refuses first.
    message = refused(decode_raw, "FP32", [2**63 - 1] * 100_000, b"", "input")
    assert "100000 dimensions" in message and len(message) < 200


def test_element_count_is_exact() -> None:
    assert element_count([3, 4, 5], "x") == 60
    assert element_count([MAX_ELEMENTS], "x") == MAX_ELEMENTS
    assert element_count([0, MAX_ELEMENTS], "x") == 0
    with pytest.raises(InvalidArgument, match="declares"):
        element_count([MAX_ELEMENTS + 1], "x")


def test_long_names_and_datatypes_are_clipped() -> None:
    message = refused(decode_raw, "FP32", [1], b"", "n" * 10_000)
    assert "(10000 characters)" in message and len(message) < 400
    message = refused(decode_raw, "D" * 5_000, [1], b"", "input")
    assert "unsupported datatype 'DDD" in message and "(5000 characters)" in message and len(message) < 400


# ---------------------------------------------------------------------- BYTES
def test_bytes_round_trip() -> None:
    data = bytes_layout(b"a", b"", b"\xff" * 3, "é".encode())
    array = decode_raw("BYTES", [2, 2], data, "text")
    assert array.shape == (2, 2) and array.dtype == np.object_
    assert list(array.reshape(-1)) == [b"a", b"", b"\xff" * 3, "é".encode()]


@pytest.mark.parametrize(
    "count,fragment",
    [
        (2**40, f"declares {2**40} elements; a request carries at most {MAX_ELEMENTS}"),
        (2**26, f"shape declares {2**26} BYTES elements but 4 bytes of data hold at most 1 "),
        (2, "shape declares 2 BYTES elements but 4 bytes of data hold at most 1 "),
    ],
)
def test_bytes_count_beyond_the_payload_costs_nothing(count: int, fragment: str) -> None:
    tracemalloc.start()
    try:
        message = refused(decode_raw, "BYTES", [count], b"\0\0\0\0", "text")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fragment in message
    assert peak < 64 * 1024


@pytest.mark.parametrize(
    "data,fragment",
    [
        (bytes_layout(b"ab") + b"\0\0", "BYTES data ends after 1 of 2 elements"),
        (struct.pack("<I", 100) + b"x" * 4, "BYTES element 0 claims 100 bytes past the end"),
        (bytes_layout(b"ab", b"cd") + b"zz", "2 trailing bytes after 2 BYTES elements"),
    ],
)
def test_bad_bytes_layouts(data: bytes, fragment: str) -> None:
    assert fragment in refused(decode_raw, "BYTES", [2], data, "text")


# ---------------------------------------------------------------------- typed contents
def contents(**fields: list[object]) -> pb.InferTensorContents:
    return pb.InferTensorContents(**fields)  # type: ignore[arg-type]


def test_contents_decode() -> None:
    array = decode_contents("FP32", [2, 2], contents(fp32_contents=[1.0, 2.0, float("nan"), float("inf")]), "x")
    assert array.dtype == np.float32 and array.shape == (2, 2) and np.isnan(array[1, 0])
    array = decode_contents("BYTES", [2], contents(bytes_contents=[b"a", b"bc"]), "x")
    assert list(array) == [b"a", b"bc"]
    assert decode_contents("INT8", [2], contents(int_contents=[-128, 127]), "x").tolist() == [-128, 127]
    assert decode_contents("FP16", [2], contents(fp32_contents=[1.0, 1e10]), "x").tolist() == [1.0, float("inf")]


@pytest.mark.parametrize(
    "datatype,shape,given,fragment",
    [
        ("FP32", [2**30], {"fp32_contents": [1.0]}, "1 values in contents.fp32_contents but shape [1073741824]"),
        ("BYTES", [2**30], {"bytes_contents": [b"a"]}, "1 values in contents.bytes_contents but shape"),
        ("FP32", [2**40], {"fp32_contents": [1.0]}, f"declares {2**40} elements"),
        ("FP32", [0, 2**63 - 1], {}, "declares 9223372036854775807 elements"),
        ("FP32", [1] * 65, {"fp32_contents": [1.0]}, "shape has 65 dimensions"),
        (
            "INT8",
            [2],
            {"int_contents": [1, 300]},
            "contents.int_contents holds values from 1 to 300; INT8 holds -128 to 127",
        ),
        ("UINT16", [1], {"uint_contents": [70000]}, "UINT16 holds 0 to 65535"),
        ("FP32", [2], {"int_contents": [1, 2]}, "0 values in contents.fp32_contents"),
    ],
)
def test_bad_contents(datatype: str, shape: list[int], given: dict[str, list[object]], fragment: str) -> None:
    assert fragment in refused(decode_contents, datatype, shape, contents(**given), "input 'x'")
