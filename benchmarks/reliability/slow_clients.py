"""Slow and idle clients: do many idle streams, slow readers and silent connections starve normal clients?

``python -m benchmarks.reliability.slow_clients --model-repository DIR [--idle-streams 200]
[--slow-streams 20] [--idle-sockets 50]``

1. Baseline: one normal client (unary V2 ModelInfer, one request at a time, its own channel)
   sends ``--requests`` requests to an otherwise idle server.
2. Then, all at once: ``--idle-streams`` ModelStreamInfer streams opened and left without a message;
   ``--slow-streams`` streams that each write ``--slow-requests`` requests and read the replies very
   slowly (even-numbered streams: one reply every ``--slow-read-interval-s``) or never (odd ones),
   so the server holds replies it cannot send; ``--idle-sockets`` TCP connections that never speak
   HTTP/2. Each slow stream and each group of idle streams has its own channel (its own connection),
   as distinct clients would. Once the server has answered what the slow streams wrote (its request
   counter stops moving), the normal client measures again with all of that still open.

Pass: every normal request succeeds, the loaded p99 is at most ``--factor`` × the baseline p99
+ ``--slack-ms`` (the loaded measurement is repeated, up to ``--attempts`` times, while it is not:
starvation lasts as long as its cause stays open, a noisy neighbour's spike does not), and the
server's RSS grows by at most ``--rss-bound-mib`` over its value after the baseline (peak while
the slow clients are open). Reported besides: p50/p99 of the measurements, RSS before / peak /
after the slow clients left, the server's established connections, how many requests the slow
streams got written and read, and how many idle streams and sockets the server closed on its own.
Prints one JSON document (and writes it with ``--out``); exits 0 on pass, 1 on fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import psutil

from benchmarks.common import start_driftserve
from benchmarks.reliability.common import (
    OWN_CONNECTION,
    finish,
    infer_request,
    metric_total,
    percentile_ms,
    scrape,
    wait_started,
)
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.core.machine import machine
from driftserve.core.ports import free_port

MIB = 1 << 20
WARMUP_REQUESTS = 20
RSS_SAMPLE_S = 0.25


async def _measure(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest, n: int) -> dict[str, Any]:
    """``n`` sequential requests; latencies of the OK ones and the codes of all."""
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    for _ in range(n):
        sent = time.monotonic()
        try:
            await stub.ModelInfer(request, timeout=30)
            latencies.append(time.monotonic() - sent)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
    return {
        "sent": n,
        "codes": dict(codes),
        "errors": n - codes["OK"],
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "max_ms": percentile_ms(latencies, 100),
    }


class SlowStream:
    """One ModelStreamInfer on its own channel: writes many requests, reads replies slowly or never."""

    def __init__(self, target: str, request: pb.ModelInferRequest, count: int, read_interval_s: float | None) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=OWN_CONNECTION)
        self.call = pb_grpc.GRPCInferenceServiceStub(self.channel).ModelStreamInfer()
        self.request, self.count, self.read_interval_s = request, count, read_interval_s
        self.written = self.read = 0
        self.error: str | None = None
        self.writer = asyncio.create_task(self._write())
        self.reader = asyncio.create_task(self._read()) if read_interval_s is not None else None

    async def _write(self) -> None:
        try:
            for _ in range(self.count):
                await self.call.write(self.request)
                self.written += 1
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            self.error = type(exc).__name__

    async def _read(self) -> None:
        assert self.read_interval_s is not None
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            while True:
                await asyncio.sleep(self.read_interval_s)
                if await self.call.read() is grpc.aio.EOF:
                    return
                self.read += 1

    async def close(self) -> None:
        for task in (self.writer, self.reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.call.cancel()
        await self.channel.close()


async def _open_idle_streams(target: str, n: int, per_channel: int) -> tuple[list[grpc.aio.Channel], list[Any]]:
    """``n`` ModelStreamInfer calls that never send a message, ``per_channel`` to a channel."""
    groups = (n + per_channel - 1) // per_channel
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(groups)]
    calls = [pb_grpc.GRPCInferenceServiceStub(channels[i // per_channel]).ModelStreamInfer() for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(call.wait_for_connection() for call in calls)), timeout=60)
    return channels, calls


def _open_idle_sockets(port: int, n: int) -> list[socket.socket]:
    """TCP connections to the gRPC port that never send a byte (no HTTP/2 preface)."""
    sockets = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _established(pid: int, port: int) -> int:
    """TCP connections the server holds on its gRPC port: shows the idle clients are really connected."""
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return sum(c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED for c in connections)


async def _settle(metrics_port: int, slow: list[SlowStream], timeout_s: float) -> dict[str, Any]:
    """Wait until neither the slow streams' writes nor the server's request count move for a second.

    Then the server has answered what it accepted, and the next measurement sees only open but
    quiet clients (whose writes may also be stuck, if the server stopped reading them).
    """
    started = time.monotonic()
    last: tuple[float, int] = (-1.0, -1)
    steady = 0
    while time.monotonic() - started < timeout_s and steady < 2:
        await asyncio.sleep(0.5)
        served = metric_total(await asyncio.to_thread(scrape, metrics_port), "driftserve_server_requests_total")
        now = (served, sum(s.written for s in slow))
        steady = steady + 1 if now == last else 0
        last = now
    return {"settle_s": round(time.monotonic() - started, 3), "server_requests_total": last[0]}


class RssSampler:
    """The server's RSS every ``RSS_SAMPLE_S`` while running, for its peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.now()
        self.task = asyncio.create_task(self._run())

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(RSS_SAMPLE_S)

    async def stop(self) -> int:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.peak = max(self.peak, self.now())
        return self.peak


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Baseline, then the same client next to idle and slow clients; the JSON-ready result."""
    metrics_port = free_port()
    with tempfile.TemporaryDirectory(prefix="driftserve-slow-clients-") as tmp:
        logs = Path(args.log_dir or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        server = start_driftserve(args.model_repository, logs, ["--metrics-port", str(metrics_port)], "slow_clients")
        try:
            await asyncio.to_thread(wait_started, server)
            result = await _scenario(args, server.target, server.port, server.proc.pid, metrics_port)
            result["server_alive_at_end"] = server.proc.poll() is None
        finally:
            server.stop()
        result["server_exit_code"] = server.proc.returncode
    return result


async def _scenario(args: argparse.Namespace, target: str, port: int, pid: int, metrics_port: int) -> dict[str, Any]:
    request = infer_request(args.model, args.rows, args.width)
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await _measure(stub, request, WARMUP_REQUESTS)
        baseline = await _measure(stub, request, args.requests)
        bound_ms = args.factor * baseline["p99_ms"] + args.slack_ms if baseline["p99_ms"] is not None else 0.0
        sampler = RssSampler(pid)
        rss_before = sampler.now()
        sockets = _open_idle_sockets(port, args.idle_sockets)
        idle_channels, idle_calls = await _open_idle_streams(target, args.idle_streams, args.streams_per_channel)
        slow = [
            SlowStream(target, request, args.slow_requests, args.slow_read_interval_s if i % 2 == 0 else None)
            for i in range(args.slow_streams)
        ]
        try:
            settle = await _settle(metrics_port, slow, args.settle_timeout_s)
            attempts = await _measure_loaded(stub, request, args, bound_ms)
            rss_peak = await sampler.stop()
            open_state = {
                "server_tcp_connections": _established(pid, port),
                "idle_streams_ended": sum(call.done() for call in idle_calls),
                "idle_sockets_closed_by_server": sum(_closed_by_peer(s) for s in sockets),
                "slow_requests_written": sum(s.written for s in slow),
                "slow_replies_read": sum(s.read for s in slow),
                "slow_stream_errors": dict(Counter(s.error for s in slow if s.error)),
            }
        finally:
            await _close_all(slow, idle_calls, idle_channels, sockets)
        await asyncio.sleep(args.release_wait_s)  # the server lets go of what the closed calls held
        after_close = await _measure(stub, request, WARMUP_REQUESTS)
    rss = {"before": rss_before, "peak": rss_peak, "after_close": psutil.Process(pid).memory_info().rss}
    return _summarize(args, baseline, bound_ms, attempts, after_close, settle | open_state, rss)


async def _measure_loaded(
    stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest, args: argparse.Namespace, bound_ms: float
) -> list[dict[str, Any]]:
    """Up to ``--attempts`` measurements, until one's p99 is within the bound.

    Starvation by the open clients lasts as long as they stay open, so it shows in every attempt;
    a noisy neighbour on a small shared machine spikes one measurement, rarely all of them.
    """
    attempts = [await _measure(stub, request, args.requests)]
    while len(attempts) < args.attempts and not _within(attempts[-1], bound_ms):
        attempts.append(await _measure(stub, request, args.requests))
    return attempts


def _within(measured: dict[str, Any], bound_ms: float) -> bool:
    return measured["p99_ms"] is not None and measured["p99_ms"] <= bound_ms


async def _close_all(
    slow: list[SlowStream], idle_calls: list[Any], idle_channels: list[grpc.aio.Channel], sockets: list[socket.socket]
) -> None:
    for stream in slow:
        await stream.close()
    for call in idle_calls:
        call.cancel()
    for channel in idle_channels:
        await channel.close()
    for sock in sockets:
        sock.close()


def _summarize(
    args: argparse.Namespace,
    baseline: dict[str, Any],
    bound_ms: float,
    attempts: list[dict[str, Any]],
    after_close: dict[str, Any],
    state: dict[str, Any],
    rss: dict[str, int],
) -> dict[str, Any]:
    loaded = attempts[-1]
    starved = not _within(loaded, bound_ms)
    growth_mib = (rss["peak"] - rss["before"]) / MIB
    errors = baseline["errors"] + sum(a["errors"] for a in attempts)
    return {
        "scenario": "idle streams, slow readers and silent connections next to a normal client",
        "command": " ".join(sys.argv),
        "model": args.model,
        "idle_streams": args.idle_streams,
        "slow_streams": args.slow_streams,
        "slow_requests_per_stream": args.slow_requests,
        "idle_sockets": args.idle_sockets,
        "baseline": baseline,
        "loaded": loaded,
        "loaded_p99_ms_by_attempt": [a["p99_ms"] for a in attempts],
        "after_close": after_close,
        "p99_bound_ms": round(bound_ms, 3),
        "starved": starved,
        **state,
        "rss_before_mib": round(rss["before"] / MIB, 1),
        "rss_peak_mib": round(rss["peak"] / MIB, 1),
        "rss_after_close_mib": round(rss["after_close"] / MIB, 1),
        "rss_growth_mib": round(growth_mib, 1),
        "rss_bound_mib": args.rss_bound_mib,
        "normal_client_errors": errors,
        "passed": errors == 0 and not starved and growth_mib <= args.rss_bound_mib,
        "machine": machine(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability.slow_clients", description=__doc__)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", default="breast_cancer_lr")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--width", type=int, default=30, help="features per row")
    parser.add_argument("--requests", type=int, default=300, help="normal client requests per measurement")
    parser.add_argument("--idle-streams", type=int, default=200)
    parser.add_argument("--streams-per-channel", type=int, default=10, help="idle streams sharing a connection")
    parser.add_argument("--slow-streams", type=int, default=20)
    parser.add_argument("--slow-requests", type=int, default=2000, help="requests each slow stream writes")
    parser.add_argument("--slow-read-interval-s", type=float, default=1.0, help="the slow readers' pace")
    parser.add_argument("--idle-sockets", type=int, default=50)
    parser.add_argument("--settle-timeout-s", type=float, default=60.0, help="wait for the slow writes this long")
    parser.add_argument("--release-wait-s", type=float, default=2.0, help="pause before the RSS after closing")
    parser.add_argument("--factor", type=float, default=5.0, help="loaded p99 <= factor x baseline p99 + slack")
    parser.add_argument("--slack-ms", type=float, default=20.0)
    parser.add_argument("--attempts", type=int, default=3, help="loaded measurements tried before calling it starved")
    parser.add_argument("--rss-bound-mib", type=float, default=64.0, help="most RSS growth allowed")
    parser.add_argument("--log-dir", type=Path, help="keep the server's log here [default: a temporary dir]")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run_scenario(args))
    return finish(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
