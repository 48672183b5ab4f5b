"""The transport ceiling: a bare gRPC server on uvloop that answers ModelInfer without a model.

It speaks just enough of the Open Inference Protocol for perf_analyzer (liveness, readiness,
metadata and config of the repository's models, from ``naive_server``) and answers every
ModelInfer with a canned response of the right output shapes: no decode, no validation, no
batching, no ONNX Runtime, no metrics (only a count of replies, which ModelStatistics reports as
each model's success count, so benchmarks can divide its CPU time by the requests it served). Its
throughput is what gRPC's Python per-RPC machinery alone allows on the machine, the upper bound
for any model server built on that front end there: ``--frontend cq`` (the default) serves through
driftserve's completion-queue front end (``driftserve.core.cq_server``), as driftserve does by
default; ``--frontend aio`` through grpcio's ``grpc.aio`` server.
The batching benchmark measures it in the same rounds as driftserve, so reports can say how much
of the remaining gap is the transport. With ``--yield-once`` each ModelInfer first awaits
``asyncio.sleep(0)``: one suspension per request, the least any batching server pays (a request
has to wait for the others of its batch), so that variant bounds every micro-batching grpc.aio
server on the machine.

    # prints DRIFTSERVE_READY grpc_port=<port>
    python -m benchmarks.grpc_ceiling --model-repository DIR --port 0 [--yield-once] [--frontend cq|aio]
    # N processes on one port (SO_REUSEPORT), the ceiling of `driftserve serve --workers N`:
    python -m benchmarks.grpc_ceiling --model-repository DIR --port P --reuse-port
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import uvloop

from benchmarks.naive_server import Model, RequestError, Servicer, load_repository
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.bench.payload import NUMPY_DTYPES
from driftserve.core import gil_cpu
from driftserve.core.cpus import affinity, cgroup_quota_cpus, parse_cpu_set, pin_to
from driftserve.core.cq_server import CompletionQueueServer
from driftserve.core.grpc_auth import GenericHandlersOnly
from driftserve.core.heap import freeze_startup_heap


def _canned(model: Model, rows: int) -> pb.ModelInferResponse:
    """A response with zero-filled outputs for ``rows`` rows (dynamic dims read as 1)."""
    reply = pb.ModelInferResponse(model_name=model.name, model_version=model.version)
    for name, datatype, dims in model.outputs:
        shape = [rows] + [d if d > 0 else 1 for d in dims[1:]] if dims else []
        reply.outputs.add(name=name, datatype=datatype, shape=shape)
        size = int(np.prod(shape)) if shape else 1
        reply.raw_output_contents.append(bytes(size * NUMPY_DTYPES[datatype].itemsize))
    return reply


class CeilingServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Metadata from the naive servicer; ModelInfer from a cache of canned replies."""

    def __init__(self, models: dict[str, Model], yield_once: bool = False) -> None:
        self.models = models
        self.yield_once = yield_once
        self.meta = Servicer(models, 0.0, 0.0, 1)
        self.replies: dict[tuple[str, int], pb.ModelInferResponse] = {}
        # Replies sent per model, for ModelStatistics: benchmarks divide CPU time by it.
        self.served: dict[str, int] = {}

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name in self.models)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="grpc-ceiling", version="0.1.0")

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        return self.meta.ModelMetadata(request, context)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        await self._check_model(request.name, request.version, context)
        return self.meta.ModelConfig(request, context)

    async def _check_model(self, name: str, version: str, context: grpc.aio.ServicerContext) -> None:
        """Unknown model or version: NOT_FOUND here, before the naive servicer's synchronous
        ``context.abort`` (which an asyncio context does not raise from) is reached."""
        try:
            self.meta.model(name, version)
        except RequestError as exc:
            await context.abort(exc.code, str(exc))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        if self.yield_once:
            await asyncio.sleep(0)
        rows = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        key = (request.model_name, rows)
        reply = self.replies.get(key)
        if reply is None:
            model = self.models.get(request.model_name)
            if model is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name!r}")
            reply = self.replies[key] = _canned(model, rows)
        self.served[request.model_name] = self.served.get(request.model_name, 0) + 1
        return reply

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        """The replies sent, as each model's success count (no durations: nothing is timed)."""
        if request.name and request.name not in self.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}")
        names = [request.name] if request.name else sorted(self.models)
        stats = [
            pb.ModelStatistics(
                name=name,
                version=self.models[name].version,
                inference_stats=pb.InferStatistics(success=pb.StatisticDuration(count=self.served.get(name, 0))),
            )
            for name in names
        ]
        return pb.ModelStatisticsResponse(model_stats=stats)


async def serve(
    repository: Path,
    port: int,
    yield_once: bool = False,
    frontend: str = "cq",
    reuse_port: bool = False,
    reply_sender: bool = True,
    gil_cpu_mode: str = "auto",
    pinned: bool = False,
) -> None:
    # SO_REUSEPORT only when asked: several ceiling processes then share one port, as `--workers` does.
    options = [("grpc.so_reuseport", 1 if reuse_port else 0)]
    server: Any = (
        CompletionQueueServer(options, send_beside_loop=reply_sender)
        if frontend == "cq"
        else grpc.aio.server(options=options)
    )
    servicer = CeilingServicer(load_repository(repository), yield_once)
    # Generic handlers only, as driftserve registers its services (see driftserve.core.grpc_auth.GenericHandlersOnly).
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, GenericHandlersOnly(server))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    # driftserve's --gil-cpu, by the same rule (a pinned process owns its share, as a worker of
    # --pin-workers does), so the ceiling stays an upper bound.
    own = pinned or not reuse_port
    placement = gil_cpu.choose(gil_cpu_mode, affinity(), cgroup_quota_cpus(), mask_is_own=own)
    if placement.cpu is not None:
        gil_cpu.place(placement.cpu)
    freeze_startup_heap()  # as driftserve does, so the ceiling stays an upper bound
    print(f"DRIFTSERVE_READY grpc_port={bound}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--yield-once", action="store_true", help="await asyncio.sleep(0) in every ModelInfer")
    parser.add_argument("--frontend", choices=("cq", "aio"), default="cq", help="gRPC front end [default cq]")
    parser.add_argument(
        "--reuse-port", action="store_true", help="bind with SO_REUSEPORT, so that several processes share --port"
    )
    parser.add_argument(
        "--reply-sender",
        choices=("on", "off"),
        default="on",
        help="cq front end: write replies from its sender thread while calls overlap [default on]",
    )
    parser.add_argument(
        "--gil-cpu",
        choices=("auto", "on", "off"),
        default="auto",
        help="keep the loop, poller and senders on one CPU, as driftserve serve --gil-cpu [default auto]",
    )
    parser.add_argument("--cpu-set", default="", help="confine the process to these CPUs (e.g. 0,1), as --pin-workers")
    args = parser.parse_args(argv)
    if not args.model_repository.is_dir():
        parser.error(f"--model-repository {args.model_repository} is not a directory")
    if args.cpu_set:  # before any thread starts, as a worker of --pin-workers does
        pin_to(parse_cpu_set(args.cpu_set))
    try:
        uvloop.run(
            serve(
                args.model_repository,
                args.port,
                args.yield_once,
                args.frontend,
                args.reuse_port,
                args.reply_sender == "on",
                args.gil_cpu,
                bool(args.cpu_set),
            )
        )
    except KeyboardInterrupt:  # Ctrl-C ends a manual run; benchmarks stop it with SIGTERM
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
