"""The one error tree of the server; each error carries the gRPC status it maps to.

::

    DriftserveError                      INTERNAL
    ├── InvalidArgument                  INVALID_ARGUMENT   (bad tensor, dtype, shape, parameter)
    ├── NotFound                         NOT_FOUND          (unknown model or version)
    ├── Unavailable                      UNAVAILABLE        (model not ready, server shutting down)
    ├── ResourceExhausted                RESOURCE_EXHAUSTED (queue full: load shedding)
    ├── DeadlineExceeded                 DEADLINE_EXCEEDED  (deadline passed while queued)
    ├── ModelExecutionError              INTERNAL           (ONNX Runtime failed on a batch)
    └── ConfigError                      INVALID_ARGUMENT   (a config.yaml is wrong; names file and key)

Servicers never build status codes themselves: they raise these and the boundary decorator in
``driftserve.server.grpc_common`` maps them, records the metric and logs once.
"""

from __future__ import annotations

import grpc


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
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(DriftserveError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ModelExecutionError(DriftserveError):
    code = grpc.StatusCode.INTERNAL


class ConfigError(DriftserveError):
    code = grpc.StatusCode.INVALID_ARGUMENT
