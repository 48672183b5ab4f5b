"""Native ``driftserve.v1.Predictor`` servicer: lean tensors ``{datatype, shape, bytes}``."""

from __future__ import annotations

from typing import Any

import grpc

from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc
from driftserve.core.errors import InvalidArgument, clip
from driftserve.core.tensors import decode_raw, encode_raw, v2_datatype
from driftserve.server.dataplane import InferenceRequest, InferenceResponse
from driftserve.server.grpc_common import InferenceBoundary, stream_concurrently
from driftserve.server.registration import HandlerRegistrar, add_service

PROTOCOL = "native"
STREAM_MAX_INFLIGHT = 512


def decode_request(message: pb.PredictRequest | InvalidArgument) -> InferenceRequest:
    """PredictRequest -> InferenceRequest (zero-copy views over the message's bytes).

    A message that did not parse arrives as its error (``registration.lenient_deserializer``) and is
    raised here, inside the boundary.
    """
    if isinstance(message, InvalidArgument):
        raise message
    inputs = {}
    for tensor in message.inputs:
        name = tensor.name
        if name in inputs:
            raise InvalidArgument(f"input '{clip(name)}' is given twice")
        inputs[name] = decode_raw(tensor.datatype, tensor.shape, tensor.data, name)
    return InferenceRequest(
        model=message.model,
        version=message.version,
        request_id=message.request_id,
        inputs=inputs,
        outputs=list(message.outputs),
        timeout_us=message.timeout_us,
        priority=message.priority,
    )


def encode_response(response: InferenceResponse) -> pb.PredictResponse:
    return pb.PredictResponse(
        model=response.model,
        version=response.version,
        request_id=response.request_id,
        outputs=[
            pb.Tensor(name=name, datatype=v2_datatype(array), shape=array.shape, data=encode_raw(array))
            for name, array in response.outputs.items()
        ],
    )


def add_predictor_servicer(servicer: PredictorServicer, server: HandlerRegistrar) -> None:
    """Register ``driftserve.v1.Predictor`` from its descriptor (``registration.add_service``): a generic
    handler only, and undecodable messages answered INVALID_ARGUMENT through the boundary."""
    add_service(
        server,
        pb.DESCRIPTOR.services_by_name["Predictor"],
        pb,
        servicer,
        handles_undecodable={"Predict", "PredictStream"},
    )


def _stream_error_reply(
    message: pb.PredictRequest | InvalidArgument, code: grpc.StatusCode, text: str
) -> pb.PredictStreamResponse:
    """The error reply of one stream message; one that did not parse has no request id."""
    request_id = message.request_id if isinstance(message, pb.PredictRequest) else ""
    return pb.PredictStreamResponse(error_code=code.value[0], error_message=text, request_id=request_id)


class PredictorServicer(pb_grpc.PredictorServicer):
    """Predict (unary) and PredictStream (bidirectional) over the shared data plane."""

    def __init__(self, boundary: InferenceBoundary) -> None:
        self.boundary = boundary

    async def Predict(
        self, request: pb.PredictRequest | InvalidArgument, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        return await self.boundary.serve(PROTOCOL, request, context, decode_request, encode_response)

    async def PredictStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        async def handle(message: pb.PredictRequest | InvalidArgument) -> pb.PredictStreamResponse:
            return await self.boundary.serve_for_stream(
                PROTOCOL,
                message,
                decode_request,
                lambda r: pb.PredictStreamResponse(response=encode_response(r), request_id=r.request_id),
                _stream_error_reply,
            )

        async for reply in stream_concurrently(request_iterator, handle, STREAM_MAX_INFLIGHT):
            yield reply
