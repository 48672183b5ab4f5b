"""Start MLServer (``mlserver start FOLDER``) with one RPC added that perf_analyzer needs.

perf_analyzer asks ``inference.GRPCInferenceService/ModelConfig`` once before any load and refuses
a server that lacks it; MLServer 1.7.1 implements the KServe V2 protocol, which has no ModelConfig.
This adds that one method to MLServer's gRPC server, answering with the serialized
``ModelConfigResponse`` bytes the benchmark wrote to ``FOLDER/model_config_response.bin`` (built
in driftserve's environment from the same model signature). Nothing else about MLServer changes:
the request path perf_analyzer measures is MLServer's own.

Runs with the MLServer peer environment's interpreter:
``.peers/mlserver/bin/python benchmarks/peers/mlserver_launch.py FOLDER``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
from mlserver.cli.main import main as mlserver_main
from mlserver.grpc.server import GRPCServer

RESPONSE_FILE = "model_config_response.bin"
SERVICE = "inference.GRPCInferenceService"


def model_config_handler(response: bytes) -> grpc.GenericRpcHandler:
    """A handler that serves only ModelConfig of the V2 service, with a fixed reply (MLServer's
    server is grpc.aio, so the method is a coroutine)."""

    async def model_config(request: bytes, context: Any) -> bytes:
        return response

    # No (de)serializers: the request and the reply pass as bytes.
    return grpc.method_handlers_generic_handler(
        SERVICE, {"ModelConfig": grpc.unary_unary_rpc_method_handler(model_config)}
    )


def install(response: bytes) -> None:
    create = GRPCServer._create_server

    def create_with_model_config(self: GRPCServer) -> Any:
        server = create(self)
        server.add_generic_rpc_handlers((model_config_handler(response),))
        return server

    GRPCServer._create_server = create_with_model_config


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: mlserver_launch.py FOLDER")
    folder = Path(argv[0])
    install((folder / RESPONSE_FILE).read_bytes())
    sys.argv = ["mlserver", "start", str(folder)]
    mlserver_main()


if __name__ == "__main__":
    main(sys.argv[1:])
