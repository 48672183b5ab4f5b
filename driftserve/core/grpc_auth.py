"""Bearer-token checks on a gRPC server, made where gRPC looks up the method handler.

Each service is registered as a generic handler (``GenericHandlersOnly``); with a
``TokenAuthority`` every one but ``grpc.health.v1.Health`` is wrapped in ``AuthorizingHandler``.
gRPC calls a generic handler's ``service(details)`` synchronously for each call, with the call's
method and metadata, before any handler runs; the wrapper checks the ``authorization`` metadata
there and returns either the real method handler or one that only aborts with UNAUTHENTICATED /
PERMISSION_DENIED. A rejected call never reaches a servicer (nor the data plane), and an accepted
one costs one SHA-256 and a ``compare_digest`` per known token: no extra coroutine per call,
which a ``grpc.aio.ServerInterceptor`` would add (benchmarks/tls_overhead.py measures both).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from driftserve.core.auth import AUTHORIZATION_KEY, SCOPE_ADMIN, TokenAuthority
from driftserve.core.errors import PermissionDenied, Unauthenticated

logger = logging.getLogger(__name__)

# Calls of these services never need a token: orchestrators probe health without credentials.
EXEMPT_SERVICES = frozenset({"grpc.health.v1.Health"})


class MethodScopes:
    """The scope each method of a service needs: ``default`` unless ``methods`` names another;
    ``None`` (in ``methods``) exempts a method."""

    def __init__(self, default: str, methods: Mapping[str, str | None] | None = None) -> None:
        self.default = default
        self.methods = dict(methods or {})

    def scope(self, method: str) -> str | None:
        return self.methods.get(method, self.default)


def authorization_of(metadata: Any) -> str | None:
    """The ``authorization`` value of a call's invocation metadata (None when absent)."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY:
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None


def _denying_handler(template: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of ``template``'s kind (unary or streaming) that only aborts with ``code``."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if template.request_streaming and template.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if template.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if template.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class AuthorizingHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc is untyped here
    """``inner``'s method handlers for calls whose token grants the method's scope; for the
    others a handler that aborts, and ``on_reject(reason)`` (missing, malformed, unknown, scope)."""

    def __init__(
        self,
        inner: grpc.GenericRpcHandler,
        authority: TokenAuthority,
        scopes: Mapping[str, MethodScopes],
        on_reject: Callable[[str], None],
    ) -> None:
        self._inner = inner
        self._authority = authority
        self._scopes = scopes
        self._on_reject = on_reject
        # Scope per method path, resolved on first use: only paths ``inner`` serves get here.
        self._scope_of: dict[str, str | None] = {}

    def _resolve(self, method_path: str) -> str | None:
        service, _, method = method_path.lstrip("/").rpartition("/")  # "/package.Service/Method"
        policy = self._scopes.get(service)
        scope = SCOPE_ADMIN if policy is None else policy.scope(method)  # no entry: fail closed
        self._scope_of[method_path] = scope
        return scope

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method_path: str = handler_call_details.method
        scope = self._scope_of[method_path] if method_path in self._scope_of else self._resolve(method_path)
        if scope is None:
            return handler
        try:
            self._authority.authorize(authorization_of(handler_call_details.invocation_metadata), scope)
        except (Unauthenticated, PermissionDenied) as exc:
            self._on_reject(exc.reason)
            logger.debug("refused %s: %s", method_path, exc.message)
            return _denying_handler(handler, exc.code, exc.message)
        return handler


class GenericHandlersOnly:
    """Lets a generated ``add_*_to_server`` register its service as a generic handler only, with
    every service but health wrapped in ``AuthorizingHandler`` when ``authority`` is set.

    grpc.aio's serving loop keeps one pending "next call" future per registered method and runs
    ``asyncio.wait`` over all of them for every incoming call, so each registered method costs
    every request. Generic handlers share one future, and finding the handler is a dict lookup
    by method name either way. With the server's ~17 methods generic-only, the MLP at 32 clients
    served 1.09x the requests at 8% less CPU each, side by side. It also keeps one path per call:
    every call of a wrapped service goes through its ``AuthorizingHandler``.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        authority: TokenAuthority | None = None,
        scopes: Mapping[str, MethodScopes] | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self._server = server
        self._authority = authority
        self._scopes = dict(scopes or {})
        self._on_reject = on_reject or (lambda reason: None)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        if self._authority is not None:
            handlers = tuple(self._wrap(handler) for handler in handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        """Nothing: the generated code has already added the same handlers as a generic one."""

    def _wrap(self, handler: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        name = handler.service_name() if hasattr(handler, "service_name") else None
        if name in EXEMPT_SERVICES:
            return handler
        assert self._authority is not None
        return AuthorizingHandler(handler, self._authority, self._scopes, self._on_reject)
