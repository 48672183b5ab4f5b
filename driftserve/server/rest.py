"""KServe V2 / Triton REST (HTTP/JSON) on aiohttp, on the server's event loop, over the same data plane.

The endpoints ``tritonclient.http`` and KServe use: health, server and model metadata, model
readiness, config and statistics, inference (JSON tensors and Triton's binary tensor extension,
``rest_wire``) and Triton's repository extension (index, load, unload). Inference runs through the
same ``InferenceBoundary`` as gRPC's ModelInfer (protocol label ``rest``): the same validation,
batching, mirroring, metrics and error texts. Errors answer ``{"error": "..."}`` with the HTTP
status of the error's gRPC status (``HTTP_STATUS``); what only HTTP has (a body too large, a
content type or encoding it cannot be, an unknown path or method) gets its own 4xx, never a 500.

Security plugs in at creation: ``start_rest`` takes an ``ssl_context`` and an ``authorize``
callable that is awaited with the request and the route's scope (``"infer"`` for inference and
metadata, ``"admin"`` for repository load/unload; health is exempt) and raises a
``DriftserveError`` to refuse.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from prometheus_client import Counter

from driftserve import __version__
from driftserve.core.auth import TokenAuthority
from driftserve.core.errors import (
    DriftserveError,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    cap_message,
    clip,
    clip_list,
)
from driftserve.core.startup import StartupError, bind_problem
from driftserve.server.dataplane import InferenceRequest
from driftserve.server.grpc_common import InferenceBoundary
from driftserve.server.grpc_v2 import (
    EXTENSIONS,
    SERVER_NAME,
    model_config,
    model_metadata,
    model_statistics,
    repository_index,
)
from driftserve.server.repository import ModelRepository
from driftserve.server.rest_wire import (
    HEADER_LENGTH,
    EncodedBody,
    decode_infer_request,
    encode_infer_response,
    parse_json,
    split_body,
)

logger = logging.getLogger(__name__)

PROTOCOL = "rest"
# gRPC status of an error -> HTTP status of the REST answer.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,  # e.g. a candidate version that failed the rollout gate
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Request bodies an inference may carry; curl's default form type is accepted as what it holds (JSON).
BODY_TYPES = frozenset(
    ("", "application/json", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain")
)
# Content-Encodings a request body may use (aiohttp decompresses them; tritonclient can send both).
BODY_ENCODINGS = frozenset(("identity", "gzip", "deflate"))
SCOPE_INFER = "infer"
SCOPE_ADMIN = "admin"
Authorize = Callable[[web.Request, str], Awaitable[None]]


@dataclass
class RestServer:
    """A started REST site and what stopping it needs."""

    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        """Stop listening, let requests being answered finish (``shutdown_timeout_s``), close connections."""
        await self.runner.cleanup()


@dataclass
class _InferCall:
    """One inference call on its way through the boundary (``decode`` fills ``binary_outputs``)."""

    model: str
    version: str
    body: bytes
    header_length: str | None
    binary_outputs: bool | set[str] = field(default_factory=set)


class RestHandlers:
    """The V2 REST endpoints over the shared boundary and repository."""

    def __init__(
        self,
        boundary: InferenceBoundary,
        repository: ModelRepository,
        is_ready: Callable[[], bool],
        load: Callable[[str], Awaitable[object]] | None = None,
        unload: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.boundary = boundary
        self.repository = repository
        self.is_ready = is_ready
        # What the gRPC repository RPCs do (the server passes the rollout controller's: a managed
        # model's new version goes through the gate), else a plain (re)load and unload.
        self._load = load if load is not None else repository.load
        self._unload = unload if unload is not None else repository.unload

    # --------------------------------------------------------------------------------- health
    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        if self.is_ready():
            return web.Response(status=200)
        return _error(503, "server is not ready: no model is ready yet, or it is shutting down")

    # ------------------------------------------------------------------------------- metadata
    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: web.Request) -> web.Response:
        model, version = _model_version(request)
        return _message_json(model_metadata(self.repository, model, version))

    async def model_ready(self, request: web.Request) -> web.Response:
        model, version = _model_version(request)
        self.repository.route(model, version)  # NOT_FOUND / UNAVAILABLE say why not
        if not self.boundary.dataplane.ready:
            return _error(503, "server is shutting down")
        return web.Response(status=200)

    async def model_config(self, request: web.Request) -> web.Response:
        model, version = _model_version(request)
        return _message_json(model_config(self.repository, model, version))

    async def model_stats(self, request: web.Request) -> web.Response:
        model, version = _model_version(request)
        return _message_json(model_statistics(self.repository, model, version))

    # ----------------------------------------------------------------------------- repository
    async def repository_index(self, request: web.Request) -> web.Response:
        document = await _optional_json(request)
        ready = document.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument("'ready' must be true or false")
        rows = repository_index(self.repository, ready).models
        return web.json_response([_message_dict(row) for row in rows])

    async def load(self, request: web.Request) -> web.Response:
        parameters = (await _optional_json(request)).get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidArgument("'parameters' must be an object")
        overrides = [key for key in parameters if key == "config" or key.startswith("file:")]
        if overrides:
            # Triton loads a config or files sent with the request; here models come from the repository only.
            raise _HttpError(
                501,
                f"load parameters {clip_list(overrides)} are not supported: the model is loaded from its directory "
                "in the repository; change config.yaml or the model files there, then load",
            )
        await self._load(request.match_info["model"])
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        await _optional_json(request)
        await self._unload(request.match_info["model"])
        return web.Response(status=200)

    # ------------------------------------------------------------------------------ inference
    async def infer(self, request: web.Request) -> web.Response:
        _check_content_type(request)
        model, version = _model_version(request)
        call = _InferCall(model, version, await _read_body(request), request.headers.get(HEADER_LENGTH))
        reply, error = await self.boundary.serve_plain(
            PROTOCOL, call, _decode_call, lambda response: encode_infer_response(response, call.binary_outputs)
        )
        if error is not None:
            headers = {}
            if isinstance(error, ResourceExhausted):
                headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_ms / 1000)))
            return _error(HTTP_STATUS.get(error.code, 500), error.message, headers)
        assert reply is not None
        return _encoded(reply)


def _decode_call(call: _InferCall) -> InferenceRequest:
    json_part, binary = split_body(call.body, call.header_length)
    request, call.binary_outputs = decode_infer_request(call.model, call.version, parse_json(json_part), binary)
    return request


def _encoded(encoded: EncodedBody) -> web.Response:
    response = web.Response(body=encoded.body, content_type=encoded.content_type)
    if encoded.header_length is not None:
        response.headers[HEADER_LENGTH] = str(encoded.header_length)
    return response


def rest_authorizer(authority: TokenAuthority | None, rejected: Counter) -> Authorize | None:
    """The bearer-token check of the REST port: the gRPC ports' tokens and scopes, the same
    ``authorization`` header, refusals counted by reason in the same metric (None without tokens)."""
    if authority is None:
        return None

    async def authorize(request: web.Request, scope: str) -> None:
        try:
            authority.authorize(request.headers.get("Authorization"), scope)
        except (Unauthenticated, PermissionDenied) as exc:
            rejected.labels(exc.reason).inc()
            raise

    return authorize


def create_rest_app(
    boundary: InferenceBoundary,
    repository: ModelRepository,
    is_ready: Callable[[], bool],
    max_body_bytes: int,
    authorize: Authorize | None = None,
    load: Callable[[str], Awaitable[object]] | None = None,
    unload: Callable[[str], Awaitable[object]] | None = None,
) -> web.Application:
    """The aiohttp application of the V2 REST endpoints (every answer JSON, errors included);
    ``load``/``unload`` as ``RestHandlers`` takes them."""
    handlers = RestHandlers(boundary, repository, is_ready, load, unload)
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_middleware(authorize, max_body_bytes)])
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.Response]], str | None]] = [
        ("GET", "/v2/health/live", handlers.live, None),
        ("GET", "/v2/health/ready", handlers.ready, None),
        ("GET", "/v2", handlers.server_metadata, SCOPE_INFER),
        ("GET", "/v2/models/stats", handlers.model_stats, SCOPE_INFER),
        ("POST", "/v2/repository/index", handlers.repository_index, SCOPE_INFER),
        ("POST", "/v2/repository/models/{model}/load", handlers.load, SCOPE_ADMIN),
        ("POST", "/v2/repository/models/{model}/unload", handlers.unload, SCOPE_ADMIN),
    ]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [
            ("GET", prefix, handlers.model_metadata, SCOPE_INFER),
            ("GET", f"{prefix}/ready", handlers.model_ready, None),
            ("GET", f"{prefix}/config", handlers.model_config, SCOPE_INFER),
            ("GET", f"{prefix}/stats", handlers.model_stats, SCOPE_INFER),
            ("POST", f"{prefix}/infer", handlers.infer, SCOPE_INFER),
        ]
    scopes: dict[web.AbstractRoute, str | None] = {}
    app[_SCOPES] = scopes
    for method, path, handler, scope in routes:
        route = app.router.add_route(method, path, handler)
        scopes[route] = scope
    return app


# Each route's scope for ``authorize`` (None: open, as health and readiness are).
_SCOPES: web.AppKey[dict[web.AbstractRoute, str | None]] = web.AppKey("scopes")


def _middleware(authorize: Authorize | None, max_body_bytes: int) -> Any:
    @web.middleware
    async def errors_as_json(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The authorization check, and every error as ``{"error": ...}`` with its HTTP status."""
        try:
            if authorize is not None:
                scope = request.app[_SCOPES].get(request.match_info.route)
                if scope is not None:
                    await authorize(request, scope)
            return await handler(request)
        except Unauthenticated as exc:  # RFC 6750: a 401 names the scheme the client should use
            return _error(401, exc.message, {"WWW-Authenticate": 'Bearer realm="driftserve"'})
        except DriftserveError as exc:
            return _error(HTTP_STATUS.get(exc.code, 500), exc.message)
        except _HttpError as exc:
            return _error(exc.status, exc.message)
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413,
                f"request body is larger than the server's limit of {max_body_bytes} bytes "
                "(--max-receive-message-bytes)",
            )
        except web.HTTPNotFound:
            return _error(404, f"no endpoint {clip(request.path)}; see /v2/... in the KServe V2 REST protocol")
        except web.HTTPMethodNotAllowed as exc:
            allowed = sorted(exc.allowed_methods)
            return _error(
                405,
                f"{request.method} is not allowed on {clip(request.path)}; use {', '.join(allowed)}",
                {"Allow": ",".join(allowed)},
            )
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except Exception as exc:
            logger.exception("unexpected error answering %s %s", request.method, request.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    return errors_as_json


async def start_rest(
    app: web.Application,
    host: str,
    port: int,
    reuse_port: bool,
    shutdown_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> RestServer:
    """Listen on ``host:port`` (0: a free port); StartupError naming the port and the flag when it cannot.

    At stop, requests being answered get ``shutdown_timeout_s`` to finish (the data plane has
    drained inference by then; see ``RunningServer.stop``).
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"HTTP port {port} on {host} {bind_problem(exc)}; pick another with --http-port or "
            "DRIFTSERVE_HTTP_PORT (-1 turns REST off)"
        ) from None
    return RestServer(runner, int(runner.addresses[0][1]))


# ---------------------------------------------------------------------------------- helpers


def _model_version(request: web.Request) -> tuple[str, str]:
    return request.match_info.get("model", ""), request.match_info.get("version", "")


class _HttpError(Exception):
    """An answer only HTTP has (413, 415, 501 for a REST-only feature): status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _check_content_type(request: web.Request) -> None:
    """415 unless the body's Content-Type can hold an inference request."""
    if "Content-Type" in request.headers and request.content_type.lower() not in BODY_TYPES:
        raise _HttpError(
            415,
            f"Content-Type '{clip(request.content_type)}' is not supported; send application/json, or "
            f"application/octet-stream with the {HEADER_LENGTH} header for binary tensors",
        )


async def _read_body(request: web.Request) -> bytes:
    """The whole body, decompressed, at most ``client_max_size`` bytes (counted after decompression,
    so a small compressed bomb is refused with 413 like a large body)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in BODY_ENCODINGS:
        raise _HttpError(
            415, f"Content-Encoding '{clip(encoding)}' is not supported; send gzip, deflate or an uncompressed body"
        )
    try:
        return await request.read()
    except web.RequestPayloadError as exc:
        raise InvalidArgument(f"request body could not be read as sent ({encoding}): {exc}") from None


async def _optional_json(request: web.Request) -> dict[str, Any]:
    """The JSON object of a body that may be empty (repository calls)."""
    body = await _read_body(request)
    return parse_json(body) if body.strip() else {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": cap_message(message)}),
        content_type="application/json",
        headers=headers,
    )


def _message_json(message: Message) -> web.Response:
    return web.json_response(_message_dict(message))


def _message_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as Triton's JSON: field names as in the proto, 64-bit integers as numbers."""
    document = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _numbers(message.DESCRIPTOR, document)
    return document


_INT64_TYPES = frozenset(
    (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_SINT64,
    )
)


def _numbers(descriptor: Any, document: dict[str, Any]) -> None:
    """Turn the strings protobuf's JSON mapping gives 64-bit integers back into numbers, recursively."""
    for fd in descriptor.fields:
        if fd.name not in document:
            continue
        value = document[fd.name]
        if fd.type in _INT64_TYPES:
            document[fd.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                for key, item in value.items():
                    if value_fd.message_type is not None:
                        _numbers(value_fd.message_type, item)
                    elif value_fd.type in _INT64_TYPES:
                        value[key] = int(item)
            elif isinstance(value, list):
                for item in value:
                    _numbers(fd.message_type, item)
            else:
                _numbers(fd.message_type, value)
