"""The mirror tap: sampled, served traffic shipped to the drift sidecar, never on the request path.

``tap`` runs after a response is ready and only appends references to a bounded queue (no copy,
no I/O, no await). A background task drains it every ``flush_interval_s`` or when ``flush_rows``
rows are waiting, concatenates the records of each model version into one columnar
``MirrorBatch`` and writes it on a client stream to ``driftserve.v1.Mirror/Publish``. When the
queue is full, or the sidecar is slow, down or not started yet, records are dropped and counted;
the stream reconnects with exponential backoff. Serving never waits on any of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from driftserve_api import driftserve_pb2 as pb
from driftserve_api import driftserve_pb2_grpc as pb_grpc
from server.dataplane import InferenceRequest
from server.repository import ModelRepository, ServedVersion
from server.tensors import encode_raw, v2_datatype

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_CAPACITY = 8192
DEFAULT_FLUSH_INTERVAL_S = 0.05
DEFAULT_FLUSH_ROWS = 2048
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0


@dataclass(slots=True)
class _Record:
    model: str
    version: str
    rows: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    request_id: str
    arrival_unix_s: float
    latency_s: float


class MirrorPublisher:
    """Samples served requests and streams them to the sidecar in columnar batches."""

    def __init__(
        self,
        address: str,
        repository: ModelRepository,
        registry: CollectorRegistry,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
    ) -> None:
        self.address = address
        self.repository = repository
        self.queue_capacity = queue_capacity
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self._queue: deque[_Record] = deque()
        self._queued_rows = 0
        self._sender = f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._connected = False
        self.records = Counter(
            "driftserve_mirror_records_total",
            "Served requests seen by the mirror tap, by outcome (sent, dropped, sampled_out).",
            ["model", "outcome"],
            registry=registry,
        )
        self.rows_sent = Counter(
            "driftserve_mirror_rows_sent_total", "Rows delivered to the sidecar.", ["model"], registry=registry
        )
        self.batches_sent = Counter(
            "driftserve_mirror_batches_sent_total", "MirrorBatch messages written to the sidecar.", registry=registry
        )
        self.connected = Gauge(
            "driftserve_mirror_connected", "1 while a Publish stream to the sidecar is open.", registry=registry
        )
        self.queue_depth = Gauge(
            "driftserve_mirror_queue_depth_records", "Records that were waiting at the last flush to the sidecar.", registry=registry
        )

    # ------------------------------------------------------------------ request path
    def tap(self, served: ServedVersion, request: InferenceRequest, outputs: dict[str, np.ndarray]) -> None:
        """Maybe enqueue one served request; O(1), never blocks, never raises.

        Models with a ``drift`` section are sampled at ``drift.mirror.sample_rate``; a model with
        only a shadow version is mirrored in full so the sidecar can compare every request.
        """
        config = served.model.config
        drift = config.drift
        if drift is None and config.deployment.shadow_version is None:
            return  # nothing in the sidecar would use it
        rate = drift.mirror.sample_rate if drift is not None else 1.0
        name = served.name
        if rate < 1.0 and random.random() >= rate:
            self.records.labels(name, "sampled_out").inc()
            return
        if len(self._queue) >= self.queue_capacity:
            self.records.labels(name, "dropped").inc()
            return
        now_ns = time.perf_counter_ns()
        latency_s = (now_ns - request.arrival_ns) / 1e9 if request.arrival_ns else 0.0
        rows = next(iter(request.inputs.values())).shape[0] if served.model.batched else 1
        self._queue.append(
            _Record(
                name, str(served.version), rows, request.inputs, outputs, request.request_id,
                time.time() - latency_s, latency_s,
            )
        )
        self._queued_rows += rows
        if self._queued_rows >= self.flush_rows and self._wakeup is not None:
            self._wakeup.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background sender (inside the running loop)."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mirror-publisher")

    async def close(self) -> None:
        """Stop sending; what is still queued is dropped and counted."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._drop_all()

    # ------------------------------------------------------------------ background sender
    async def _run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            channel = grpc.aio.insecure_channel(self.address)
            call = None
            try:
                call = pb_grpc.MirrorStub(channel).Publish()
                await self._pump(call)
            except asyncio.CancelledError:
                if call is not None:
                    call.cancel()
                await channel.close()
                raise
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
                if self._connected:
                    logger.warning("mirror stream to %s ended: %s; reconnecting", self.address, _short(exc))
                self._set_connected(False)
                self._drop_all()
                await channel.close()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            await channel.close()
            backoff = BACKOFF_INITIAL_S

    async def _pump(self, call: Any) -> None:
        assert self._wakeup is not None
        await call.wait_for_connection()
        self._set_connected(True)
        logger.info("mirroring to sidecar at %s", self.address)
        while True:
            if not self._queue:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.flush_interval_s)
                except TimeoutError:
                    pass
                if call.done():
                    raise asyncio.InvalidStateError("sidecar closed the stream")
                continue
            self.queue_depth.set(len(self._queue))  # sampled per flush, not per request
            for batch, counts in self._drain():
                await call.write(batch)
                self.batches_sent.inc()
                self.rows_sent.labels(batch.model).inc(batch.rows)
                self.records.labels(batch.model, "sent").inc(counts)
            await asyncio.sleep(self.flush_interval_s if self._queued_rows < self.flush_rows else 0)

    def _drain(self) -> list[tuple[pb.MirrorBatch, int]]:
        """Take everything queued and build one columnar batch per model version."""
        groups: dict[tuple[str, str], list[_Record]] = {}
        while self._queue:
            record = self._queue.popleft()
            groups.setdefault((record.model, record.version), []).append(record)
        self._queued_rows = 0
        return [(_to_batch(model, version, records, self._sender), len(records))
                for (model, version), records in groups.items()]

    def _drop_all(self) -> None:
        while self._queue:
            self.records.labels(self._queue.popleft().model, "dropped").inc()
        self._queued_rows = 0
        self.queue_depth.set(0)

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        self.connected.set(1.0 if value else 0.0)


def _to_batch(model: str, version: str, records: list[_Record], sender: str) -> pb.MirrorBatch:
    def tensors(key: str) -> list[pb.Tensor]:
        first = getattr(records[0], key)
        out = []
        for name in first:
            parts = [getattr(r, key)[name] for r in records]
            array = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            out.append(pb.Tensor(name=name, datatype=v2_datatype(array), shape=array.shape, data=encode_raw(array)))
        return out

    return pb.MirrorBatch(
        model=model,
        version=version,
        rows=sum(r.rows for r in records),
        inputs=tensors("inputs"),
        outputs=tensors("outputs"),
        request_ids=[r.request_id for r in records],
        request_rows=[r.rows for r in records],
        arrival_unix_s=[r.arrival_unix_s for r in records],
        latency_s=[r.latency_s for r in records],
        sender=sender,
    )


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
