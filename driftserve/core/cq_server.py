"""A gRPC server that runs grpc.aio handlers on the event loop, fed by one completion-queue thread.

grpc.aio's server spends about 175 µs of its event-loop thread on every unary call before a
handler runs a line (docs/ARCHITECTURE.md, "What one unary call costs"): a ``_request_call`` task
re-armed per call, an ``asyncio.wait`` in its serving loop, two more tasks per call, four
completion-queue round trips each woken through its poller thread, and a servicer context. This
server talks to gRPC's core through the same Cython layer (``grpc._cython.cygrpc``, which grpcio's
own synchronous server is written against) and keeps the loop's share to what a handler needs:

- **One poller thread** waits on the completion queue (gRPC releases the GIL while it waits). It
  re-arms ``request_call`` as soon as a call arrives, finds the method handler (the same generic
  handlers grpc.aio takes, so the bearer-token check of ``core.grpc_auth`` runs unchanged), and
  for a unary request starts the receive of its message at once. It hands the loop only what a
  handler needs: the call with its message (or a stream start), a stream read or write that
  completed, a cancellation.
- **Hand-offs are batched**: the poller appends to a deque and wakes the loop only when no wake-up
  is pending, so under load one ``call_soon_threadsafe`` carries many calls.
- **The loop** runs each call as one task and builds the batch that ends it: reply, initial
  metadata and status. While other calls are in flight it hands that batch to **sender threads**
  (``SENDER_THREADS``, sharing one queue): starting it makes gRPC's core frame and write the reply
  there and then (~30 µs, the GIL released), and on the loop that write held up every call queued
  behind it. With two, one writes while the other waits for the GIL or the socket, so a batch's
  replies do not go out one after another behind a single thread. A stream's writes go the same
  way (one at a time per stream: the handler awaits each). Alone, a call sends its own and saves
  the hand-off. With ``send_beside_loop=False``
  the loop sends every reply: one process on many cores is bound by its GIL, and there each
  hand-off costs more than the write it moves. A client's cancellation or
  a passed deadline cancels the task, as in grpc.aio; for a unary call from its 20th millisecond
  on (``_ARM_CLOSE_AFTER_S``): watching for it from the start would cost every call one more
  completion, ~10% of the bare transport's CPU per call.
- **Overload is refused before it queues**: past ``max_pending_calls`` calls handed to the loop
  and not yet started, the poller answers RESOURCE_EXHAUSTED itself, with a
  ``grpc-retry-pushback-ms`` trailer, and counts the refusal (``refused``).

Handlers see a ``ServicerContext`` with grpc.aio's methods (abort, set_code, set_details,
trailing and initial metadata, time_remaining, peer, auth_context, read, write, cancelled), and
all four call shapes: unary or streaming requests and replies, as coroutines, async generators
or plain generators.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import grpc
from grpc._cython import cygrpc

from driftserve.core import gil_cpu
from driftserve.core.thread_names import name_native_thread

logger = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]

_EMPTY_FLAGS = 0
_POLL_PERIOD_S = 1.0
# A unary call learns that its client cancelled (or that its deadline passed) from a receive-close
# operation. Armed at once it costs every call one more completion (~10% of the bare transport's
# CPU per call), so a unary call arms it only once it has run this long; one that finishes sooner
# sends it with its reply.
_ARM_CLOSE_AFTER_S = 0.02
# A deadline further away than this is gRPC's "infinite future": no deadline.
_NO_DEADLINE_AFTER_S = 1e9
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
# Threads that start the batches the loop hands over. One writes a batch's burst of replies one
# after another while the machine sits partly idle (docs/ARCHITECTURE.md, "Two reply senders").
SENDER_THREADS = 2


# What this module uses of gRPC's Cython layer: the objects grpcio's own synchronous server is
# written against. It is not a public API, so the server checks for it (``available``) and falls
# back to grpc.aio where a grpcio release has moved it.
_CYGRPC_NAMES = (
    "Server",
    "CompletionQueue",
    "CompletionType",
    "ReceiveMessageOperation",
    "ReceiveCloseOnServerOperation",
    "SendInitialMetadataOperation",
    "SendMessageOperation",
    "SendStatusFromServerOperation",
    "auth_context",
    "peer_identities",
)


def available() -> bool:
    """Whether this grpcio has what the front end needs from ``grpc._cython.cygrpc``."""
    return all(hasattr(cygrpc, name) for name in _CYGRPC_NAMES) and all(
        hasattr(cygrpc.Server, method) for method in ("request_call", "shutdown", "cancel_all_calls", "destroy")
    )


class _HandlerCallDetails(NamedTuple):
    """What a generic handler's ``service`` sees of a call (``grpc.HandlerCallDetails``)."""

    method: str
    invocation_metadata: Metadata


class _Tag:
    """What a completed batch is about; the poller dispatches on ``kind``."""

    __slots__ = ("kind", "rpc")

    def __init__(self, kind: int, rpc: _Rpc | None) -> None:
        self.kind = kind
        self.rpc = rpc


# Tag kinds. The poller handles REQUEST, FIRST_MESSAGE, CLOSE, FINISH, SHUTDOWN itself and hands
# READ and WRITE completions to the loop.
_REQUEST, _FIRST_MESSAGE, _CLOSE, _FINISH, _READ, _WRITE, _SHUTDOWN = range(7)
# Hand-off kinds (poller -> loop).
_START, _CANCEL, _READ_DONE, _WRITE_DONE, _SHUTDOWN_DONE = range(5)


class _Rpc:
    """One call: its core handle, what it asked for, and where the loop stands with it."""

    __slots__ = (
        "call",
        "cancelled",
        "close_armed",
        "deadline",
        "finished",
        "handler",
        "initial_sent",
        "metadata",
        "method",
        "reader",
        "started_at",
        "task",
        "writer",
    )

    def __init__(self, call: Any, method: str, metadata: Metadata, deadline: float) -> None:
        self.call = call
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.handler: Any = None  # set once the lookup found it
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False
        self.initial_sent = False
        self.finished = False
        self.close_armed = False  # a receive-close operation has been started for it
        self.started_at = 0.0  # loop.time() when the loop took it
        # The loop futures of the read and of the write in progress (gRPC allows one of each).
        self.reader: asyncio.Future[Any] | None = None
        self.writer: asyncio.Future[Any] | None = None


def _status_code(code: grpc.StatusCode) -> int:
    return int(code.value[0])


class _Ending(NamedTuple):
    """What the batch that ends a call must still include, as the call stood before it."""

    headers: bool  # the initial metadata has not been sent
    close: bool  # no receive-close has been started

    @classmethod
    def of(cls, rpc: _Rpc) -> _Ending:
        return cls(not rpc.initial_sent, not rpc.close_armed)


def _final_ops(
    ending: _Ending,
    code: grpc.StatusCode,
    details: str,
    initial: Metadata | None = None,
    reply: bytes | None = None,
    trailing: Metadata | None = None,
) -> tuple[Any, ...]:
    """The batch that ends a call: headers and receive-close where ``ending`` still needs them,
    the reply, the status."""
    ops: list[Any] = []
    if ending.headers:
        ops.append(cygrpc.SendInitialMetadataOperation(initial, _EMPTY_FLAGS))
    if reply is not None:
        ops.append(cygrpc.SendMessageOperation(reply, _EMPTY_FLAGS))
    ops.append(cygrpc.SendStatusFromServerOperation(trailing, _status_code(code), details, _EMPTY_FLAGS))
    if ending.close:
        ops.append(cygrpc.ReceiveCloseOnServerOperation(_EMPTY_FLAGS))
    return tuple(ops)


class ServicerContext:
    """grpc.aio's servicer context for a call served by ``CompletionQueueServer``."""

    __slots__ = ("_code", "_details", "_initial", "_rpc", "_server", "_trailing")

    def __init__(self, rpc: _Rpc, server: CompletionQueueServer) -> None:
        self._rpc = rpc
        self._server = server
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._initial: Metadata | None = None

    # --- what the client sent -------------------------------------------------------------
    def invocation_metadata(self) -> Metadata:
        return self._rpc.metadata

    def time_remaining(self) -> float | None:
        """Seconds until the call's deadline; None when it has none."""
        deadline = self._rpc.deadline
        now = time.time()
        if deadline - now > _NO_DEADLINE_AFTER_S:
            return None
        return max(deadline - now, 0.0)

    def peer(self) -> str:
        peer: bytes | str = self._rpc.call.peer()
        return peer.decode("utf-8", "replace") if isinstance(peer, bytes) else peer

    def peer_identities(self) -> Sequence[bytes] | None:
        return cygrpc.peer_identities(self._rpc.call)  # type: ignore[no-any-return]

    def auth_context(self) -> dict[str, Sequence[bytes]]:
        return dict(cygrpc.auth_context(self._rpc.call))

    def cancelled(self) -> bool:
        return self._rpc.cancelled

    def done(self) -> bool:
        return self._rpc.finished or self._rpc.cancelled

    # --- what the server answers ----------------------------------------------------------
    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Iterable[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    async def send_initial_metadata(self, initial_metadata: Iterable[tuple[str, str | bytes]]) -> None:
        """Send the response headers now (once, before any message)."""
        if self._rpc.initial_sent:
            raise grpc.aio.UsageError("initial metadata has already been sent")
        self._initial = tuple(initial_metadata)
        ops = (cygrpc.SendInitialMetadataOperation(self._initial, _EMPTY_FLAGS),)
        self._rpc.initial_sent = True
        await self._server._operate(self._rpc, ops, _WRITE)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Iterable[tuple[str, str | bytes]] = ()
    ) -> None:
        """End the call with ``code`` and ``details``: raises, as grpc.aio's abort does."""
        if code == grpc.StatusCode.OK:
            logger.error("abort() called with StatusCode.OK; sending UNKNOWN instead")
            code = grpc.StatusCode.UNKNOWN
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError(f"aborted with {code.name}: {details}")

    async def read(self) -> Any:
        """The next request message of a streaming request; ``grpc.aio.EOF`` after the last."""
        raw = await self._server._receive(self._rpc)
        if raw is None:
            return grpc.aio.EOF
        return self._server._deserialize(self._rpc, raw)

    async def write(self, message: Any) -> None:
        """Send one response message (streaming replies); returns once gRPC took it."""
        await self._server._write(self._rpc, self, message)


class _RequestIterator:
    """The request stream a streaming handler iterates."""

    __slots__ = ("_context",)

    def __init__(self, context: ServicerContext) -> None:
        self._context = context

    def __aiter__(self) -> _RequestIterator:
        return self

    async def __anext__(self) -> Any:
        message = await self._context.read()
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return message


class _DeserializeError(Exception):
    """A request message the method's deserializer refused."""


class CompletionQueueServer:
    """A ``grpc.aio.Server`` stand-in: same registration, ports, start, stop and handlers.

    Create it inside the running event loop that should run the handlers.
    """

    def __init__(
        self,
        options: Sequence[tuple[str, Any]] = (),
        *,
        max_pending_calls: int | None = None,
        retry_after_ms: int = 100,
        on_refused: Callable[[], None] | None = None,
        send_beside_loop: bool = True,
        sender_threads: int = SENDER_THREADS,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._cq = cygrpc.CompletionQueue()
        self._server = cygrpc.Server(tuple(options), False)
        self._server.register_completion_queue(self._cq)
        self._handlers: list[grpc.GenericRpcHandler] = []
        self._max_pending = max_pending_calls
        self._pushback = ((RETRY_PUSHBACK_KEY, str(retry_after_ms)),)
        self._inbox: collections.deque[tuple[int, _Rpc | None, Any]] = collections.deque()
        self._wake_pending = False
        # Calls handed to the loop (written by the poller) and started there (written by the loop).
        self._handed = 0
        self._started = 0
        self.refused = 0  # calls refused for backlog (poller thread writes; anyone reads)
        self._on_refused = on_refused
        self._rpcs: set[_Rpc] = set()  # calls the loop is serving
        self._closing = False  # no batch may start once set (the queue is about to shut down)
        self._state = "new"
        self._shutdown_done = asyncio.Event()
        self._terminated = asyncio.Event()
        self._thread: threading.Thread | None = None
        # Batches for the sender thread to start (``_others_in_flight``): (start, its arguments).
        self._outbox: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._senders: list[threading.Thread] = []
        # False: the loop writes every reply itself (one GIL-bound process on many cores).
        self._send_beside_loop = send_beside_loop
        self._sender_threads = max(1, sender_threads)
        self._sweep: asyncio.TimerHandle | None = None

    # --- grpc.aio.Server's surface ----------------------------------------------------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._handlers.extend(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        """Nothing to add: the generated code registers the same handlers as a generic one."""

    def add_insecure_port(self, address: str) -> int:
        return int(self._server.add_http2_port(address.encode()))

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return int(self._server.add_http2_port(address.encode(), server_credentials._credentials))

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError("the server has already been started")
        self._server.start()
        self._state = "started"  # the poller re-arms request_call while it is
        self._server.request_call(self._cq, self._cq, _Tag(_REQUEST, None))
        self._thread = threading.Thread(target=self._poll_forever, name="grpc-cq-poller", daemon=True)
        self._thread.start()
        if self._send_beside_loop:
            self._senders = [
                threading.Thread(target=self._send_forever, name="grpc-cq-sender", daemon=True)
                for _ in range(self._sender_threads)
            ]
            for sender in self._senders:
                sender.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls; give those in progress ``grace`` seconds (None: none), then cancel them."""
        if self._state == "new":
            self._state = "stopped"
            self._terminated.set()
            return
        if self._state != "started":
            await self._terminated.wait()
            return
        self._state = "stopping"
        self._server.shutdown(self._cq, _Tag(_SHUTDOWN, None))
        if grace is not None and grace > 0:
            with contextlib.suppress(TimeoutError):  # the grace ran out: cancel what is left
                await asyncio.wait_for(self._shutdown_done.wait(), grace)
        if not self._shutdown_done.is_set():
            self._server.cancel_all_calls()
            await self._shutdown_done.wait()
        # Every call has ended in gRPC's core; handlers still running are cancelled, and none
        # may start a batch on the queue from now on.
        self._closing = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        tasks = [rpc.task for rpc in self._rpcs if rpc.task is not None and not rpc.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for _ in self._senders:  # no final batch may start once the queue shuts down
            self._outbox.put(None)
        for sender in self._senders:
            await asyncio.to_thread(sender.join)
        self._server.destroy()
        self._cq.shutdown()
        await self._terminated.wait()
        self._state = "stopped"

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        if self._terminated.is_set():
            return True
        try:
            await asyncio.wait_for(self._terminated.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- the poller thread ------------------------------------------------------------------
    def _poll_forever(self) -> None:
        name_native_thread("grpc-cq-poller")
        gil_cpu.enlist()
        cq = self._cq
        while True:
            event = cq.poll(time.time() + _POLL_PERIOD_S)
            kind = event.completion_type
            if kind == cygrpc.CompletionType.queue_timeout:
                continue
            if kind == cygrpc.CompletionType.queue_shutdown:
                break
            try:
                self._on_event(event)
            except Exception:  # the poller must outlive any one call's surprise
                logger.exception("unexpected error handling a gRPC completion")
            event = None  # release the call before waiting again
        gil_cpu.discharge()
        self._hand(_SHUTDOWN_DONE, None, True)

    def _on_event(self, event: Any) -> None:
        tag: _Tag = event.tag
        kind = tag.kind
        if kind == _REQUEST:
            self._on_request(event)
        elif kind == _FIRST_MESSAGE:
            rpc = tag.rpc
            assert rpc is not None
            raw = event.batch_operations[0].message() if event.success else None
            if raw is None:
                # Cancelled before its message came (CLOSE tells the loop), or a client that
                # half-closed without sending one.
                if not rpc.cancelled:
                    self._finish_from_poller(
                        rpc, grpc.StatusCode.INTERNAL, "a unary call ended without a request message"
                    )
                return
            self._hand(_START, rpc, raw)
        elif kind == _CLOSE:
            rpc = tag.rpc
            assert rpc is not None
            if event.batch_operations[0].cancelled():
                rpc.cancelled = True
                self._hand(_CANCEL, rpc, None)
        elif kind == _READ:
            raw = event.batch_operations[0].message() if event.success else None
            self._hand(_READ_DONE, tag.rpc, raw)
        elif kind == _WRITE:
            self._hand(_WRITE_DONE, tag.rpc, event.success)
        elif kind == _SHUTDOWN:
            self._hand(_SHUTDOWN_DONE, None, False)
        # _FINISH: the status went out; nothing left to do.

    def _on_request(self, event: Any) -> None:
        if not event.success:  # the server is shutting down
            return
        if self._state == "started":
            self._server.request_call(self._cq, self._cq, _Tag(_REQUEST, None))
        details = event.call_details
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        metadata: Metadata = tuple(event.invocation_metadata)
        rpc = _Rpc(event.call, method, metadata, details.deadline)
        try:
            handler = self._find_handler(method, metadata)
        except Exception:  # a generic handler failed: answer the call rather than leave it hanging
            logger.exception("finding the handler of %s failed", method)
            self._finish_from_poller(rpc, grpc.StatusCode.INTERNAL, f"the server could not dispatch {method}")
            return
        if handler is None:
            self._finish_from_poller(rpc, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {method}")
            return
        if self._max_pending is not None and self._handed - self._started >= self._max_pending:
            self.refused += 1
            if self._on_refused is not None:
                self._on_refused()
            self._finish_from_poller(
                rpc,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server has {self._max_pending} calls waiting to start (--max-pending-calls); retry later",
                self._pushback,
            )
            return
        rpc.handler = handler
        if handler.request_streaming or handler.response_streaming:
            rpc.close_armed = True
            rpc.call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(_EMPTY_FLAGS),), _Tag(_CLOSE, rpc))
        if handler.request_streaming:
            self._hand(_START, rpc, None)
        else:
            rpc.call.start_server_batch((cygrpc.ReceiveMessageOperation(_EMPTY_FLAGS),), _Tag(_FIRST_MESSAGE, rpc))

    def _find_handler(self, method: str, metadata: Metadata) -> Any:
        details = _HandlerCallDetails(method, metadata)
        for generic in self._handlers:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    def _finish_from_poller(
        self, rpc: _Rpc, code: grpc.StatusCode, details: str, trailing: Metadata | None = None
    ) -> None:
        """Answer a call the loop never sees: status (and headers) only."""
        if self._closing:
            return
        rpc.call.start_server_batch(_final_ops(_Ending.of(rpc), code, details, trailing=trailing), _Tag(_FINISH, rpc))

    def _hand(self, kind: int, rpc: _Rpc | None, payload: Any) -> None:
        """Queue an item for the loop; wake it unless a wake-up is already on its way."""
        if kind == _START:
            self._handed += 1
        self._inbox.append((kind, rpc, payload))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop has closed: nobody is left to serve
                self._wake_pending = False

    # --- the event loop ---------------------------------------------------------------------
    def _drain(self) -> None:
        self._wake_pending = False
        inbox = self._inbox
        while inbox:
            kind, rpc, payload = inbox.popleft()
            if kind == _START:
                assert rpc is not None
                self._started += 1
                if rpc.cancelled or self._closing:
                    continue
                self._rpcs.add(rpc)
                rpc.started_at = self._loop.time()
                rpc.task = self._loop.create_task(self._serve(rpc, payload))
                if self._sweep is None:
                    self._sweep = self._loop.call_later(_ARM_CLOSE_AFTER_S, self._arm_closes)
            elif kind in (_READ_DONE, _WRITE_DONE):
                assert rpc is not None
                waiter = rpc.reader if kind == _READ_DONE else rpc.writer
                if waiter is not None and not waiter.done():
                    waiter.set_result(payload)
            elif kind == _CANCEL:
                assert rpc is not None
                rpc.cancelled = True
                if rpc.task is not None and not rpc.task.done():
                    rpc.task.cancel()
                for waiter in (rpc.reader, rpc.writer):
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
            elif kind == _SHUTDOWN_DONE:
                if payload:
                    self._terminated.set()
                else:
                    self._shutdown_done.set()

    def _arm_closes(self) -> None:
        """Arm the receive-close of every unary call that has run ``_ARM_CLOSE_AFTER_S`` or more,
        so that its client's cancellation or its deadline cancels its handler from then on."""
        self._sweep = None
        if self._closing:
            return
        due = self._loop.time() - _ARM_CLOSE_AFTER_S
        for rpc in self._rpcs:
            if not rpc.close_armed and not rpc.finished and rpc.started_at <= due:
                rpc.close_armed = True
                self._start_batch(rpc, (cygrpc.ReceiveCloseOnServerOperation(_EMPTY_FLAGS),), _Tag(_CLOSE, rpc))
        if self._rpcs:
            self._sweep = self._loop.call_later(_ARM_CLOSE_AFTER_S / 2, self._arm_closes)

    def _start_batch(self, rpc: _Rpc, ops: tuple[Any, ...], tag: _Tag) -> bool:
        if self._closing:
            return False
        try:
            rpc.call.start_server_batch(ops, tag)
        except (ValueError, RuntimeError):  # gRPC refused the batch: the call is over
            return False
        return True

    async def _operate(self, rpc: _Rpc, ops: tuple[Any, ...], kind: int) -> Any:
        """Start a batch whose completion the handler waits for (a read or a write)."""
        waiter = self._loop.create_future()
        if kind == _READ:
            rpc.reader = waiter
        else:
            rpc.writer = waiter
        try:
            if kind == _WRITE and self._others_in_flight():
                self._outbox.put((self._start_write, (rpc, ops)))
            elif not self._start_batch(rpc, ops, _Tag(kind, rpc)):
                raise asyncio.CancelledError
            return await waiter
        finally:
            if kind == _READ:
                rpc.reader = None
            else:
                rpc.writer = None

    async def _receive(self, rpc: _Rpc) -> bytes | None:
        if rpc.cancelled:
            return None
        raw: bytes | None = await self._operate(rpc, (cygrpc.ReceiveMessageOperation(_EMPTY_FLAGS),), _READ)
        return raw

    def _deserialize(self, rpc: _Rpc, raw: bytes) -> Any:
        deserializer = rpc.handler.request_deserializer
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception as exc:
            raise _DeserializeError(str(exc)) from exc

    def _serialize(self, rpc: _Rpc, message: Any) -> bytes:
        serializer = rpc.handler.response_serializer
        payload: bytes = message if serializer is None else serializer(message)
        return payload

    async def _write(self, rpc: _Rpc, context: ServicerContext, message: Any) -> None:
        if rpc.cancelled:
            raise asyncio.CancelledError
        payload = self._serialize(rpc, message)
        if rpc.initial_sent:
            ops: tuple[Any, ...] = (cygrpc.SendMessageOperation(payload, _EMPTY_FLAGS),)
        else:
            rpc.initial_sent = True
            ops = (
                cygrpc.SendInitialMetadataOperation(context._initial, _EMPTY_FLAGS),
                cygrpc.SendMessageOperation(payload, _EMPTY_FLAGS),
            )
        if not await self._operate(rpc, ops, _WRITE):
            raise asyncio.CancelledError  # the client has gone: the call is over

    async def _serve(self, rpc: _Rpc, raw: bytes | None) -> None:
        """Run the call's handler and send its reply and status."""
        context = ServicerContext(rpc, self)
        handler = rpc.handler
        reply: bytes | None = None
        try:
            if handler.request_streaming:
                request: Any = _RequestIterator(context)
            else:
                assert raw is not None
                request = self._deserialize(rpc, raw)
            if handler.response_streaming:
                behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for message in result:
                        await self._write(rpc, context, message)
                elif inspect.isawaitable(result):
                    await result  # a handler that writes with context.write
                elif result is not None:  # a plain generator or iterable of replies
                    for message in result:
                        await self._write(rpc, context, message)
            else:
                behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
                response = behavior(request, context)
                if inspect.isawaitable(response):
                    response = await response
                if context._code in (None, grpc.StatusCode.OK):
                    if response is None:
                        raise TypeError("the handler returned no response")
                    reply = self._serialize(rpc, response)
            code = context._code or grpc.StatusCode.OK
            details = context._details
        except grpc.aio.AbortError:
            code, details = context._code or grpc.StatusCode.UNKNOWN, context._details
        except _DeserializeError as exc:
            code, details = grpc.StatusCode.INTERNAL, f"the request message could not be parsed: {exc}"
        except asyncio.CancelledError:
            if rpc.cancelled or self._closing:
                self._release(rpc)
                return
            code, details = grpc.StatusCode.CANCELLED, "the server cancelled the call"
        except Exception as exc:
            logger.exception("unexpected error in the handler of %s", rpc.method)
            code, details = grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}"
        self._finish(rpc, context, code, details, reply)

    def _finish(
        self, rpc: _Rpc, context: ServicerContext, code: grpc.StatusCode, details: str, reply: bytes | None
    ) -> None:
        """Send the handler's headers, reply, status and trailers in one batch, and let the call go."""
        try:
            if rpc.cancelled or self._closing:
                return
            ending = _Ending.of(rpc)
            try:
                ops = _final_ops(
                    ending,
                    code,
                    details,
                    initial=context._initial,
                    reply=reply if code == grpc.StatusCode.OK else None,
                    trailing=context._trailing or None,
                )
            except Exception:  # e.g. trailing metadata gRPC cannot carry: still end the call
                self._unsendable(rpc, ending)
                return
            rpc.initial_sent = rpc.close_armed = True
            if self._others_in_flight():
                self._outbox.put((self._start_final, (rpc, ops, ending)))
            else:
                self._start_final(rpc, ops, ending)
        finally:
            rpc.finished = True
            self._release(rpc)

    def _others_in_flight(self) -> bool:
        """Whether a batch should start on the sender thread rather than here: starting it makes
        gRPC's core frame and write there and then, which on the loop holds up the other calls."""
        return self._send_beside_loop and len(self._rpcs) > 1

    def _start_final(self, rpc: _Rpc, ops: tuple[Any, ...], ending: _Ending) -> None:
        """Start the batch that ends a call (loop or sender thread); INTERNAL if gRPC refuses it."""
        if self._closing:
            return
        try:
            rpc.call.start_server_batch(ops, _Tag(_FINISH, rpc))
        except Exception:
            self._unsendable(rpc, ending)

    def _unsendable(self, rpc: _Rpc, ending: _Ending) -> None:
        """End a call whose reply gRPC would not take with INTERNAL (``ending``: as it stood before)."""
        if rpc.cancelled or self._closing:
            return
        logger.exception("the reply to %s could not be sent as the handler set it", rpc.method)
        ops = _final_ops(ending, grpc.StatusCode.INTERNAL, "the server could not send its reply")
        self._start_batch(rpc, ops, _Tag(_FINISH, rpc))

    def _start_write(self, rpc: _Rpc, ops: tuple[Any, ...]) -> None:
        """Start a stream's write (sender thread); one gRPC refuses completes as failed."""
        if not self._start_batch(rpc, ops, _Tag(_WRITE, rpc)):
            self._hand(_WRITE_DONE, rpc, False)

    def _send_forever(self) -> None:
        """A sender thread: start the batches the loop queued, until stop sends it a None."""
        name_native_thread("grpc-cq-sender")
        gil_cpu.enlist()
        get = self._outbox.get
        while (item := get()) is not None:
            start, args = item
            try:
                start(*args)
            except Exception:  # the thread must outlive any one call's surprise
                logger.exception("unexpected error starting a batch on a gRPC call")
        gil_cpu.discharge()

    def _release(self, rpc: _Rpc) -> None:
        self._rpcs.discard(rpc)
        rpc.task = None
