"""Tensor datatypes and the codec between wire bytes and NumPy arrays.

Both protocols carry tensors as ``{datatype, shape, bytes}``. Decoding is zero-copy
(``np.frombuffer`` over the message's bytes); encoding is one ``tobytes`` per output. BYTES
tensors use Triton's raw layout: each element is a 4-byte little-endian length then its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from driftserve.core.errors import InvalidArgument

# Open Inference Protocol datatype name -> NumPy dtype (little-endian, as on the wire).
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}
NUMPY_TO_V2[np.dtype(np.str_)] = "BYTES"

# ONNX Runtime type strings (session.get_inputs()[i].type) -> V2 datatype.
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# V2 datatype -> the typed `contents` field of InferTensorContents that carries it.
V2_TO_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_LENGTH = struct.Struct("<I")


def numpy_dtype(datatype: str, what: str) -> np.dtype:
    """The NumPy dtype of a V2 datatype name, or INVALID_ARGUMENT naming ``what``."""
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        raise InvalidArgument(
            f"{what}: unsupported datatype '{datatype}'; expected one of {', '.join(sorted(V2_TO_NUMPY))}"
        ) from None


def element_count(shape: Sequence[int], what: str) -> int:
    """Number of elements of ``shape``; negative dimensions are a client error."""
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidArgument(f"{what}: shape {list(shape)} has a negative dimension")
        count *= dim
    return count


def decode_raw(datatype: str, shape: Sequence[int], data: bytes, name: str, kind: str = "input") -> np.ndarray:
    """Decode raw little-endian bytes of tensor ``name`` into an array of ``shape``, without copying.

    ``kind`` only words the error messages ("input 'x': ..."), built only when there is an error.
    """
    dtype = V2_TO_NUMPY.get(datatype)
    if dtype is None or datatype == "BYTES":
        what = f"{kind} '{name}'"
        numpy_dtype(datatype, what)
        return _decode_bytes_elements(data, element_count(shape, what), what).reshape(tuple(shape))
    dims = shape[:]  # a list from protobuf's repeated field: several times cheaper than tuple()
    count = math.prod(dims)
    if len(data) != count * dtype.itemsize or (dims and min(dims) < 0):
        what = f"{kind} '{name}'"
        count = element_count(dims, what)
        raise InvalidArgument(
            f"{what}: {len(data)} bytes of raw data but shape {list(dims)} of {datatype} "
            f"needs {count * dtype.itemsize} bytes ({count} elements x {dtype.itemsize})"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def decode_contents(datatype: str, shape: Sequence[int], contents: object, what: str) -> np.ndarray:
    """Decode the typed ``InferTensorContents`` field that matches ``datatype``."""
    dtype = numpy_dtype(datatype, what)
    count = element_count(shape, what)
    field = V2_TO_CONTENTS_FIELD[datatype]
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidArgument(f"{what}: {len(values)} values in contents.{field} but shape {list(shape)} needs {count}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = list(values)
        return array.reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


# Numeric dtypes whose memory layout already is the wire layout: encoding is one ``tobytes``.
_WIRE_READY_DTYPES = frozenset(dtype for name, dtype in V2_TO_NUMPY.items() if name != "BYTES")


def encode_raw(array: np.ndarray) -> bytes:
    """Encode an array as raw little-endian bytes (BYTES: length-prefixed elements)."""
    if array.dtype in _WIRE_READY_DTYPES:
        return array.tobytes()
    if array.dtype == np.object_ or array.dtype.kind in ("U", "S"):
        return _encode_bytes_elements(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


def v2_datatype(array: np.ndarray) -> str:
    """The V2 datatype name of an array's dtype."""
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return NUMPY_TO_V2[array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype]
    except KeyError:
        raise InvalidArgument(f"output dtype {array.dtype} has no Open Inference Protocol datatype") from None


def _decode_bytes_elements(data: bytes, count: int, what: str) -> np.ndarray:
    out = np.empty(count, dtype=np.object_)
    offset = 0
    view = memoryview(data)
    for i in range(count):
        if offset + 4 > len(data):
            raise InvalidArgument(f"{what}: BYTES data ends after {i} of {count} elements")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidArgument(f"{what}: BYTES element {i} claims {length} bytes past the end")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(data):
        raise InvalidArgument(f"{what}: {len(data) - offset} trailing bytes after {count} BYTES elements")
    return out


def _encode_bytes_elements(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
