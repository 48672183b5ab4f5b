"""The completion-queue gRPC front end: grpc.aio's handler semantics over the real wire.

Each test starts a ``CompletionQueueServer`` in the test's event loop on a free loopback port and
calls it with grpc.aio's client: every call shape, metadata both ways, statuses, cancellation,
deadlines, the backlog refusal and a graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from driftserve.core import cq_server
from driftserve.core.cq_server import RETRY_PUSHBACK_KEY, CompletionQueueServer

SERVICE = "test.Echo"


def _path(method: str) -> str:
    return f"/{SERVICE}/{method}"


class Events:
    """What the handlers observed, for the tests to assert on."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.time_remaining: list[float | None] = []
        self.metadata: list[tuple[Any, ...]] = []
        self.release = asyncio.Event()
        self.held = 0  # calls of Held waiting for release


def _handlers(events: Events) -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: Any) -> bytes:
        events.metadata.append(tuple(context.invocation_metadata()))
        events.time_remaining.append(context.time_remaining())
        context.set_trailing_metadata((("served-by", "cq"),))
        return b"echo:" + request

    async def fail(request: bytes, context: Any) -> bytes:
        if request == b"abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now", (("why", "testing"),))
        if request == b"code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("no such thing")
            return b"ignored"
        if request == b"none":
            return None  # type: ignore[return-value]
        raise ValueError("boom")

    async def wait(request: bytes, context: Any) -> bytes:
        events.started.set()
        try:
            await events.release.wait()
        except asyncio.CancelledError:
            events.cancelled.set()
            raise
        return b"released"

    async def held(request: bytes, context: Any) -> bytes:
        events.held += 1
        await events.release.wait()
        if request == b"bad":
            context.set_trailing_metadata((("Not A Valid Key!", "x"),))
        return b"held:" + request

    async def block_loop(request: bytes, context: Any) -> bytes:
        time.sleep(0.5)  # holds the event loop, as an overloaded server's would be held
        return b"late"

    async def count_up(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    async def count_by_write(request: bytes, context: Any) -> None:
        for i in range(int(request)):
            await context.write(str(i).encode())

    async def total(requests: AsyncIterator[bytes], context: Any) -> bytes:
        return str(sum([int(r) async for r in requests])).encode()

    async def total_by_read(requests: AsyncIterator[bytes], context: Any) -> bytes:
        values = []
        while (message := await context.read()) is not grpc.aio.EOF:
            values.append(int(message))
        return str(sum(values)).encode()

    async def doubles(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        # Reads and writes overlap: a reader task feeds a queue the generator drains.
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def reader() -> None:
            async for message in requests:
                await queue.put(message)
            await queue.put(None)

        task = asyncio.create_task(reader())
        while (message := await queue.get()) is not None:
            yield str(2 * int(message)).encode()
        await task

    async def bad_trailer(request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("Not A Valid Key!", "x"),))
        return b"unsendable"

    def count_plainly(request: bytes, context: Any) -> Any:  # a plain generator
        yield from (str(i).encode() for i in range(int(request)))

    def squared(request: int, context: Any) -> int:  # a plain function with (de)serializers
        return request * request

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Wait": grpc.unary_unary_rpc_method_handler(wait),
            "Held": grpc.unary_unary_rpc_method_handler(held),
            "BlockLoop": grpc.unary_unary_rpc_method_handler(block_loop),
            "CountUp": grpc.unary_stream_rpc_method_handler(count_up),
            "CountByWrite": grpc.unary_stream_rpc_method_handler(count_by_write),
            "Total": grpc.stream_unary_rpc_method_handler(total),
            "TotalByRead": grpc.stream_unary_rpc_method_handler(total_by_read),
            "Doubles": grpc.stream_stream_rpc_method_handler(doubles),
            "BadTrailer": grpc.unary_unary_rpc_method_handler(bad_trailer),
            "CountPlainly": grpc.unary_stream_rpc_method_handler(count_plainly),
            "Squared": grpc.unary_unary_rpc_method_handler(
                squared,
                request_deserializer=lambda raw: int(raw.decode()),
                response_serializer=lambda value: str(value).encode(),
            ),
        },
    )


async def _serve(events: Events, outbox: Any = None, **kwargs: Any) -> tuple[CompletionQueueServer, str]:
    """A started server on a free port; ``outbox`` (a ``_CountingOutbox``) wraps its sender's queue."""
    server = CompletionQueueServer(**kwargs)
    if outbox is not None:
        outbox.inner = server._outbox
        server._outbox = outbox
    server.add_generic_rpc_handlers((_handlers(events),))
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    await server.start()
    return server, f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def _served(events: Events, **kwargs: Any) -> AsyncIterator[grpc.aio.Channel]:
    """A started server and a channel to it; the server stops (1 s grace) afterwards."""
    server, address = await _serve(events, **kwargs)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield channel
    finally:
        await server.stop(1.0)


class _CountingOutbox:
    """A server's outbox that counts the replies handed to its sender thread."""

    def __init__(self) -> None:
        self.inner: Any = None  # the server's own queue, set by _serve
        self.replies = 0

    def put(self, item: Any) -> None:
        if item is not None:
            self.replies += 1
        self.inner.put(item)

    def get(self) -> Any:
        return self.inner.get()


def _run(test: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_unary_calls_carry_messages_metadata_and_deadlines() -> None:
    async def test() -> None:
        events = Events()
        async with _served(events) as channel:
            echo = channel.unary_unary(_path("Echo"))
            call = echo(b"hi", metadata=(("x-user", "ada"),), timeout=30)
            assert await call == b"echo:hi"
            assert ("served-by", "cq") in tuple(await call.trailing_metadata())
            assert await call.code() == grpc.StatusCode.OK
            assert ("x-user", "ada") in events.metadata[0]
            assert events.time_remaining[0] is not None and 25 < events.time_remaining[0] <= 31  # clocks differ
            assert await echo(b"") == b"echo:"
            assert events.time_remaining[1] is None  # no deadline
            squared = channel.unary_unary(_path("Squared"))
            assert await squared(b"12") == b"144"

    _run(test)


def test_statuses_reach_the_client_as_the_handler_set_them() -> None:
    async def test() -> None:
        async with _served(Events()) as channel:
            fail = channel.unary_unary(_path("Fail"))
            outcomes = {}
            for request in (b"abort", b"code", b"none", b"raise"):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await fail(request, timeout=30)
                outcomes[request] = caught.value
            assert outcomes[b"abort"].code() == grpc.StatusCode.FAILED_PRECONDITION
            assert outcomes[b"abort"].details() == "not now"
            assert ("why", "testing") in tuple(outcomes[b"abort"].trailing_metadata())
            assert outcomes[b"code"].code() == grpc.StatusCode.NOT_FOUND
            assert outcomes[b"code"].details() == "no such thing"
            assert outcomes[b"none"].code() == grpc.StatusCode.UNKNOWN
            assert outcomes[b"raise"].code() == grpc.StatusCode.UNKNOWN
            assert "boom" in (outcomes[b"raise"].details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Echo/Nope")(b"", timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "/test.Echo/Nope" in (caught.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(_path("Squared"))(b"twelve", timeout=30)
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert "could not be parsed" in (caught.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(_path("BadTrailer"))(b"", timeout=30)
            assert caught.value.code() == grpc.StatusCode.INTERNAL  # ended, not left hanging
            # The server serves on after every one of them.
            assert await channel.unary_unary(_path("Echo"))(b"still", timeout=30) == b"echo:still"

    _run(test)


def test_streams_in_every_direction() -> None:
    async def test() -> None:
        async with _served(Events()) as channel:
            assert [m async for m in channel.unary_stream(_path("CountUp"))(b"5")] == [b"0", b"1", b"2", b"3", b"4"]
            assert [m async for m in channel.unary_stream(_path("CountByWrite"))(b"3")] == [b"0", b"1", b"2"]
            assert [m async for m in channel.unary_stream(_path("CountUp"))(b"0")] == []
            assert [m async for m in channel.unary_stream(_path("CountPlainly"))(b"2")] == [b"0", b"1"]

            async def numbers(n: int) -> AsyncIterator[bytes]:
                for i in range(n):
                    yield str(i).encode()

            assert await channel.stream_unary(_path("Total"))(numbers(100)) == b"4950"
            assert await channel.stream_unary(_path("TotalByRead"))(numbers(10)) == b"45"
            assert await channel.stream_unary(_path("Total"))(numbers(0)) == b"0"
            replies = [m async for m in channel.stream_stream(_path("Doubles"))(numbers(200))]
            assert replies == [str(2 * i).encode() for i in range(200)]

    _run(test)


def test_concurrent_streams_write_in_order_beside_the_loop() -> None:
    async def test() -> None:
        outbox = _CountingOutbox()
        server, address = await _serve(Events(), outbox)
        async with grpc.aio.insecure_channel(address) as channel:
            count_up = channel.unary_stream(_path("CountUp"))

            async def collect(n: int) -> list[bytes]:
                return [message async for message in count_up(str(n).encode(), timeout=30)]

            results = await asyncio.gather(*(collect(300 + i) for i in range(6)))
            for i, messages in enumerate(results):
                assert messages == [str(j).encode() for j in range(300 + i)]
            assert outbox.replies > 6  # stream writes went through the sender, not only final batches

            # A client that walks away mid-stream while others stream: its handler ends, the rest go on.
            abandoned = count_up(b"1000000", timeout=30)
            others = asyncio.gather(*(collect(200) for _ in range(3)))
            async for message in abandoned:
                if message == b"50":
                    break
            abandoned.cancel()
            assert all(messages == [str(j).encode() for j in range(200)] for messages in await others)
            while server._rpcs:  # the abandoned stream's handler is cancelled, not left writing
                await asyncio.sleep(0.01)
        await server.stop(1.0)

    _run(test)


def test_a_client_that_cancels_or_runs_out_of_time_cancels_the_handler() -> None:
    async def test() -> None:
        events = Events()
        async with _served(events) as channel:
            wait = channel.unary_unary(_path("Wait"))
            call = wait(b"", timeout=30)
            await events.started.wait()
            call.cancel()
            await asyncio.wait_for(events.cancelled.wait(), 10)
            assert await call.code() == grpc.StatusCode.CANCELLED

            events.started.clear()
            events.cancelled.clear()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await wait(b"", timeout=0.3)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(events.cancelled.wait(), 10)
            assert await channel.unary_unary(_path("Echo"))(b"ok", timeout=30) == b"echo:ok"

    _run(test)


@pytest.mark.parametrize(
    ("beside", "senders"), [(True, 2), (True, 1), (False, 2)], ids=["two-senders", "one-sender", "loop-sends"]
)
def test_replies_of_concurrent_calls_are_sent_beside_the_loop(beside: bool, senders: int) -> None:
    async def test() -> None:
        events = Events()
        outbox = _CountingOutbox()
        server, address = await _serve(events, outbox, send_beside_loop=beside, sender_threads=senders)
        assert len(server._senders) == (senders if beside else 0)
        async with grpc.aio.insecure_channel(address) as channel:
            held = channel.unary_unary(_path("Held"))
            requests = [str(i).encode() for i in range(20)] + [b"bad"]
            calls = [held(request, timeout=30) for request in requests]
            while events.held < len(calls):
                await asyncio.sleep(0.01)
            events.release.set()  # all finish at once: the loop hands most replies to the sender
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert results[:20] == [b"held:" + request for request in requests[:20]]
            assert isinstance(results[20], grpc.aio.AioRpcError)
            assert results[20].code() == grpc.StatusCode.INTERNAL  # unsendable there too: still ended
            if beside:
                assert outbox.replies >= 19  # every reply but the last one's, while others were in flight
            else:
                assert outbox.replies == 0  # the loop sent them all itself
            assert await channel.unary_unary(_path("Echo"))(b"after", timeout=30) == b"echo:after"
        await server.stop(1.0)
        assert not any(sender.is_alive() for sender in server._senders)  # every sender was told to stop

    _run(test)


def test_calls_beyond_the_backlog_are_refused_with_a_retry_hint() -> None:
    async def test() -> None:
        refusals: list[int] = []
        server, address = await _serve(
            Events(), max_pending_calls=2, retry_after_ms=250, on_refused=lambda: refusals.append(1)
        )

        def flood() -> list[tuple[grpc.StatusCode, str, tuple[Any, ...]]]:
            # From another thread: the first call holds the event loop (as an overloaded server's
            # would be held), and the next twelve arrive while it does.
            with grpc.insecure_channel(address) as channel:
                block = channel.unary_unary(_path("BlockLoop"))
                first = block.future(b"", timeout=60)
                time.sleep(0.15)
                calls = [block.future(b"", timeout=60) for _ in range(12)]
                first.result()
                results = []
                for call in calls:
                    try:
                        call.result()
                        results.append((grpc.StatusCode.OK, "", ()))
                    except grpc.RpcError as exc:
                        results.append((exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ())))
                return results

        outcomes = await asyncio.to_thread(flood)
        codes = [code for code, _, _ in outcomes]
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, outcomes
        refused = [outcome for outcome in outcomes if outcome[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert refused and codes.count(grpc.StatusCode.OK) >= 1
        assert len(refused) == server.refused == len(refusals)
        for _, details, trailing in refused:
            assert "--max-pending-calls" in details
            assert (RETRY_PUSHBACK_KEY, "250") in trailing
        await server.stop(1.0)

    _run(test)


def test_stop_lets_calls_in_progress_finish_then_refuses_new_ones() -> None:
    async def test() -> None:
        events = Events()
        server, address = await _serve(events)
        async with grpc.aio.insecure_channel(address) as channel:
            wait = channel.unary_unary(_path("Wait"))
            call = wait(b"", timeout=30)
            await events.started.wait()
            stopping = asyncio.create_task(server.stop(10.0))
            await asyncio.sleep(0.2)
            assert not stopping.done()  # the call in progress holds the stop within its grace
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(_path("Echo"))(b"late", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            events.release.set()
            assert await call == b"released"
            await asyncio.wait_for(stopping, 10)
        assert await server.wait_for_termination(0)

    _run(test)


def test_stop_without_grace_cancels_what_is_left() -> None:
    async def test() -> None:
        events = Events()
        server, address = await _serve(events)
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(_path("Wait"))(b"", timeout=30)
            await events.started.wait()
            await asyncio.wait_for(server.stop(None), 10)
            assert events.cancelled.is_set()
            assert await call.code() in {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}

    _run(test)


def test_a_server_stopped_before_it_started_releases_its_port() -> None:
    async def test() -> None:
        server = CompletionQueueServer()
        assert server.add_insecure_port("127.0.0.1:0") > 0
        await server.stop(None)
        assert await server.wait_for_termination(0)

    _run(test)


def test_a_handler_lookup_that_fails_is_answered_internal() -> None:
    class Broken(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: Any) -> Any:
            raise RuntimeError("lookup failed")

    async def test() -> None:
        server = CompletionQueueServer()
        server.add_generic_rpc_handlers((Broken(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(_path("Echo"))(b"", timeout=30)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        await server.stop(1.0)

    _run(test)


def test_this_grpcio_has_what_the_front_end_needs() -> None:
    # The server falls back to grpc.aio without it; the pinned grpcio must not make it.
    assert cq_server.available()
