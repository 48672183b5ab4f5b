"""Request payloads: tensor specs from the server's metadata or the command line, rows from a
data file or random, pre-serialized into request bytes so the generator spends no time on them.

Streaming requests need a unique id each: both `PredictRequest.request_id` and
`ModelInferRequest.id` are string field 3, and protobuf lets a later occurrence of a scalar field
override an earlier one, so `with_request_id` appends the id to the serialized template.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftserve.api import driftserve_pb2, grpc_service_pb2
from driftserve.core.tensors import V2_TO_NUMPY

logger = logging.getLogger(__name__)

# The server's own table, less BYTES (the load generator sends numeric tensors only).
NUMPY_DTYPES: dict[str, np.dtype] = {k: v for k, v in V2_TO_NUMPY.items() if k != "BYTES"}
# Distinct payloads per run: enough to defeat any response cache, few enough to pre-encode.
DEFAULT_POOL_SIZE = 64
_REQUEST_ID_TAG = b"\x1a"  # field 3, wire type 2 (length-delimited)


class PayloadError(ValueError):
    """Payload settings that do not fit the model's inputs or the data file."""


@dataclass(frozen=True)
class TensorSpec:
    """An input as the server describes it; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def parse_shape(text: str) -> tuple[int, ...]:
    """`-1,30` or `1x30` → (-1, 30)."""
    try:
        dims = tuple(int(d) for d in re.split(r"[,x]", text.strip()))
    except ValueError:
        raise PayloadError(f"bad shape {text!r}: expected integers like '-1,30'") from None
    if not dims or any(d == 0 or d < -1 for d in dims):
        raise PayloadError(f"bad shape {text!r}: dimensions must be positive or -1")
    return dims


def concrete_shape(spec: TensorSpec, rows: int) -> tuple[int, ...]:
    """The shape one request sends: a variable first dimension becomes `rows`."""
    if rows <= 0:
        raise PayloadError(f"rows per request must be positive, got {rows}")
    dims = list(spec.shape)
    if dims and dims[0] == -1:
        dims[0] = rows
    if any(d == -1 for d in dims):
        raise PayloadError(
            f"input {spec.name!r} has variable dimensions beyond the first {spec.shape}; give a concrete --shape"
        )
    return tuple(dims)


def _load_rows(path: Path, spec: TensorSpec, single_input: bool) -> np.ndarray:
    try:
        with np.load(path) as data:
            key = spec.name if spec.name in data.files else ("X" if single_input else None)
            if key is None or key not in data.files:
                raise PayloadError(
                    f"data file {path} has no array for input {spec.name!r} "
                    f"(keys: {data.files}; expected 'X' or the input name)"
                )
            rows = np.asarray(data[key])
    except (OSError, ValueError) as exc:
        raise PayloadError(f"cannot read data file {path}: {exc}") from None
    if rows.ndim < 1 or rows.shape[0] == 0:
        raise PayloadError(f"data file {path}: array {key!r} has no rows")
    if spec.shape[1:] and tuple(rows.shape[1:]) != tuple(spec.shape[1:]):
        raise PayloadError(
            f"data file {path}: rows of shape {rows.shape[1:]} do not fit input {spec.name!r} of shape {spec.shape}"
        )
    return rows.astype(NUMPY_DTYPES[spec.datatype], copy=False)


def _random(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = NUMPY_DTYPES[spec.datatype]
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.integers(0, 100, size=shape).astype(dtype)


def build_arrays(
    specs: list[TensorSpec],
    rows: int,
    data_file: str | Path | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """`pool_size` request payloads, each a dict input name → array of `rows` rows."""
    if not specs:
        raise PayloadError("the model has no inputs to send")
    for spec in specs:
        if spec.datatype not in NUMPY_DTYPES:
            raise PayloadError(
                f"input {spec.name!r} has datatype {spec.datatype!r}; supported: {', '.join(NUMPY_DTYPES)}"
            )
    rng = np.random.default_rng(seed)
    sources = {s.name: _load_rows(Path(data_file), s, len(specs) == 1) if data_file else None for s in specs}
    pool: list[dict[str, np.ndarray]] = []
    for _ in range(pool_size):
        payload: dict[str, np.ndarray] = {}
        for spec in specs:
            shape = concrete_shape(spec, rows)
            source = sources[spec.name]
            if source is None:
                payload[spec.name] = _random(spec, shape, rng)
            else:
                take = rng.integers(0, source.shape[0], size=shape[0])
                payload[spec.name] = np.ascontiguousarray(source[take]).reshape(shape)
        pool.append(payload)
    return pool


def serialize_requests(
    arrays: list[dict[str, np.ndarray]],
    specs: list[TensorSpec],
    protocol: str,
    model: str,
    version: str = "",
) -> list[bytes]:
    """Serialized PredictRequest (native) or ModelInferRequest (v2, raw inputs) per payload."""
    out: list[bytes] = []
    for payload in arrays:
        if protocol == "native":
            msg = driftserve_pb2.PredictRequest(model=model, version=version)
            for spec in specs:
                arr = payload[spec.name]
                msg.inputs.add(name=spec.name, datatype=spec.datatype, shape=arr.shape, data=arr.tobytes())
            out.append(msg.SerializeToString())
        elif protocol == "v2":
            req = grpc_service_pb2.ModelInferRequest(model_name=model, model_version=version)
            for spec in specs:
                arr = payload[spec.name]
                req.inputs.add(name=spec.name, datatype=spec.datatype, shape=arr.shape)
                req.raw_input_contents.append(arr.tobytes())
            out.append(req.SerializeToString())
        else:
            raise PayloadError(f"unknown protocol {protocol!r}; expected native|v2")
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def with_request_id(template: bytes, request_id: str) -> bytes:
    """The serialized request with its id (field 3 of both request types) set to `request_id`."""
    raw = request_id.encode()
    return template + _REQUEST_ID_TAG + _varint(len(raw)) + raw
