"""The one error tree of the server; each error carries the gRPC status it maps to.

::

    DriftserveError                      INTERNAL
    ├── InvalidArgument                  INVALID_ARGUMENT   (bad tensor, dtype, shape, parameter)
    ├── NotFound                         NOT_FOUND          (unknown model or version)
    ├── Unavailable                      UNAVAILABLE        (model not ready, server shutting down)
    ├── ResourceExhausted                RESOURCE_EXHAUSTED (queue full: load shedding)
    ├── DeadlineExceeded                 DEADLINE_EXCEEDED  (deadline passed while queued)
    ├── ModelExecutionError              INTERNAL           (ONNX Runtime failed on a batch)
    ├── ConfigError                      INVALID_ARGUMENT   (a config.yaml is wrong; names file and key)
    ├── FailedPrecondition               FAILED_PRECONDITION (a rollout refused or in progress)
    ├── Unauthenticated                  UNAUTHENTICATED    (bearer token missing, malformed or unknown)
    └── PermissionDenied                 PERMISSION_DENIED  (a valid token without the call's scope)

Servicers never build status codes themselves: they raise these and the boundary decorator in
``driftserve.server.grpc_common`` maps them, records the metric and logs once.

Text a client sent (model names, versions, tensor names, datatypes) goes into a message only
through :func:`clip`, and the boundary passes every message through :func:`cap_message`: a status
message travels as gRPC metadata, and one past the peer's metadata limit (8 KiB by default) turns a
precise error into RESOURCE_EXHAUSTED "received metadata size exceeds soft limit".
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

# Characters of one client string kept in an error message (see ``clip``).
CLIP_CHARS = 100
# Items of a list kept in an error message (see ``clip_list``).
CLIP_ITEMS = 20
# UTF-8 bytes of one whole error message. gRPC percent-encodes every byte outside printable ASCII,
# so the status header is at most three times this: 6 KB, under the 8 KiB default metadata limit.
MAX_MESSAGE_BYTES = 2000


# How long a shed client is told to wait before retrying, unless the shedder knows better.
DEFAULT_RETRY_AFTER_MS = 50


class DriftserveError(Exception):
    """Base of every error the server reports to a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DriftserveError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DriftserveError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(DriftserveError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(DriftserveError):
    """Load shedding; ``retry_after_ms`` is the hint sent as ``grpc-retry-pushback-ms``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_ms: int = DEFAULT_RETRY_AFTER_MS) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class DeadlineExceeded(DriftserveError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ModelExecutionError(DriftserveError):
    code = grpc.StatusCode.INTERNAL


class FailedPrecondition(DriftserveError):
    """The request is valid but the model's state refuses it: a candidate failed its gate, or a
    rollout of the model is already in progress."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ConfigError(DriftserveError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(DriftserveError):
    """No usable credentials; ``reason`` (missing, malformed, unknown) labels the rejection metric."""

    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDenied(DriftserveError):
    """A known token that lacks the scope of the call; ``reason`` is always ``scope``."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "scope"


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """Client text for an error message: its start, and how long it was when cut.

    A client string is echoed so the caller recognises it, never whole: its length is the
    client's choice, and the message has to fit in a status header.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def clip_list(items: Iterable[object], limit: int = CLIP_ITEMS) -> str:
    """A list for an error message (``['a', 'b']``), each string clipped, at most ``limit`` items."""
    shown: list[str] = []
    total = 0
    for item in items:
        total += 1
        if len(shown) < limit:
            shown.append(repr(clip(item) if isinstance(item, str) else item))
    more = f", ... ({total} in all)" if total > limit else ""
    return f"[{', '.join(shown)}{more}]"


def cap_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """The last line of defence for any status message: at most ``limit`` UTF-8 bytes.

    Messages are built from clipped parts already; this bounds the sum (and text from exceptions
    the server did not expect), so a status can never exceed gRPC's metadata limit. It keeps the
    start and the end, which say what was wrong and what was expected, and cuts the middle.
    """
    if len(message) <= limit // 4 or len(message.encode("utf-8")) <= limit:  # cheap test for the usual case
        return message
    encoded = message.encode("utf-8")
    keep = (limit - 64) // 2  # 64 bytes leave room for the marker
    head = encoded[:keep].decode("utf-8", "ignore")
    tail = encoded[-keep:].decode("utf-8", "ignore")
    return f"{head} [... {len(message) - len(head) - len(tail)} characters cut ...] {tail}"
