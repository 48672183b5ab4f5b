"""KServe V2 REST bodies to ``InferenceRequest`` and ``InferenceResponse`` to bodies.

A request body is JSON, optionally followed by binary tensor data (Triton's binary tensor
extension): the ``Inference-Header-Content-Length`` header says how many leading bytes are the
JSON, and each input whose ``parameters.binary_data_size`` is set takes that many of the bytes
after it, in input order, in the raw layout the gRPC protocol uses (``core.tensors``). JSON
tensors carry ``data`` as a flat or nested list in row-major order; BYTES elements are strings.

Every check a client can fail raises ``InvalidArgument`` with what was wrong and what was
expected; nothing the client sends can make this module raise anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftserve.core.errors import InvalidArgument, clip
from driftserve.core.tensors import decode_raw, element_count, encode_raw, numpy_dtype, v2_datatype
from driftserve.server.dataplane import InferenceRequest, InferenceResponse

HEADER_LENGTH = "Inference-Header-Content-Length"
# NumPy kinds a JSON list may decode to, per kind of V2 datatype.
_INTEGER_KINDS = frozenset("iu")
_FLOAT_KINDS = frozenset("iuf")


@dataclass(slots=True)
class EncodedBody:
    """A response body and the headers that describe it."""

    body: bytes
    header_length: int | None  # the JSON part's length when binary data follows it

    @property
    def content_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part of a request body, by ``Inference-Header-Content-Length``."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length.strip())
    except ValueError:
        raise InvalidArgument(
            f"{HEADER_LENGTH} header is '{clip(header_length)}'; expected the JSON part's length in bytes"
        ) from None
    if not 0 <= length <= len(body):
        raise InvalidArgument(
            f"{HEADER_LENGTH} header is {length} but the body has {len(body)} bytes; "
            "it must be the length of the JSON part at the start of the body"
        )
    return body[:length], memoryview(body)[length:]


def parse_json(text: bytes) -> dict[str, Any]:
    """The request's JSON object, or INVALID_ARGUMENT saying why it is not one."""
    try:
        document = json.loads(text)
    except UnicodeDecodeError:
        raise InvalidArgument("request body is not UTF-8 JSON") from None
    except ValueError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument("request body is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"request body must be a JSON object, got {_json_type(document)}")
    return document


def decode_infer_request(
    model: str, version: str, document: dict[str, Any], binary: memoryview
) -> tuple[InferenceRequest, bool | set[str]]:
    """A V2 REST inference request -> InferenceRequest, and the outputs to send as binary data
    (True: every output, as ``binary_data_output`` asks when no output is named)."""
    inputs_json = document.get("inputs")
    if not isinstance(inputs_json, list):
        raise InvalidArgument(f"'inputs' must be a list of tensors, got {_json_type(inputs_json)}")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(inputs_json):
        name, array, used = _decode_input(index, tensor, binary, offset)
        if name in inputs:
            raise InvalidArgument(f"input '{clip(name)}' is given twice")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary)} bytes of binary data after the JSON but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    parameters = _object(document.get("parameters"), "request 'parameters'")
    binary_default = _bool_parameter(parameters, "binary_data_output", "request")
    outputs: list[str] = []
    binary_outputs: set[str] = set()
    outputs_json = document.get("outputs")
    if outputs_json is not None:
        if not isinstance(outputs_json, list):
            raise InvalidArgument(f"'outputs' must be a list, got {_json_type(outputs_json)}")
        for tensor in outputs_json:
            if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
                raise InvalidArgument("each of 'outputs' must be an object with a string 'name'")
            name = tensor["name"]
            outputs.append(name)
            output_parameters = _object(tensor.get("parameters"), f"output '{clip(name)}' parameters")
            if _bool_parameter(output_parameters, "binary_data", f"output '{clip(name)}'", binary_default):
                binary_outputs.add(name)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument(f"'id' must be a string, got {_json_type(request_id)}")
    request = InferenceRequest(model, version, request_id, inputs, outputs)
    request.timeout_us = _int_parameter(parameters, "timeout")
    request.priority = _int_parameter(parameters, "priority")
    return request, (True if binary_default and not outputs_json else binary_outputs)


def encode_infer_response(response: InferenceResponse, binary_outputs: bool | set[str]) -> EncodedBody:
    """InferenceResponse -> the V2 REST body; outputs in ``binary_outputs`` (True: all) go as raw bytes."""
    every = binary_outputs is True
    described = []
    chunks = []
    for name, array in response.outputs.items():
        datatype = v2_datatype(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if every or (isinstance(binary_outputs, set) and name in binary_outputs):
            raw = encode_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [_text(item) for item in array.reshape(-1)]
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    document: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.request_id:
        document["id"] = response.request_id
    document["outputs"] = described
    head = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return EncodedBody(head, None)
    return EncodedBody(b"".join([head, *chunks]), len(head))


def _decode_input(index: int, tensor: object, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One input tensor: its name, its array, and how many binary bytes it took."""
    if not isinstance(tensor, dict):
        raise InvalidArgument(f"inputs[{index}] must be an object, got {_json_type(tensor)}")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise InvalidArgument(f"inputs[{index}] needs a string 'name', got {_json_type(name)}")
    what = f"input '{clip(name)}'"
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidArgument(f"{what}: 'datatype' must be a string such as \"FP32\", got {_json_type(datatype)}")
    shape = _shape(tensor.get("shape"), what)
    parameters = _object(tensor.get("parameters"), f"{what} parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidArgument(f"{what}: parameters.binary_data_size must be an integer >= 0, got {size!r:.100}")
        if "data" in tensor:
            raise InvalidArgument(f"{what}: has both 'data' and parameters.binary_data_size; give one")
        if offset + size > len(binary):
            raise InvalidArgument(
                f"{what}: binary_data_size {size} goes past the end of the binary data "
                f"({len(binary) - offset} bytes left after the JSON and earlier inputs)"
            )
        return name, decode_raw(datatype, shape, binary[offset : offset + size], name), size
    if "data" not in tensor:
        raise InvalidArgument(f"{what}: needs 'data' (or parameters.binary_data_size with binary data)")
    return name, _decode_json_data(datatype, shape, tensor["data"], what), 0


def _decode_json_data(datatype: str, shape: list[int], data: object, what: str) -> np.ndarray:
    """JSON ``data`` (flat or nested list, row-major) -> array of ``shape``, type-checked."""
    dtype = numpy_dtype(datatype, what)
    count = element_count(shape, what)
    if not isinstance(data, list):
        data = [data]  # a single value, as a scalar tensor's data may be written
    if datatype == "BYTES":
        items = _flatten(data, what)
        if len(items) != count:
            raise InvalidArgument(f"{what}: {len(items)} values in 'data' but shape {shape} needs {count}")
        if not all(isinstance(item, str) for item in items):
            raise InvalidArgument(f"{what}: BYTES data must be strings")
        array = np.empty(count, dtype=np.object_)
        array[:] = [item.encode("utf-8") for item in items]
        return array.reshape(shape)
    try:
        values = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgument(
            f"{what}: 'data' must be a list of numbers, flat or nested with equal-length rows"
        ) from None
    if values.size != count:
        raise InvalidArgument(f"{what}: {values.size} values in 'data' but shape {shape} needs {count}")
    kind = values.dtype.kind
    if count and datatype == "BOOL" and kind != "b":
        raise InvalidArgument(f"{what}: BOOL data must be true or false")
    if count and datatype != "BOOL":
        allowed = _INTEGER_KINDS if dtype.kind in _INTEGER_KINDS else _FLOAT_KINDS
        if kind not in allowed:
            expected = "integers" if dtype.kind in _INTEGER_KINDS else "numbers"
            raise InvalidArgument(f"{what}: {datatype} data must be {expected}, got {_kind_name(kind)}")
        if dtype.kind in _INTEGER_KINDS:
            info = np.iinfo(dtype)
            low, high = int(values.min()), int(values.max())
            if low < info.min or high > info.max:
                raise InvalidArgument(
                    f"{what}: data holds values from {low} to {high}; {datatype} holds {info.min} to {info.max}"
                )
    with np.errstate(over="ignore"):  # beyond the float range is inf, as IEEE rounding makes it
        return values.astype(dtype).reshape(shape)


def _flatten(data: list[Any], what: str) -> list[Any]:
    """Nested lists -> one flat list (row-major), without recursion."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 64:
                    raise InvalidArgument(f"{what}: 'data' is nested more than 64 deep")
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _shape(value: object, what: str) -> list[int]:
    if not isinstance(value, list) or not all(type(dim) is int for dim in value):
        raise InvalidArgument(f"{what}: 'shape' must be a list of integers, got {_json_type(value)}")
    element_count(value, what)
    return value


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be an object, got {_json_type(value)}")
    return value


def _bool_parameter(parameters: dict[str, Any], key: str, what: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} parameter '{key}' must be true or false, got {_json_type(value)}")
    return value


def _int_parameter(parameters: dict[str, Any], key: str) -> int:
    value = parameters.get(key, 0)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise InvalidArgument(f"parameter '{key}' must be an integer, got {_json_type(value)}")
    if value < 0:
        raise InvalidArgument(f"parameter '{key}' must be >= 0, got {value}")
    return value


def _text(item: object) -> str:
    """A BYTES element for JSON: UTF-8 text (invalid sequences replaced; ask for binary to get bytes)."""
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


def _json_type(value: object) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return "nothing" if value is None else names.get(type(value), type(value).__name__)


def _kind_name(kind: str) -> str:
    return {"U": "strings", "O": "mixed or non-numeric values", "b": "booleans", "f": "non-integers"}.get(kind, kind)
