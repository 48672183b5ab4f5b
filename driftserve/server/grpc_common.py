"""The gRPC boundary shared by both protocols: timing, metrics, and error-to-status mapping.

Servicers hand a decode and an encode function to ``serve_inference``; it is the one place where
``DriftserveError`` becomes a gRPC status, where the request metrics are recorded, and where an
unexpected exception is logged (once) and turned into INTERNAL, so the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from driftserve.core.errors import DriftserveError, ResourceExhausted, cap_message
from driftserve.server.dataplane import DataPlane, InferenceRequest, InferenceResponse
from driftserve.server.metrics import HistogramRecorder, ServerMetrics, counter_writer

logger = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
UNKNOWN_MODEL_LABEL = "_unknown"
# The trailer gRPC clients read as "retry no sooner than this many milliseconds" (gRFC A6).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


class InferenceBoundary:
    """Runs decoded requests through the data plane with metrics and status mapping."""

    def __init__(self, dataplane: DataPlane, metrics: ServerMetrics) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self._inflight = counter_writer(metrics.inflight)
        # Requests between arrival and reply (loop thread only); a stopping server waits for 0.
        self.active = 0
        self._idle: asyncio.Event | None = None
        self._worker_requests = counter_writer(metrics.worker_requests) if metrics.worker_requests is not None else None
        # Labelled children are looked up once per label set, not once per request.
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    async def serve(
        self,
        protocol: str,
        message: Req,
        context: grpc.aio.ServicerContext,
        decode: Callable[[Req], InferenceRequest],
        encode: Callable[[InferenceResponse], Resp],
    ) -> Resp:
        """Decode, infer, encode; on an error abort the RPC with its status and message."""
        reply, error = await self._handle(protocol, message, decode, encode, context.time_remaining())
        if error is not None:
            if isinstance(error, ResourceExhausted):
                context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(error.retry_after_ms)),))
            await context.abort(error.code, error.message)
        assert reply is not None
        return reply

    async def serve_for_stream(
        self,
        protocol: str,
        message: Req,
        decode: Callable[[Req], InferenceRequest],
        encode: Callable[[InferenceResponse], Resp],
        on_error: Callable[[Req, grpc.StatusCode, str], Resp],
    ) -> Resp:
        """Like ``serve`` for one message of a stream: errors become an error reply, not an abort."""
        reply, error = await self._handle(protocol, message, decode, encode, None)
        if error is not None:
            return on_error(message, error.code, error.message)
        assert reply is not None
        return reply

    async def serve_plain(
        self,
        protocol: str,
        message: Req,
        decode: Callable[[Req], InferenceRequest],
        encode: Callable[[InferenceResponse], Resp],
    ) -> tuple[Resp | None, DriftserveError | None]:
        """Like ``serve`` for a transport other than gRPC (REST): the reply, or the error to map."""
        return await self._handle(protocol, message, decode, encode, None)

    async def _handle(
        self,
        protocol: str,
        message: Req,
        decode: Callable[[Req], InferenceRequest],
        encode: Callable[[InferenceResponse], Resp],
        time_remaining_s: float | None,
    ) -> tuple[Resp | None, DriftserveError | None]:
        """The one core of both: the reply, or the error (message capped) it failed with; recorded."""
        started = time.perf_counter_ns()
        self._inflight.inc(1)
        self.active += 1
        model, version, code = UNKNOWN_MODEL_LABEL, "", "OK"
        try:
            request = decode(message)
            if request.model in self.dataplane.repository.models:
                model = request.model
            request.arrival_ns = started
            request.grpc_time_remaining_s = time_remaining_s
            response = await self.dataplane.infer(request)
            version = response.version
            return encode(response), None
        except DriftserveError as exc:
            code = exc.code.name
            exc.message = cap_message(exc.message)
            return None, exc
        except asyncio.CancelledError:
            # gRPC cancels the handler when the client goes away or its deadline passes.
            expired = time_remaining_s is not None and time.perf_counter_ns() - started >= time_remaining_s * 1e9
            code = (grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED).name
            raise
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL.name
            logger.exception("unexpected error serving %s request for model %s", protocol, model)
            return None, DriftserveError(cap_message(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._record(model, version, protocol, code, started)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is being served (at shutdown); False if ``timeout_s`` ran out."""
        if self.active == 0:
            return True
        self._idle = idle = asyncio.Event()
        try:
            await asyncio.wait_for(idle.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True

    def _record(self, model: str, version: str, protocol: str, code: str, started_ns: int) -> None:
        self._inflight.inc(-1)
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()
        key = (model, version, protocol, code)
        children = self._children.get(key)
        if children is None:
            metrics = self.metrics
            children = self._children[key] = (
                counter_writer(metrics.requests.labels(model, version, protocol, code)),
                HistogramRecorder(metrics.request_duration.labels(model, protocol)),
            )
        children[0].inc(1)
        children[1].observe((time.perf_counter_ns() - started_ns) / 1e9)
        if self._worker_requests is not None:
            self._worker_requests.inc(1)


async def abort_on_error(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[Resp]]) -> Resp:
    """Run a non-inference handler body, mapping domain errors to their status."""
    try:
        return await call()
    except DriftserveError as exc:
        await context.abort(exc.code, cap_message(exc.message))
    raise AssertionError("unreachable: context.abort raises")


async def stream_concurrently(requests: Any, handle: Callable[[Any], Any], max_inflight: int) -> Any:
    """Handle each message of a request stream as its own task and yield replies as they finish.

    Requests of one stream can then share a batch; replies carry their request id, so order is
    not needed (as in Triton's ModelStreamInfer). At most ``max_inflight`` are outstanding,
    counting replies not yet written to the client: a slot frees once its reply has been yielded
    (gRPC's flow control holds the yield while the client does not read), and the reader stops
    pulling from the stream until one frees. A client that sends without reading therefore holds
    at most ``max_inflight`` replies in the server, whatever it sends.
    """

    replies: asyncio.Queue[Any] = asyncio.Queue()
    slots = asyncio.Semaphore(max_inflight)
    tasks: set[asyncio.Task[Any]] = set()
    done_reading = False

    async def run_one(message: Any) -> None:
        try:
            reply = await handle(message)
        except BaseException:
            slots.release()
            raise
        await replies.put(reply)  # its slot frees once the reply is yielded

    async def reader() -> None:
        nonlocal done_reading
        try:
            async for message in requests:
                await slots.acquire()
                task = asyncio.create_task(run_one(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            done_reading = True
            await replies.put(_END)

    read_task = asyncio.create_task(reader())
    try:
        while True:
            reply = await replies.get()
            if reply is _END:
                break
            yield reply
            slots.release()
        while tasks or not replies.empty():
            if tasks:
                await asyncio.wait(set(tasks))
            while not replies.empty():
                reply = replies.get_nowait()
                if reply is not _END:
                    yield reply
                    slots.release()
    finally:
        read_task.cancel()
        for task in list(tasks):
            task.cancel()


_END = object()
