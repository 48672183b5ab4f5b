"""Property-based fuzzing over the wire: whatever a client sends, the server answers with a status a
client can act on, never INTERNAL or UNKNOWN, never hangs, and keeps serving.

One in-process server holds the example models. Hypothesis sends random V2 and native requests
(unary and streaming): datatypes valid and not, shapes huge, negative or of many dimensions, byte
lengths that match or not, long and non-ASCII names, versions, parameters, duplicated inputs, NaN
and infinity, and random bytes that are no protobuf message at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftserve.api import driftserve_pb2 as dpb
from driftserve.api import grpc_service_pb2 as pb
from driftserve.core.tensors import V2_TO_NUMPY
from tests.server.support import ServerProcess, copy_model, v2_request

# 250 examples in CI (a few seconds); the long run sets DRIFTSERVE_FUZZ_EXAMPLES, e.g. to 20000.
FUZZ_EXAMPLES = int(os.environ.get("DRIFTSERVE_FUZZ_EXAMPLES", "250"))
# No request may cost more memory than its bytes justify: the largest fuzzed message is ~1 MiB,
# and the server keeps nothing of a request once it is answered.
RSS_GROWTH_LIMIT_MIB = 64

CALL_TIMEOUT_S = 20
MODELS = ("breast_cancer_lr", "breast_cancer_mlp")
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
}
BY_NAME = {code.name: code for code in grpc.StatusCode}
BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
V2_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
NATIVE_SERVICE = dpb.DESCRIPTOR.services_by_name["Predictor"]


@dataclass
class Reply:
    """What one call came back with: its status codes (a stream has one per reply)."""

    codes: list[grpc.StatusCode]
    # A server-side timeout was asked for: DEADLINE_EXCEEDED is then the right answer.
    timeout_requested: bool = False


@pytest.fixture(scope="module")
def server(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server process of its own, so its memory is measured apart from the fuzzer's (Hypothesis
    keeps what it has drawn, which grows with the number of examples)."""
    repo = tmp_path_factory.mktemp("fuzz")
    for name in MODELS:
        copy_model(example_repository, repo, name)
    with ServerProcess(repo, "--max-receive-message-bytes", str(1 << 20)) as proc:
        yield proc
        assert proc.terminate() == 0


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as channel:
        yield channel


def _rss_mib(pid: int) -> float:
    """A process's resident memory now."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def rss_before_fuzzing(server: ServerProcess) -> float:
    return _rss_mib(server.process.pid)


# ---------------------------------------------------------------------- strategies
utf8 = st.characters(codec="utf-8")
names = st.one_of(
    st.sampled_from(["input", "label", "probabilities", "", "x" * 12_000, "é" * 3_000]),
    st.text(utf8, max_size=12),
)
model_names = st.one_of(
    st.sampled_from([*MODELS, "nope", "../outside/evil", "..", "m" * 12_000]),
    st.text(utf8, max_size=12),
)
versions = st.one_of(
    st.sampled_from(["", "", "1", "2", "01", "7", "²", "③", "9" * 4301, str(2**63), "-1", " 1"]),
    st.text(utf8, max_size=4),
)
datatypes = st.one_of(st.sampled_from(sorted(V2_TO_NUMPY)), st.sampled_from(["FP32"] * 4), st.text(utf8, max_size=8))
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
shapes = st.one_of(
    st.lists(st.integers(min_value=0, max_value=70), max_size=4),
    st.tuples(st.integers(min_value=0, max_value=17), st.just(30)).map(list),
    st.lists(int64s, max_size=6),
    st.lists(st.sampled_from([0, 1, 2**31, 2**32, 2**40, 2**63 - 1, -1]), max_size=4),
    st.lists(st.just(1), min_size=60, max_size=100),
)
special_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
payloads = st.one_of(
    st.binary(max_size=600),
    st.lists(special_floats, max_size=600).map(lambda v: np.asarray(v, np.float32).tobytes()),
    st.integers(min_value=1, max_value=17).map(lambda rows: np.full((rows, 30), np.nan, np.float32).tobytes()),
)


@st.composite
def parameters(draw: Any) -> dict[str, Any]:
    """V2 parameters: maybe timeout/priority, of any kind of value, plus junk keys."""
    keys = draw(st.lists(st.one_of(st.sampled_from(["timeout", "priority"]), st.text(utf8, max_size=6)), max_size=3))
    kinds = st.one_of(
        int64s.map(lambda v: ("int64_param", v)),
        st.integers(min_value=0, max_value=2**64 - 1).map(lambda v: ("uint64_param", v)),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda v: ("double_param", v)),
        st.booleans().map(lambda v: ("bool_param", v)),
        st.text(utf8, max_size=6).map(lambda v: ("string_param", v)),
    )
    return {key: draw(kinds) for key in keys}


@st.composite
def v2_requests(draw: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=draw(model_names), model_version=draw(versions), id=draw(st.text(utf8, max_size=8))
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        tensor = request.inputs.add(name=draw(names), datatype=draw(datatypes), shape=draw(shapes))
        if raw:
            request.raw_input_contents.append(draw(payloads))
        elif draw(st.booleans()):
            values = draw(st.lists(special_floats, max_size=70))
            tensor.contents.fp32_contents.extend(values)
        else:
            tensor.contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=70)))
    if raw and draw(st.booleans()):  # one raw entry too many or too few
        request.raw_input_contents.append(draw(payloads))
    if request.inputs and draw(st.booleans()):  # a duplicated input
        request.inputs.add().CopyFrom(request.inputs[0])
        if raw:
            request.raw_input_contents.append(request.raw_input_contents[0])
    for name in draw(st.lists(names, max_size=3)):
        request.outputs.add(name=name)
    for key, (kind, value) in draw(parameters()).items():
        setattr(request.parameters[key], kind, value)
    if draw(st.booleans()):  # half of the requests start from a valid one
        base = v2_request(draw(st.sampled_from(MODELS)), np.zeros((draw(st.integers(1, 4)), 30), np.float32))
        base.model_version = request.model_version
        for key, value in request.parameters.items():
            base.parameters[key].CopyFrom(value)
        return base
    return request


@st.composite
def native_requests(draw: Any) -> dpb.PredictRequest:
    tensors = [
        dpb.Tensor(name=draw(names), datatype=draw(datatypes), shape=draw(shapes), data=draw(payloads))
        for _ in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    return dpb.PredictRequest(
        model=draw(model_names),
        version=draw(versions),
        request_id=draw(st.text(utf8, max_size=8)),
        inputs=tensors,
        outputs=draw(st.lists(names, max_size=3)),
        timeout_us=draw(st.one_of(st.just(0), st.integers(min_value=0, max_value=2**64 - 1))),
        priority=draw(st.integers(min_value=0, max_value=2**32 - 1)),
    )


def has_timeout(request: pb.ModelInferRequest) -> bool:
    return "timeout" in request.parameters


# ---------------------------------------------------------------------- calls
def unary(call: Callable[..., Any], request: Any, timeout_requested: bool = False) -> Reply:
    try:
        call(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as err:
        return Reply([err.code()], timeout_requested)
    return Reply([grpc.StatusCode.OK], timeout_requested)


def v2_stream(channel: grpc.Channel, requests: list[pb.ModelInferRequest]) -> Reply:
    stub_call = channel.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    codes = []
    for reply in stub_call(iter(requests), timeout=CALL_TIMEOUT_S):
        codes.append(BY_NAME[reply.error_message.split(":", 1)[0]] if reply.error_message else grpc.StatusCode.OK)
    assert len(codes) == len(requests)
    return Reply(codes, any(has_timeout(r) for r in requests))


def native_stream(channel: grpc.Channel, requests: list[dpb.PredictRequest]) -> Reply:
    stub_call = channel.stream_stream(
        "/driftserve.v1.Predictor/PredictStream",
        request_serializer=dpb.PredictRequest.SerializeToString,
        response_deserializer=dpb.PredictStreamResponse.FromString,
    )
    codes = [BY_VALUE[reply.error_code] for reply in stub_call(iter(requests), timeout=CALL_TIMEOUT_S)]
    assert len(codes) == len(requests)
    return Reply(codes, any(r.timeout_us for r in requests))


def raw_bytes(channel: grpc.Channel, method: str, data: bytes) -> Reply:
    """Bytes straight onto the wire, to any method of either service (streams get one message)."""
    service = V2_SERVICE if method in V2_SERVICE.methods_by_name else NATIVE_SERVICE
    path = f"/{service.full_name}/{method}"
    if service.methods_by_name[method].client_streaming:
        replies = channel.stream_stream(path, request_serializer=None, response_deserializer=None)
        try:
            count = sum(1 for _ in replies(iter([data]), timeout=CALL_TIMEOUT_S))
        except grpc.RpcError as err:
            return Reply([err.code()])
        assert count == 1
        return Reply([grpc.StatusCode.OK])
    return unary(channel.unary_unary(path, request_serializer=None, response_deserializer=None), data)


actions = st.one_of(
    v2_requests().map(lambda r: ("ModelInfer", r)),
    native_requests().map(lambda r: ("Predict", r)),
    st.lists(v2_requests(), min_size=1, max_size=3).map(lambda rs: ("ModelStreamInfer", rs)),
    st.lists(native_requests(), min_size=1, max_size=3).map(lambda rs: ("PredictStream", rs)),
    st.tuples(
        st.sampled_from(["ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"]), model_names, versions
    ),
    st.tuples(
        st.sampled_from(["RepositoryModelLoad", "RepositoryModelUnload"]), model_names.filter(lambda n: n not in MODELS)
    ),
    st.tuples(
        st.just("raw"),
        st.sampled_from([m.name for m in V2_SERVICE.methods] + [m.name for m in NATIVE_SERVICE.methods]),
        st.binary(max_size=300),
    ),
)


def perform(channel: grpc.Channel, action: tuple[Any, ...]) -> Reply:
    from driftserve.api import driftserve_pb2_grpc, grpc_service_pb2_grpc

    v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    native = driftserve_pb2_grpc.PredictorStub(channel)
    kind = action[0]
    if kind == "ModelInfer":
        return unary(v2.ModelInfer, action[1], has_timeout(action[1]))
    if kind == "Predict":
        return unary(native.Predict, action[1], action[1].timeout_us > 0)
    if kind == "ModelStreamInfer":
        return v2_stream(channel, action[1])
    if kind == "PredictStream":
        return native_stream(channel, action[1])
    if kind == "raw":
        return raw_bytes(channel, action[1], action[2])
    if kind in ("RepositoryModelLoad", "RepositoryModelUnload"):
        message = getattr(pb, f"{kind}Request")(model_name=action[1])
        return unary(getattr(v2, kind), message)
    message = getattr(pb, f"{kind}Request")(name=action[1], version=action[2])
    return unary(getattr(v2, kind), message)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(action=actions)
def test_every_reply_is_a_status_a_client_can_act_on(
    channel: grpc.Channel, rss_before_fuzzing: float, action: tuple[Any, ...]
) -> None:
    reply = perform(channel, action)
    allowed = ALLOWED | ({grpc.StatusCode.DEADLINE_EXCEEDED} if reply.timeout_requested else set())
    assert set(reply.codes) <= allowed, (reply.codes, action[0])


def test_server_still_serves_after_fuzzing(
    server: ServerProcess, channel: grpc.Channel, rss_before_fuzzing: float
) -> None:
    """Runs after the fuzz test in this module: the same server answers a valid request, and
    no request cost more memory than its bytes justify (RSS stays within a bound)."""
    growth = _rss_mib(server.process.pid) - rss_before_fuzzing
    print(f"fuzzing: RSS {rss_before_fuzzing:.0f} MiB -> {rss_before_fuzzing + growth:.0f} MiB")
    assert growth < RSS_GROWTH_LIMIT_MIB, f"RSS grew by {growth:.0f} MiB while fuzzing"
    for model in MODELS:
        reply = server.v2(channel).ModelInfer(v2_request(model, np.zeros((2, 30), np.float32)), timeout=CALL_TIMEOUT_S)
        assert reply.model_name == model and len(reply.raw_output_contents) == len(reply.outputs) > 0
    assert server.metric("driftserve_server_requests_total", code="INTERNAL") == 0
    assert server.metric("driftserve_server_requests_total", code="UNKNOWN") == 0
