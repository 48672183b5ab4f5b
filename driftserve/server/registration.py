"""Registering a gRPC service from its descriptor, the way both of driftserve's services are.

Like a generated ``add_..._to_server``, except: the service is a generic handler only (see
``core.grpc_auth.GenericHandlersOnly``, which also puts the bearer-token check in front of it),
and request deserializers never raise. A deserializer that raises inside gRPC ends the call as
UNKNOWN before any handler runs (and ends a whole stream); here a message that does not parse
reaches its handler as the ``InvalidArgument`` to raise, so the client gets INVALID_ARGUMENT (an
error reply, on a stream).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from types import ModuleType
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from driftserve.core.errors import DriftserveError, InvalidArgument, clip
from driftserve.server.grpc_common import abort_on_error

_M = TypeVar("_M", bound=Message)
_Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
_RPC_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def lenient_deserializer(request_class: type[_M]) -> Callable[[bytes], _M | InvalidArgument]:
    """``request_class.FromString`` that never raises: bytes that do not parse become the error.

    A deserializer that raises inside gRPC ends the call as UNKNOWN before any handler runs (and
    ends a whole stream); returned instead, the error is raised by the handler, through the
    boundary. On valid bytes this is the parse gRPC did anyway, plus one call.
    """
    parse = request_class.FromString
    full_name = request_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> _M | InvalidArgument:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or whatever else a parser raises on junk
            return InvalidArgument(f"request is not a valid {full_name}: {_parse_failure(exc)}")

    return deserialize


def _parse_failure(exc: Exception) -> str:
    """What protobuf found wrong, without its "Error parsing message with type ..." preamble."""
    text = str(exc)
    if text.startswith("Error parsing message") and "': " in text:
        text = text.split("': ", 1)[1]
    return clip(text or type(exc).__name__, 200)


class HandlerRegistrar(Protocol):
    """Where services are registered: a ``grpc.aio.Server``, or ``GenericHandlersOnly`` over one."""

    def add_generic_rpc_handlers(self, handlers: Any) -> None: ...


def add_service(
    server: HandlerRegistrar,
    service: ServiceDescriptor,
    messages: ModuleType,
    servicer: object,
    handles_undecodable: Collection[str],
    serializers: Mapping[str, Callable[[Any], bytes]] | None = None,
) -> None:
    """Register ``service`` like a generated ``add_..._to_server``, built from its descriptor.

    Differences: the service is a generic handler only (see ``GenericHandlersOnly``); every
    request deserializer is ``lenient_deserializer``; methods named in ``handles_undecodable``
    raise the error of an undecodable message themselves (the inference RPCs, through the boundary,
    so it is counted), and every other method, unary, is answered INVALID_ARGUMENT for it before the
    servicer runs; ``serializers`` replaces the response serializer of the methods it names.
    """
    handlers = {}
    for method in service.methods:
        request_class = getattr(messages, method.input_type.name)
        response_class = getattr(messages, method.output_type.name)
        handler = getattr(servicer, method.name)
        if method.name not in handles_undecodable:
            if method.client_streaming or method.server_streaming:
                raise ValueError(f"{service.full_name}.{method.name} streams: it must handle undecodable messages")
            handler = _refusing_undecodable(handler)
        handlers[method.name] = _RPC_HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)](
            handler,
            request_deserializer=lenient_deserializer(request_class),
            response_serializer=(serializers or {}).get(method.name, response_class.SerializeToString),
        )
    # Generic only, not also registered: see core.grpc_auth.GenericHandlersOnly.
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _refusing_undecodable(handler: _Handler) -> _Handler:
    """A unary handler that answers a message that did not parse with its INVALID_ARGUMENT."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, InvalidArgument):
            return await abort_on_error(context, lambda: _raise(request))
        return await handler(request, context)

    return call


async def _raise(error: DriftserveError) -> NoReturn:
    raise error
