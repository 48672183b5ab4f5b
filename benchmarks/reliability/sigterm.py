"""SIGTERM under sustained load: does the server finish every request it received before the signal?

``python -m benchmarks.reliability.sigterm --model-repository DIR [--clients 32] [--rounds 3]``

Each round starts ``driftserve serve``, keeps ``--clients`` closed-loop V2 clients busy (each
always has one request in flight), sends SIGTERM after ``--load-s`` seconds, and records every
request with its send time and status. A request sent before the signal must succeed; one sent
after it may be refused with UNAVAILABLE (the server said it is going away), nothing else. The
server must exit 0. Prints one JSON document (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from benchmarks.common import start_driftserve
from benchmarks.reliability.common import OWN_CONNECTION, finish, infer_request, infer_status
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.core.machine import machine

# After the signal: served in the drain period, refused, or cancelled by gRPC for reaching it after
# the transport stopped (the server never saw those; a client retries them like UNAVAILABLE).
ALLOWED_AFTER_SIGNAL = {"OK", "UNAVAILABLE", "CANCELLED"}


async def _client(
    target: str, request: pb.ModelInferRequest, stop: asyncio.Event, log: list[tuple[float, str]]
) -> None:
    """One closed-loop client on its own channel; logs (send time, status) per request."""
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while not stop.is_set():
            sent = time.monotonic()
            code = await infer_status(stub, request, timeout_s=30.0)
            log.append((sent, code))
            if code != "OK":
                await asyncio.sleep(0.01)  # a refused client backs off briefly, as a real one would


async def _round(repository: Path, logs: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = start_driftserve(repository, logs, ["--grace-period-s", str(args.grace_s)], label="sigterm")
    server.wait_ready()
    request = infer_request(args.model, args.rows, args.width)
    stop = asyncio.Event()
    log: list[tuple[float, str]] = []
    tasks = [asyncio.create_task(_client(server.target, request, stop, log)) for _ in range(args.clients)]
    await asyncio.sleep(args.load_s)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    while server.proc.poll() is None and time.monotonic() - signalled < args.grace_s + 10:
        await asyncio.sleep(0.01)
    exited_after_s = time.monotonic() - signalled
    stop.set()
    await asyncio.gather(*tasks)
    exit_code = server.proc.wait(timeout=10)
    server.stop()
    before = Counter(code for sent, code in log if sent < signalled)
    after = Counter(code for sent, code in log if sent >= signalled)
    failed_before = sum(n for code, n in before.items() if code != "OK")
    bad_after = sum(n for code, n in after.items() if code not in ALLOWED_AFTER_SIGNAL)
    return {
        "sent_before_signal": sum(before.values()),
        "codes_before_signal": dict(before),
        "codes_after_signal": dict(after),
        "failed_before_signal": failed_before,
        "bad_after_signal": bad_after,
        "exit_code": exit_code,
        "exit_after_signal_s": round(exited_after_s, 3),
    }


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    rounds = []
    with tempfile.TemporaryDirectory(prefix="driftserve-sigterm-") as tmp:
        for _ in range(args.rounds):
            rounds.append(await _round(args.model_repository, Path(tmp), args))
    return {
        "scenario": "SIGTERM under sustained load",
        "command": " ".join(sys.argv),
        "clients": args.clients,
        "rounds": rounds,
        "failed_before_signal": sum(r["failed_before_signal"] for r in rounds),
        "bad_after_signal": sum(r["bad_after_signal"] for r in rounds),
        "nonzero_exits": sum(r["exit_code"] != 0 for r in rounds),
        "passed": all(
            not r["failed_before_signal"] and not r["bad_after_signal"] and not r["exit_code"] for r in rounds
        ),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability.sigterm", description=__doc__)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", default="breast_cancer_mlp")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--width", type=int, default=30, help="features per row")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--load-s", type=float, default=3.0, help="load before the signal")
    parser.add_argument("--grace-s", type=float, default=10.0, help="the server's --grace-period-s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    return finish(asyncio.run(run_scenario(args)), args.out)


if __name__ == "__main__":
    sys.exit(main())
