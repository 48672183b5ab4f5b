"""The baseline: a deliberately naive ONNX model server, as a reasonable first wrapper looks.

Synchronous `grpc.server` on a thread pool, one `session.run` per request, no batching, ORT with
one intra-op thread, inputs decoded with `np.frombuffer`. It speaks the same protocols as
driftserve (native Predict/PredictStream, V2 ModelInfer/ModelStreamInfer and the metadata RPCs),
so every benchmark can measure both side by side.

Test aids (default off): `--delay-ms D` sleeps D ms inside every request; `--stall-ms S` with
`--stall-after N` freezes the whole server for S ms once, on the N-th request, so requests that
arrive during the stall queue behind it (a GC pause or a page-in, in miniature).

    python -m benchmarks.naive_server --model-repository DIR --port 0   # prints DRIFTSERVE_READY grpc_port=<port>
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from driftserve.api import (
    driftserve_pb2,
    driftserve_pb2_grpc,
    grpc_service_pb2,
    grpc_service_pb2_grpc,
    model_config_pb2,
)
from driftserve.bench.payload import NUMPY_DTYPES

logger = logging.getLogger(__name__)

_ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
}
_V2_TO_CONFIG = {
    "FP32": model_config_pb2.TYPE_FP32,
    "FP64": model_config_pb2.TYPE_FP64,
    "FP16": model_config_pb2.TYPE_FP16,
    "INT64": model_config_pb2.TYPE_INT64,
    "INT32": model_config_pb2.TYPE_INT32,
    "INT16": model_config_pb2.TYPE_INT16,
    "INT8": model_config_pb2.TYPE_INT8,
    "UINT8": model_config_pb2.TYPE_UINT8,
    "UINT16": model_config_pb2.TYPE_UINT16,
    "UINT32": model_config_pb2.TYPE_UINT32,
    "UINT64": model_config_pb2.TYPE_UINT64,
    "BOOL": model_config_pb2.TYPE_BOOL,
}


class RequestError(Exception):
    """A request the server refuses, with the gRPC status to refuse it with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _dims(shape: list[object]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


class Model:
    """One model's latest version: an ORT session and its I/O description."""

    def __init__(self, name: str, version: str, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.name, self.version = name, version
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, _ORT_TO_V2[i.type], _dims(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [(o.name, _ORT_TO_V2[o.type], _dims(o.shape)) for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, tuple[str, list[int], bytes]]) -> list[tuple[str, np.ndarray]]:
        """Decode raw inputs, check them against the model, run ORT once."""
        arrays = {}
        for name, datatype, _ in self.inputs:
            if name not in feeds:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"model {self.name!r}: missing input {name!r}")
            got_type, shape, data = feeds[name]
            if got_type != datatype:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: datatype {got_type}, expected {datatype}"
                )
            dtype = NUMPY_DTYPES[datatype]
            if len(data) != int(np.prod(shape)) * dtype.itemsize:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: {len(data)} bytes do not match shape {shape}"
                )
            arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        try:
            results = self.session.run(None, arrays)
        except Exception as exc:  # ORT reports shape errors as generic exceptions
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"inference failed: {exc}") from None
        return [(name, np.ascontiguousarray(r)) for (name, _, _), r in zip(self.outputs, results)]


def load_repository(root: Path) -> dict[str, Model]:
    """Every model's highest numeric version under `<root>/<model>/<version>/model.onnx`."""
    models = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        versions = [v for v in model_dir.iterdir() if v.name.isdigit() and (v / "model.onnx").is_file()]
        if versions:
            latest = max(versions, key=lambda v: int(v.name))
            models[model_dir.name] = Model(model_dir.name, latest.name, latest / "model.onnx")
    if not models:
        raise SystemExit(f"no models found under {root} (expected <model>/<version>/model.onnx)")
    return models


class Servicer(driftserve_pb2_grpc.PredictorServicer, grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """Both APIs in one class, translating straight to `Model.run`."""

    def __init__(self, models: dict[str, Model], delay_ms: float, stall_ms: float, stall_after: int) -> None:
        self.models = models
        self.delay_s, self.stall_s, self.stall_after = delay_ms / 1e3, stall_ms / 1e3, stall_after
        self._gate = threading.Lock()  # held during the stall so everyone waits behind it
        self._count = 0
        self._count_lock = threading.Lock()

    def _slow_down(self) -> None:
        with self._count_lock:
            self._count += 1
            stall = self.stall_s > 0 and self._count == self.stall_after
        if stall:
            with self._gate:
                time.sleep(self.stall_s)
        else:
            with self._gate:
                pass  # only waits for a stall in progress to end: every request queues behind it
        if self.delay_s > 0:
            time.sleep(self.delay_s)

    def model(self, name: str, version: str = "") -> Model:
        """The served model called ``name`` (and ``version``, when given), or NOT_FOUND."""
        model = self.models.get(name)
        if model is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}")
        if version and version != model.version:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version {version!r} (serving {model.version})"
            )
        return model

    def _predict(self, request: driftserve_pb2.PredictRequest) -> driftserve_pb2.PredictResponse:
        self._slow_down()
        model = self.model(request.model, request.version)
        outputs = model.run({t.name: (t.datatype, list(t.shape), t.data) for t in request.inputs})
        reply = driftserve_pb2.PredictResponse(model=model.name, version=model.version, request_id=request.request_id)
        for (name, arr), (_, datatype, _) in zip(outputs, model.outputs):
            reply.outputs.add(name=name, datatype=datatype, shape=arr.shape, data=arr.tobytes())
        return reply

    def _infer(self, request: grpc_service_pb2.ModelInferRequest) -> grpc_service_pb2.ModelInferResponse:
        self._slow_down()
        model = self.model(request.model_name, request.model_version)
        if len(request.raw_input_contents) != len(request.inputs):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, "this server accepts raw_input_contents only, one per input"
            )
        feeds = {t.name: (t.datatype, list(t.shape), raw) for t, raw in zip(request.inputs, request.raw_input_contents)}
        reply = grpc_service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for (name, arr), (_, datatype, _) in zip(model.run(feeds), model.outputs):
            reply.outputs.add(name=name, datatype=datatype, shape=arr.shape)
            reply.raw_output_contents.append(arr.tobytes())
        return reply

    def Predict(
        self, request: driftserve_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> driftserve_pb2.PredictResponse:
        try:
            return self._predict(request)
        except RequestError as exc:
            context.abort(exc.code, str(exc))

    def PredictStream(
        self, request_iterator: Iterator[driftserve_pb2.PredictRequest], context: grpc.ServicerContext
    ) -> Iterator[driftserve_pb2.PredictStreamResponse]:
        for request in request_iterator:
            try:
                yield driftserve_pb2.PredictStreamResponse(
                    response=self._predict(request), request_id=request.request_id
                )
            except RequestError as exc:
                yield driftserve_pb2.PredictStreamResponse(
                    error_code=exc.code.value[0], error_message=str(exc), request_id=request.request_id
                )

    def ModelInfer(
        self, request: grpc_service_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> grpc_service_pb2.ModelInferResponse:
        try:
            return self._infer(request)
        except RequestError as exc:
            context.abort(exc.code, str(exc))

    def ModelStreamInfer(
        self, request_iterator: Iterator[grpc_service_pb2.ModelInferRequest], context: grpc.ServicerContext
    ) -> Iterator[grpc_service_pb2.ModelStreamInferResponse]:
        for request in request_iterator:
            try:
                yield grpc_service_pb2.ModelStreamInferResponse(infer_response=self._infer(request))
            except RequestError as exc:
                yield grpc_service_pb2.ModelStreamInferResponse(
                    error_message=str(exc), infer_response=grpc_service_pb2.ModelInferResponse(id=request.id)
                )

    def ServerLive(
        self, request: grpc_service_pb2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> grpc_service_pb2.ServerLiveResponse:
        return grpc_service_pb2.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: grpc_service_pb2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> grpc_service_pb2.ServerReadyResponse:
        return grpc_service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(
        self, request: grpc_service_pb2.ModelReadyRequest, context: grpc.ServicerContext
    ) -> grpc_service_pb2.ModelReadyResponse:
        return grpc_service_pb2.ModelReadyResponse(ready=request.name in self.models)

    def ServerMetadata(
        self, request: grpc_service_pb2.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> grpc_service_pb2.ServerMetadataResponse:
        return grpc_service_pb2.ServerMetadataResponse(name="naive-onnx", version="0.1.0")

    def ModelMetadata(
        self, request: grpc_service_pb2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> grpc_service_pb2.ModelMetadataResponse:
        try:
            model = self.model(request.name, request.version)
        except RequestError as exc:
            context.abort(exc.code, str(exc))
        reply = grpc_service_pb2.ModelMetadataResponse(
            name=model.name, versions=[model.version], platform="onnxruntime_onnx"
        )
        for name, datatype, shape in model.inputs:
            reply.inputs.add(name=name, datatype=datatype, shape=shape)
        for name, datatype, shape in model.outputs:
            reply.outputs.add(name=name, datatype=datatype, shape=shape)
        return reply

    def ModelConfig(
        self, request: grpc_service_pb2.ModelConfigRequest, context: grpc.ServicerContext
    ) -> grpc_service_pb2.ModelConfigResponse:
        try:
            model = self.model(request.name, request.version)
        except RequestError as exc:
            context.abort(exc.code, str(exc))
        config = model_config_pb2.ModelConfig(name=model.name, platform="onnxruntime_onnx", max_batch_size=0)
        for name, datatype, shape in model.inputs:
            config.input.add(name=name, data_type=_V2_TO_CONFIG[datatype], dims=shape)
        for name, datatype, shape in model.outputs:
            config.output.add(name=name, data_type=_V2_TO_CONFIG[datatype], dims=shape)
        return grpc_service_pb2.ModelConfigResponse(config=config)


def create_server(
    repository: Path,
    port: int = 0,
    threads: int = 8,
    delay_ms: float = 0.0,
    stall_ms: float = 0.0,
    stall_after: int = 1,
) -> tuple[grpc.Server, int]:
    """A started naive server on 127.0.0.1; returns it and the bound port."""
    servicer = Servicer(load_repository(repository), delay_ms, stall_ms, stall_after)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    driftserve_pb2_grpc.add_PredictorServicer_to_server(servicer, server)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    server.start()
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive_server", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--threads", type=int, default=8, help="gRPC thread pool size")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="test aid: sleep this long inside every request")
    parser.add_argument("--stall-ms", type=float, default=0.0, help="test aid: freeze the whole server this long, once")
    parser.add_argument(
        "--stall-after", type=int, default=1, help="test aid: the request number that triggers the stall"
    )
    args = parser.parse_args(argv)
    if not args.model_repository.is_dir():
        parser.error(f"--model-repository {args.model_repository} is not a directory")
    if args.threads < 1 or args.delay_ms < 0 or args.stall_ms < 0 or args.stall_after < 1:
        parser.error("--threads and --stall-after must be >= 1, delays >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server, port = create_server(
        args.model_repository, args.port, args.threads, args.delay_ms, args.stall_ms, args.stall_after
    )
    print(f"DRIFTSERVE_READY grpc_port={port}", flush=True)  # the ready line driftserve prints
    logger.info(
        "naive server on 127.0.0.1:%s serving %s",
        port,
        ", ".join(sorted(p.name for p in args.model_repository.iterdir() if p.is_dir())),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2.0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
