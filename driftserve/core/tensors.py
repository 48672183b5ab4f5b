"""Tensor datatypes and the codec between wire bytes and NumPy arrays.

Both protocols carry tensors as ``{datatype, shape, bytes}``. Decoding is zero-copy
(an ``np.ndarray`` over the message's bytes); encoding is one ``tobytes`` per output. BYTES
tensors use Triton's raw layout: each element is a 4-byte little-endian length then its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from driftserve.core.errors import InvalidArgument, clip

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

# Most dimensions of a tensor: NumPy's own limit (NPY_MAXDIMS in NumPy 2).
MAX_DIMS = 64
# Most elements one request can declare. gRPC caps a message below 2 GiB and every element takes at
# least one byte of it (a BYTES element four), so no request can justify more; per request, the
# byte checks (raw length, BYTES prefixes, number of contents values) bound the sum over tensors.
MAX_ELEMENTS = 2**31 - 1


def numpy_dtype(datatype: str, what: str) -> np.dtype:
    """The NumPy dtype of a V2 datatype name, or INVALID_ARGUMENT naming ``what``."""
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        raise InvalidArgument(
            f"{what}: unsupported datatype '{clip(datatype)}'; expected one of {', '.join(sorted(V2_TO_NUMPY))}"
        ) from None


def element_count(shape: Sequence[int], what: str) -> int:
    """Number of elements of ``shape``, after checking it: a bad shape is a client error.

    At most ``MAX_DIMS`` dimensions, none negative, and no more than ``MAX_ELEMENTS`` elements,
    counting only the non-zero dimensions: NumPy refuses an empty array whose other dimensions
    overflow, so ``[0, 2**63 - 1]`` must be refused here, not fail inside ``reshape``.
    """
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"{what}: shape has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    if any(dim < 0 for dim in shape):
        raise InvalidArgument(f"{what}: shape {list(shape)} has a negative dimension; dimensions must be >= 0")
    declared = math.prod(dim for dim in shape if dim)  # exact: Python integers do not overflow
    if declared > MAX_ELEMENTS:
        raise InvalidArgument(
            f"{what}: shape {list(shape)} declares {declared} elements; a request carries at most {MAX_ELEMENTS}"
        )
    return math.prod(shape)


def decode_raw(
    datatype: str, shape: Sequence[int], data: bytes | memoryview, name: str, kind: str = "input"
) -> np.ndarray:
    """Decode raw little-endian bytes of tensor ``name`` into an array of ``shape``, without copying.

    ``kind`` only words the error messages ("input 'x': ..."), built only when there is an error.
    The fast path is a rank test, one product and one ``min``: any tensor that is empty, has too
    many dimensions, a negative one, or a byte length that does not match takes ``_check_raw``.
    """
    dtype = V2_TO_NUMPY.get(datatype)
    if dtype is None or datatype == "BYTES":
        what = f"{kind} '{clip(name)}'"
        numpy_dtype(datatype, what)
        return _decode_bytes_elements(data, element_count(shape, what), what).reshape(tuple(shape))
    dims = shape[:]  # a list from protobuf's repeated field: several times cheaper than tuple()
    # The rank is tested first: a product of thousands of huge dimensions is itself expensive.
    count = math.prod(dims) if len(dims) <= MAX_DIMS else -1
    if len(data) != count * dtype.itemsize or not count or (dims and min(dims) < 0):
        _check_raw(datatype, dtype, dims, data, f"{kind} '{clip(name)}'")
    # One constructor call over the message's bytes (no copy, read-only): half the cost of
    # ``np.frombuffer(...).reshape(...)``, which builds a flat array first. The length was checked.
    return np.ndarray(dims, dtype, data)


def _check_raw(datatype: str, dtype: np.dtype, dims: Sequence[int], data: bytes | memoryview, what: str) -> None:
    """The slow path of ``decode_raw``: raise on a bad shape or byte length; pass empty tensors."""
    count = element_count(dims, what)
    if len(data) != count * dtype.itemsize:
        raise InvalidArgument(
            f"{what}: {len(data)} bytes of raw data but shape {list(dims)} of {datatype} "
            f"needs {count * dtype.itemsize} bytes ({count} elements x {dtype.itemsize})"
        )


def decode_contents(datatype: str, shape: Sequence[int], contents: object, what: str) -> np.ndarray:
    """Decode the typed ``InferTensorContents`` field that matches ``datatype``.

    The count of values given is checked against the shape before anything is allocated, and
    integers are range-checked for the narrower datatypes they travel in a wider field for.
    """
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
    narrow = _NARROW_INTEGERS.get(datatype)
    if narrow is not None:
        wide_dtype, low, high = narrow
        wide = np.asarray(values, dtype=wide_dtype)
        if wide.size and (wide.min() < low or wide.max() > high):
            raise InvalidArgument(
                f"{what}: contents.{field} holds values from {wide.min()} to {wide.max()}; "
                f"{datatype} holds {low} to {high}"
            )
        return wide.astype(dtype).reshape(shape)
    if datatype == "FP16":
        with np.errstate(over="ignore"):  # FP16 travels as fp32: beyond 65504 is inf, as IEEE rounds it
            return np.asarray(values, dtype=dtype).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def _narrow_integer(datatype: str) -> tuple[np.dtype, int, int]:
    """The dtype of the wider contents field ``datatype`` travels in, and the range that fits."""
    info = np.iinfo(V2_TO_NUMPY[datatype])
    return (np.dtype("<i4") if info.min < 0 else np.dtype("<u4")), int(info.min), int(info.max)


# Integer datatypes carried in a wider contents field (int_contents, uint_contents).
_NARROW_INTEGERS = {name: _narrow_integer(name) for name in ("INT8", "INT16", "UINT8", "UINT16")}


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


def _decode_bytes_elements(data: bytes | memoryview, count: int, what: str) -> np.ndarray:
    """BYTES elements out of Triton's layout, checked against the payload before allocating.

    Each element takes at least its 4-byte length, so a count above ``len(data) // 4`` is refused
    before anything is allocated; elements are then parsed into a list that grows only with the
    bytes actually present. Four bytes declaring ``[2**40]`` cost nothing.
    """
    if count > len(data) // _LENGTH.size:
        raise InvalidArgument(
            f"{what}: shape declares {count} BYTES elements but {len(data)} bytes of data hold at most "
            f"{len(data) // _LENGTH.size} (each element starts with a 4-byte length)"
        )
    items: list[bytes] = []
    offset = 0
    end = len(data)
    view = memoryview(data)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidArgument(f"{what}: BYTES data ends after {i} of {count} elements")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > end:
            raise InvalidArgument(f"{what}: BYTES element {i} claims {length} bytes past the end")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != end:
        raise InvalidArgument(f"{what}: {end - offset} trailing bytes after {count} BYTES elements")
    out = np.empty(count, dtype=np.object_)
    out[:] = items
    return out


def _encode_bytes_elements(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
