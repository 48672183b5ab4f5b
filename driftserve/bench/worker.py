"""One load-generator process: its own uvloop, its own gRPC channel(s), one `Tally`.

The parent starts workers with the `spawn` method, waits until each has connected, then hands
them a common monotonic start time (CLOCK_MONOTONIC is system-wide on Linux, so all processes
share the time base) and collects one report per worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import psutil
import uvloop

from driftserve.api import driftserve_pb2, grpc_service_pb2
from driftserve.bench.loops import arrival_offsets, closed_loop, open_loop
from driftserve.bench.payload import with_request_id
from driftserve.bench.tally import OK, Tally
from driftserve.core.client import ClientSecurity

logger = logging.getLogger(__name__)

METHODS = {
    ("native", False): "/driftserve.v1.Predictor/Predict",
    ("native", True): "/driftserve.v1.Predictor/PredictStream",
    ("v2", False): "/inference.GRPCInferenceService/ModelInfer",
    ("v2", True): "/inference.GRPCInferenceService/ModelStreamInfer",
}
# A streamed reply that carries only an error message (V2 streams have no status code).
STREAM_ERROR = "STREAM_ERROR"
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    # Separate subchannels per worker channel, so load spreads over server connections.
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one worker needs; plain data so it pickles across `spawn`."""

    index: int
    target: str
    protocol: str
    streaming: bool
    requests: tuple[bytes, ...]
    mode: str  # "closed" or "open"
    concurrency: int
    rate_rps: float
    arrival: str
    seed: int
    phase: float
    warmup_s: float
    duration_s: float
    timeout_s: float
    max_outstanding: int
    lag_threshold_s: float
    security: ClientSecurity = field(default_factory=ClientSecurity)


class UnarySender:
    """`send(i)` as one unary RPC on pre-serialized bytes; the status name is the result."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        method: str,
        requests: tuple[bytes, ...],
        timeout_s: float,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self._call = channel.unary_unary(method)
        self._requests = requests
        self._timeout_s = timeout_s
        self._metadata = metadata

    async def __call__(self, i: int) -> str:
        try:
            await self._call(self._requests[i % len(self._requests)], timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return OK


class StreamSender:
    """`send(i)` over one long-lived bidirectional stream, replies matched by request id."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        method: str,
        protocol: str,
        requests: tuple[bytes, ...],
        timeout_s: float,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        parse = (
            driftserve_pb2.PredictStreamResponse if protocol == "native" else grpc_service_pb2.ModelStreamInferResponse
        ).FromString
        self._call_factory = channel.stream_stream(method, response_deserializer=parse)
        self._protocol = protocol
        self._requests = requests
        self._timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._outbox: asyncio.Queue[bytes | None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._metadata = metadata

    async def _requests_out(self, outbox: asyncio.Queue[bytes | None]) -> Any:
        while (item := await outbox.get()) is not None:
            yield item

    def _open(self) -> None:
        self._outbox = asyncio.Queue()
        call = self._call_factory(self._requests_out(self._outbox), metadata=self._metadata)
        self._reader = asyncio.create_task(self._read(call))

    def _reply_status(self, reply: Any) -> tuple[str, str]:
        if self._protocol == "native":
            rid = reply.request_id or reply.response.request_id
            if reply.error_code:
                return rid, grpc.StatusCode(_code_tuple(reply.error_code)).name
            return rid, OK
        rid = reply.infer_response.id
        return rid, STREAM_ERROR if reply.error_message else OK

    async def _read(self, call: Any) -> None:
        status = "UNAVAILABLE"
        try:
            async for reply in call:
                rid, outcome = self._reply_status(reply)
                future = self._pending.pop(rid, None)
                if future is None and self._pending:
                    # An error reply without an id: the oldest outstanding request owns it.
                    future = self._pending.pop(next(iter(self._pending)))
                if future is not None and not future.done():
                    future.set_result(outcome)
            status = "CANCELLED"
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_result(status)
            self._pending.clear()
            self._outbox = None

    async def __call__(self, i: int) -> str:
        if self._outbox is None:
            self._open()
        assert self._outbox is not None
        rid = str(next(self._ids))
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._outbox.put_nowait(with_request_id(self._requests[i % len(self._requests)], rid))
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:
            self._pending.pop(rid, None)
            return "DEADLINE_EXCEEDED"

    async def close(self) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=self._timeout_s)
            self._reader.cancel()


def _code_tuple(value: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


async def run_worker(cfg: WorkerConfig, start_at: float, progress: Any = None) -> dict[str, Any]:
    """Run one worker's share of the load from monotonic time `start_at`; return its report."""
    tally = Tally(lag_threshold_s=cfg.lag_threshold_s)
    measure_from = start_at + cfg.warmup_s
    end = measure_from + cfg.duration_s

    def on_done() -> None:
        if progress is not None:
            progress.value += 1

    async with cfg.security.aio_channel(cfg.target, _CHANNEL_OPTIONS) as channel:
        method = METHODS[(cfg.protocol, cfg.streaming)]
        metadata = cfg.security.metadata
        sender: UnarySender | StreamSender
        if cfg.streaming:
            sender = StreamSender(channel, method, cfg.protocol, cfg.requests, cfg.timeout_s, metadata)
        else:
            sender = UnarySender(channel, method, cfg.requests, cfg.timeout_s, metadata)
        await asyncio.wait_for(channel.channel_ready(), cfg.timeout_s)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        proc = psutil.Process()
        cpu0 = sum(proc.cpu_times()[:2])
        if cfg.mode == "closed":
            await closed_loop(sender, cfg.concurrency, measure_from, end, tally, on_done)
        else:
            offsets = arrival_offsets(cfg.rate_rps, cfg.warmup_s + cfg.duration_s, cfg.arrival, cfg.seed, cfg.phase)
            await open_loop(sender, offsets + start_at, measure_from, tally, cfg.max_outstanding, on_done)
        cpu_s = sum(proc.cpu_times()[:2]) - cpu0
        if isinstance(sender, StreamSender):
            await sender.close()
    return tally.to_report(cpu_s=cpu_s, elapsed_s=time.monotonic() - start_at)


def worker_process(cfg: WorkerConfig, ready: Any, go: Any, start_at: Any, progress: Any, results: Any) -> None:
    """Process entry point: signal readiness, wait for the common start, run, report."""
    logging.basicConfig(level=logging.WARNING)
    ready.put(cfg.index)
    if not go.wait(timeout=120):
        results.put((cfg.index, None, "no start signal from the parent within 120 s"))
        return
    try:
        report = uvloop.run(run_worker(cfg, start_at.value, progress))
    except Exception as exc:  # reported to the parent, which turns it into exit code 2
        logger.exception("worker %s failed", cfg.index)
        results.put((cfg.index, None, f"{type(exc).__name__}: {exc}"))
        return
    results.put((cfg.index, report, ""))
