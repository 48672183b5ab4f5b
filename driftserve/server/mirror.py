"""The mirror tap: sampled, served traffic shipped to the drift sidecar, never on the request path.

``tap`` runs after a response is ready and copies the request's rows into the columnar staging
buffers of its model version (one copy per tensor, no I/O, no await): no reference to a request
message or an output array outlives the call, and a flush concatenates nothing. Stagings are
allocated on first use per tensor layout and reused after each flush, so the steady state allocates
no staging memory. A background task drains them every ``flush_interval_s`` or as soon as
``flush_rows`` rows wait, turns each into one ``MirrorBatch`` (``buf[:n]`` of every tensor) and
writes it on a client stream to ``driftserve.v1.Mirror/Publish``. When the row or byte budget is
used up, or the sidecar is slow, down or not started yet, records are dropped and counted; the
stream reconnects with exponential backoff. Serving never waits on any of it.

With ``--mirror-tls-ca`` the channel is TLS (and mutual TLS with a client certificate), and with
``--mirror-token-file`` each stream presents ``authorization: Bearer <token>``. A sidecar that
refuses the mirror (an unknown token, a token without scope ``mirror``, a certificate that does
not verify) is logged once as an error naming the flag to fix and counted in
``driftserve_mirror_rejections_total``; its records are dropped and counted like any others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import time
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc
from driftserve.core.auth import bearer
from driftserve.core.mirror_wire import accepted
from driftserve.core.tensors import encode_raw, v2_datatype
from driftserve.server.dataplane import InferenceRequest
from driftserve.server.metrics import counter_writer
from driftserve.server.repository import ModelRepository, ServedVersion

logger = logging.getLogger(__name__)

# Rows waiting across all stagings; beyond it records are dropped (the ``queue_capacity`` argument).
DEFAULT_QUEUE_CAPACITY = 16384
# A stream write costs the sender ~0.2 ms of CPU whatever its size (grpc.aio's completion hand-off,
# the syscall, loopback delivery) plus ~0.4 µs per row (benchmarks/mirror_write_cost.py): writes are
# paced by time, so their fixed cost is a few writes per second per model version, not a share of
# every request. 0.25 s stays well inside the sidecar's 1 s report cadence.
DEFAULT_FLUSH_INTERVAL_S = 0.25
DEFAULT_FLUSH_ROWS = 2048
# One staging holds at most this many bytes of rows (but always one request), so a model with
# large or variable per-row shapes never allocates capacity-sized buffers per layout.
STAGING_BYTES = 4 << 20
# Buffers of all stagings in use together; rows are a poor memory bound for large tensors.
MAX_STAGED_BYTES = 128 << 20
# Drained stagings kept per model version for reuse (double buffering, or two alternating layouts).
SPARES_PER_VERSION = 2
# close() waits this long for the last flush to reach the sidecar.
CLOSE_FLUSH_S = 1.0
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0
_OBJECT = np.dtype(np.object_)

# (name, buffer dtype, per-row shape) of each tensor, inputs then outputs.
TensorLayout = tuple[tuple[str, np.dtype, tuple[int, ...]], ...]
Layout = tuple[TensorLayout, TensorLayout]
_Column = tuple[int, str, np.ndarray, memoryview | None, int, tuple[int, ...], np.dtype]


class _Lane:
    """Per model version: the staging being filled, drained spares, and cached counter children."""

    __slots__ = ("dropped", "model", "open", "rows_sent", "sampled_out", "sent", "spares", "version")

    def __init__(self, model: str, version: str, counters: tuple[Any, Any, Any, Any]) -> None:
        self.model = model
        self.version = version
        self.open: _Staging | None = None
        self.spares: list[_Staging] = []
        self.sent, self.dropped, self.sampled_out, self.rows_sent = counters


class _Staging:
    """Columnar rows of one model version with one tensor layout, copied in by ``append``."""

    __slots__ = ("_batched", "_buffers", "_columns", "capacity", "lane", "layout", "n", "nbytes", "records")

    def __init__(self, lane: _Lane, layout: Layout, capacity: int, batched: bool) -> None:
        self.lane = lane
        self.layout = layout
        self.capacity = capacity
        self._buffers = tuple(
            [(name, np.empty((capacity, *shape), dtype), shape, dtype) for name, dtype, shape in part]
            for part in layout
        )
        self.nbytes = sum(buf.nbytes for part in self._buffers for _, buf, _, _ in part)
        self._batched = batched
        self._columns: dict[int, list[_Column]] = {}  # by request row count
        self.n = 0
        # (request id, rows, arrival and tap perf_counter_ns) per request, in tap order; the
        # seconds and unix times are computed at the flush, off the request path.
        self.records: list[tuple[str, int, int, int]] = []

    def append(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], rows: int) -> bool:
        """Copy one request's rows in; False (nothing counted) if they do not fit or match the layout.

        The data plane has validated the inputs and the batcher split the outputs by rows, so only
        the per-row shapes and dtypes can differ (variable dimensions) and need checking here.
        """
        n = self.n
        end = n + rows
        columns = self._columns.get(rows) or self._columns_for(rows)
        if end > self.capacity or len(inputs) + len(outputs) != len(columns):
            return False
        tensors = (inputs, outputs)
        # Rows written before a mismatch is found lie beyond n and are overwritten later.
        try:
            for part, name, buf, raw, row_bytes, shape, dtype in columns:
                array = tensors[part][name]
                if array.shape != shape or (array.dtype is not dtype and not _fits(array.dtype, dtype)):
                    return False
                if raw is not None:  # bytes into a byte view: cheaper per call than ndarray slice assignment
                    raw[n * row_bytes : end * row_bytes] = array.tobytes()
                else:
                    buf[n:end] = array  # object buffer; a non-batched array broadcasts into its one row
        except (KeyError, ValueError):
            return False
        self.n = end
        return True

    def _columns_for(self, rows: int) -> list[_Column]:
        """(0 input / 1 output, name, buffer, its byte view, bytes per row, request shape, dtype)."""
        lead = (rows,) if self._batched else ()
        columns = self._columns[rows] = [
            (part, name, buf, _byte_view(buf), buf.itemsize * math.prod(shape), lead + shape, dtype)
            for part, buffers in enumerate(self._buffers)
            for name, buf, shape, dtype in buffers
        ]
        return columns

    def to_batch(self, sender: str) -> pb.MirrorBatch:
        """One columnar message of the staged rows (``encode_raw`` copies them out)."""
        n = self.n
        request_ids, request_rows, arrivals_ns, taps_ns = zip(*self.records)
        unix_offset_s = time.time() - time.perf_counter_ns() / 1e9
        # An unknown arrival (0) counts as the tap time, with no latency.
        latency_s = [(tap - arrival) / 1e9 if arrival else 0.0 for arrival, tap in zip(arrivals_ns, taps_ns)]
        arrival_unix_s = [unix_offset_s + (arrival or tap) / 1e9 for arrival, tap in zip(arrivals_ns, taps_ns)]
        return pb.MirrorBatch(
            model=self.lane.model,
            version=self.lane.version,
            rows=n,
            inputs=[_tensor(name, buf[:n]) for name, buf, _, _ in self._buffers[0]],
            outputs=[_tensor(name, buf[:n]) for name, buf, _, _ in self._buffers[1]],
            request_ids=request_ids,
            request_rows=request_rows,
            arrival_unix_s=arrival_unix_s,
            latency_s=latency_s,
            sender=sender,
        )

    def reset(self) -> None:
        """Empty it for reuse; object buffers let go of their strings."""
        for _, buf, _, dtype in (*self._buffers[0], *self._buffers[1]):
            if dtype is _OBJECT:
                buf[: self.n] = None
        self.n = 0
        self.records.clear()


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
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self._metadata = bearer(token) if token is not None else None
        self._rejected_reason = ""  # the last rejection logged, so a refused mirror logs once
        self.repository = repository
        self.queue_capacity = queue_capacity  # rows
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.staging_rows = max(1, min(queue_capacity, 2 * flush_rows))
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._sealed: list[_Staging] = []
        self._staged_rows = 0
        self._staged_bytes = 0  # buffers of the open and sealed stagings
        self._sender = f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._connected = False
        self._closing = False  # set by close(): the sender flushes once more and ends the stream
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
        self.rejections = Counter(
            "driftserve_mirror_rejections_total",
            "Publish streams the sidecar refused, by reason (unauthenticated, permission_denied, tls).",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "driftserve_mirror_queue_depth_records",
            "Records staged for the sidecar and not yet sent.",
            registry=registry,
        )
        # Written per tapped request from the loop thread: the lock-free writer.
        self._depth = counter_writer(self.queue_depth)
        self._batches_sent = counter_writer(self.batches_sent)
        # Model -> the version the sidecar should shadow (a rollout's candidate in its shadow stage);
        # None: the stage is over, mirror until one untagged batch has told the sidecar.
        self.shadow_versions: dict[str, int | None] = {}

    # ------------------------------------------------------------------ request path
    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The mirror's token as call metadata (None without one), for other calls to the sidecar."""
        return self._metadata

    def tap(self, served: ServedVersion, request: InferenceRequest, outputs: dict[str, np.ndarray]) -> None:
        """Maybe copy one served request into its staging; never blocks, never awaits.

        Models with a ``drift`` section are sampled at ``drift.mirror.sample_rate``; a model with
        only a shadow version, or in a rollout's shadow stage, is mirrored in full so the sidecar
        can compare every request.
        """
        model = served.model  # its plain attributes, not ServedVersion's properties: this runs per request
        config = model.config
        drift = config.drift
        if drift is None and config.deployment.shadow_version is None and model.name not in self.shadow_versions:
            return  # nothing in the sidecar would use it (shadow_versions: a rollout's shadow stage)
        lane = self._lanes.get((model.name, model.version))
        if lane is None:
            lane = self._lane(model.name, model.version)
        if drift is not None and drift.mirror.sample_rate < 1.0 and random.random() >= drift.mirror.sample_rate:
            lane.sampled_out.inc()
            return
        inputs = request.inputs
        rows = next(iter(inputs.values())).shape[0] if model.batched else 1
        staged = self._staged_rows + rows
        if staged > self.queue_capacity:
            lane.dropped.inc()
            return
        tapped_ns = time.perf_counter_ns()
        staging = lane.open
        if staging is None or not staging.append(inputs, outputs, rows):
            try:
                staging = self._restage(lane, inputs, outputs, rows, model.batched)
            except Exception:  # tensors no staging can hold must not fail the served request
                logger.exception("mirror tap of model %s cannot stage a request; dropping it", model.name)
                staging = None
            if staging is None:
                lane.dropped.inc()
                return
        staging.records.append((request.request_id, rows, request.arrival_ns, tapped_ns))
        self._staged_rows = staged
        self._depth.inc(1)
        if staged >= self.flush_rows and self._wakeup is not None:
            self._wakeup.set()

    def _lane(self, name: str, version: int) -> _Lane:
        # Lock-free writers: every write (tap, sender, close) runs on the loop thread.
        counters = (
            counter_writer(self.records.labels(name, "sent")),
            counter_writer(self.records.labels(name, "dropped")),
            counter_writer(self.records.labels(name, "sampled_out")),
            counter_writer(self.rows_sent.labels(name)),
        )
        lane = self._lanes[(name, version)] = _Lane(name, str(version), counters)
        return lane

    def _restage(
        self, lane: _Lane, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], rows: int, batched: bool
    ) -> _Staging | None:
        """Seal the lane's staging (full, or another layout) and open one that takes this request.

        Returns it with the request's rows copied in, or None when the byte budget is used up.
        """
        current, lane.open = lane.open, None
        if current is not None:
            if current.n:
                self._sealed.append(current)
            else:
                self._staged_bytes -= current.nbytes
                self._release(current)
        layout = _layout(inputs, outputs, batched)
        staging = next((s for s in lane.spares if s.layout == layout and s.capacity >= rows), None)
        if staging is not None:
            nbytes = staging.nbytes
        else:
            row_bytes = sum(dtype.itemsize * math.prod(shape) for part in layout for _, dtype, shape in part)
            capacity = max(rows, min(self.staging_rows, STAGING_BYTES // max(row_bytes, 1)))
            nbytes = capacity * row_bytes
        if self._staged_bytes and self._staged_bytes + nbytes > MAX_STAGED_BYTES:
            return None
        if staging is not None:
            lane.spares.remove(staging)
        else:
            staging = _Staging(lane, layout, capacity, batched)
        self._staged_bytes += staging.nbytes
        lane.open = staging
        return staging if staging.append(inputs, outputs, rows) else None

    def _release(self, staging: _Staging) -> None:
        """Keep an empty staging as a spare of its lane (the most recent ones win)."""
        spares = staging.lane.spares
        spares.insert(0, staging)
        del spares[SPARES_PER_VERSION:]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background sender (inside the running loop)."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mirror-publisher")

    async def close(self) -> None:
        """Stop sending: what is staged goes out in one last flush while the stream is up (for at
        most ``CLOSE_FLUSH_S``); whatever is left is dropped and counted."""
        if self._task is not None:
            if self._connected and not self._task.done():
                assert self._wakeup is not None
                self._closing = True
                self._wakeup.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._task), CLOSE_FLUSH_S)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop_all()

    # ------------------------------------------------------------------ background sender
    async def _run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            channel = (
                grpc.aio.insecure_channel(self.address)
                if self.credentials is None
                else grpc.aio.secure_channel(self.address, self.credentials)
            )
            call = None
            try:
                call = pb_grpc.MirrorStub(channel).Publish(metadata=self._metadata)
                await self._pump(call)  # returns only when closing, after the last flush
                await channel.close()
                return
            except asyncio.CancelledError:
                if call is not None:
                    call.cancel()
                await channel.close()
                raise
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
                code, details = await _status(exc, call)
                if not self._rejected(code, details) and self._connected:
                    logger.warning("mirror stream to %s ended: %s; reconnecting", self.address, _short(exc))
                self._set_connected(False)
                self._drop_all()
                await channel.close()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _rejected(self, code: grpc.StatusCode | None, details: str) -> bool:
        """Whether the sidecar refused the stream's credentials: if so counted, and logged once."""
        reason = _rejection_reason(code, details)
        if not reason:
            return False
        self.rejections.labels(reason).inc()
        if reason != self._rejected_reason:
            self._rejected_reason = reason
            fix = {
                "unauthenticated": "--mirror-token-file must hold a token of the sidecar's --auth-tokens-file",
                "permission_denied": "the token of --mirror-token-file needs scope 'mirror' in the sidecar's "
                "tokens file",
                "tls": "--mirror-tls-ca must verify the sidecar's certificate (and --mirror-tls-cert/--mirror-tls-key "
                "be signed by its --tls-client-ca)",
            }[reason]
            logger.error(
                "the sidecar at %s refused the mirror (%s: %s); %s. Mirrored records are dropped and counted "
                "until it accepts; serving is not affected",
                self.address,
                code.name if code is not None else "UNAVAILABLE",
                details,
                fix,
            )
        return True

    async def _pump(self, call: Any) -> None:
        assert self._wakeup is not None
        await call.wait_for_connection()
        self._set_connected(True)
        if not self._rejected_reason:  # while refused, each retry connects: the error said it once
            logger.info("mirroring to sidecar at %s", self.address)
        # The sidecar sends its headers as soon as it accepts the stream; a refused stream ends
        # without them (its status arrives alone, however long a loaded machine takes to send it).
        headers = asyncio.ensure_future(call.initial_metadata())
        headers.add_done_callback(_retrieve)
        try:
            while True:
                if self._staged_rows < self.flush_rows and not self._closing:
                    # Flush every interval, or as soon as flush_rows rows are waiting.
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self.flush_interval_s)
                if call.done():
                    raise asyncio.InvalidStateError("sidecar closed the stream")
                if self._rejected_reason and _accepted_by(headers):  # the refusal logged before is over
                    self._rejected_reason = ""
                    logger.info("the sidecar at %s accepts the mirror now; mirroring", self.address)
                if self._staged_rows:
                    await self._flush(call)
                if self._closing:
                    await call.done_writing()
                    await call  # the sidecar has read every batch
                    return
        finally:
            headers.cancel()

    async def _flush(self, call: Any) -> None:
        """Write every staging as one batch; a failed write drops (and counts) what was not delivered."""
        batches = self._drain()
        for index, (batch, lane, records) in enumerate(batches):
            try:
                await call.write(batch)
            except BaseException:
                for _, unsent_lane, unsent in batches[index:]:  # drained but never delivered
                    unsent_lane.dropped.inc(unsent)
                raise
            self._batches_sent.inc()
            lane.rows_sent.inc(batch.rows)
            lane.sent.inc(records)

    def _drain(self) -> list[tuple[pb.MirrorBatch, _Lane, int]]:
        """Seal every staging and turn each into one batch; the buffers go back to their lanes."""
        batches = []
        for staging in self._take_all():
            batch = staging.to_batch(self._sender)
            model = staging.lane.model
            if model in self.shadow_versions:
                shadow = self.shadow_versions[model]
                if shadow is None:  # the stage is over: this untagged batch tells the sidecar so
                    del self.shadow_versions[model]
                else:
                    batch.shadow_version = str(shadow)
            batches.append((batch, staging.lane, len(staging.records)))
            staging.reset()
            self._release(staging)
        return batches

    def _take_all(self) -> list[_Staging]:
        """Sealed stagings, then the open ones with rows, oldest first; the budgets start over."""
        taken, self._sealed = self._sealed, []
        for lane in self._lanes.values():
            staging, lane.open = lane.open, None
            if staging is not None:
                if staging.n:
                    taken.append(staging)
                else:
                    self._release(staging)
        self._staged_rows = self._staged_bytes = 0
        self._depth.set(0)
        return taken

    def _drop_all(self) -> None:
        for staging in self._take_all():
            staging.lane.dropped.inc(len(staging.records))
            staging.reset()
            self._release(staging)

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        self.connected.set(1.0 if value else 0.0)


def _layout(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], batched: bool) -> Layout:
    skip = 1 if batched else 0

    def part(tensors: dict[str, np.ndarray]) -> TensorLayout:
        return tuple(
            (name, _OBJECT if a.dtype.kind in "OSU" else a.dtype, a.shape[skip:]) for name, a in tensors.items()
        )

    return part(inputs), part(outputs)


def _byte_view(buffer: np.ndarray) -> memoryview | None:
    """A flat byte view of a numeric buffer; None for object buffers (no buffer protocol) and empty ones."""
    # ``buffer.data`` is ``memoryview(buffer)``; numpy's stubs give ndarray ``__buffer__`` only on Python >= 3.12.
    return None if buffer.dtype.hasobject or buffer.size == 0 else buffer.data.cast("B")


def _fits(dtype: np.dtype, buffer_dtype: np.dtype) -> bool:
    """Whether an array of ``dtype`` can be stored as is in a buffer of ``buffer_dtype``."""
    return dtype == buffer_dtype or (buffer_dtype is _OBJECT and dtype.kind in "SU")


def _tensor(name: str, array: np.ndarray) -> pb.Tensor:
    return pb.Tensor(name=name, datatype=v2_datatype(array), shape=array.shape, data=encode_raw(array))


async def _status(exc: BaseException, call: Any) -> tuple[grpc.StatusCode | None, str]:
    """The status a failed stream ended with: the error's, or the finished call's."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or ""
    if call is not None and call.done():
        try:
            return await call.code(), await call.details() or ""
        except Exception:  # a cancelled call has no status to read
            return None, ""
    return None, ""


def _rejection_reason(code: grpc.StatusCode | None, details: str) -> str:
    """``unauthenticated``, ``permission_denied`` or ``tls`` for a refused stream; "" otherwise."""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "unauthenticated"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "permission_denied"
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and any(w in lowered for w in ("ssl", "handshake", "certificate", "tls")):
        return "tls"
    return ""


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _accepted_by(headers: asyncio.Future[Any]) -> bool:
    """Whether the sidecar's response headers have come and say it accepted the stream."""
    return headers.done() and not headers.cancelled() and headers.exception() is None and accepted(headers.result())


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a background future's error as seen (a stream that ended is handled where it ends)."""
    if not future.cancelled():
        future.exception()
