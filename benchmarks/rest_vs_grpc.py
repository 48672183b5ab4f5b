"""REST (JSON and binary tensors) next to gRPC ModelInfer, on one server, same model and clients.

One ``driftserve serve`` with both ports; a closed loop of C clients (asyncio, uvloop, one
process) sends the same prebuilt request through each of three paths, in rounds that interleave
the paths, and keeps every latency:

- ``grpc``: V2 ModelInfer over grpc.aio, raw input bytes (what tritonclient.grpc sends);
- ``rest-binary``: POST /v2/models/M/infer, Triton's binary tensor extension for input and outputs;
- ``rest-json``: the same with JSON tensors both ways.

Writes ``benchmarks/results/rest_vs_grpc.{json,md}``: medians over rounds of throughput, p50 /
p99 latency and the CPU time per request of the server process and of the client process, and
each REST path's throughput over gRPC's within the same round (median ratio).
The client runs on the same cores as the server, so what it costs is in the numbers too.

    python -m benchmarks.rest_vs_grpc --model-repository examples/repository
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import psutil
import uvloop

from benchmarks.common import markdown_table, start_driftserve
from driftserve.api import grpc_service_pb2 as pb
from driftserve.core.machine import machine
from driftserve.core.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PATHS = ("grpc", "rest-binary", "rest-json")
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def payloads(model: str, rows: int, features: int) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The request of each path (body and headers), made once: the loop only sends bytes."""
    x = np.random.default_rng(0).normal(size=(rows, features)).astype(np.float32)
    grpc_body = pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=x.shape)],
        raw_input_contents=[x.tobytes()],
    ).SerializeToString()
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape)}
    head = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    json_body = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    return {
        "grpc": (grpc_body, {}),
        "rest-binary": (head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}),
        "rest-json": (json_body, {"Content-Type": "application/json"}),
    }


async def closed_loop(
    send: Callable[[], Awaitable[None]], clients: int, warmup_s: float, duration_s: float, server: psutil.Process
) -> dict[str, float]:
    """``clients`` loops sending back to back; throughput, latency and the server's CPU time per
    request over the measured window (CPU per request is the steadier number on a shared machine)."""
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds
    start = clock() + warmup_s
    end = start + duration_s
    cpu_start: list[float] = []
    client_process = psutil.Process()

    async def mark_start() -> None:
        await asyncio.sleep(max(start - clock(), 0.0))
        cpu_start.extend((_cpu_s(server), _cpu_s(client_process)))

    async def client() -> None:
        nonlocal errors
        while True:
            began = clock()
            if began >= end:
                return
            try:
                await send()
            except Exception:
                errors += 1
                continue
            if began >= start:
                latencies.append(clock() - began)

    await asyncio.gather(mark_start(), *(client() for _ in range(clients)))
    # The stragglers past ``end`` are few: at most one request per client.
    cpu_s, client_cpu_s = _cpu_s(server) - cpu_start[0], _cpu_s(client_process) - cpu_start[1]
    if not latencies:
        raise RuntimeError(f"no request succeeded ({errors} errors)")
    ordered = sorted(latencies)
    return {
        "throughput_rps": len(ordered) / duration_s,
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "server_cpu_us_per_request": cpu_s / len(ordered) * 1e6,
        "client_cpu_us_per_request": client_cpu_s / len(ordered) * 1e6,
        "errors": float(errors),
    }


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure(
    args: argparse.Namespace, grpc_target: str, http_port: int, server: psutil.Process
) -> dict[str, list[dict[str, float]]]:
    bodies = payloads(args.model, args.rows, args.features)
    url = f"http://127.0.0.1:{http_port}/v2/models/{args.model}/infer"
    runs: dict[str, list[dict[str, float]]] = {}
    max_clients = max(args.clients)
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        infer = channel.unary_unary(MODEL_INFER)  # bytes in, bytes out: no client-side protobuf work
        connector = aiohttp.TCPConnector(limit=max_clients)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send_grpc() -> None:
                await infer(bodies["grpc"][0], timeout=30)

            def rest(path: str) -> Callable[[], Awaitable[None]]:
                body, headers = bodies[path]

                async def send() -> None:
                    async with session.post(url, data=body, headers=headers) as reply:
                        await reply.read()
                        if reply.status != 200:
                            raise RuntimeError(f"HTTP {reply.status}")

                return send

            senders = {"grpc": send_grpc, "rest-binary": rest("rest-binary"), "rest-json": rest("rest-json")}
            for round_index in range(args.rounds):
                for clients in args.clients:
                    for path in PATHS:
                        result = await closed_loop(senders[path], clients, args.warmup_s, args.duration_s, server)
                        runs.setdefault(f"{path}|{clients}", []).append(result)
                        print(
                            f"round {round_index + 1} {path} clients={clients}: {result['throughput_rps']:.0f} rps, "
                            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                            f"CPU per request: server {result['server_cpu_us_per_request']:.0f} µs, "
                            f"client {result['client_cpu_us_per_request']:.0f} µs",
                            flush=True,
                        )
    return runs


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]], command: str) -> list[str]:
    info = machine()
    median = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in runs.items()}
    rows = []
    for clients in args.clients:
        grpc_runs = runs[f"grpc|{clients}"]
        for path in PATHS:
            m = median[f"{path}|{clients}"]
            ratios = [r["throughput_rps"] / g["throughput_rps"] for r, g in zip(runs[f"{path}|{clients}"], grpc_runs)]
            rows.append(
                (
                    path,
                    clients,
                    f"{m['throughput_rps']:.0f}",
                    f"{statistics.median(ratios):.2f}×",
                    f"{m['p50_ms']:.2f}",
                    f"{m['p99_ms']:.2f}",
                    f"{m['server_cpu_us_per_request']:.0f}",
                    f"{m['client_cpu_us_per_request']:.0f}",
                )
            )
    return [
        f"### REST vs gRPC: {args.model}, {args.rows} row(s) per request, closed loop",
        "",
        f"`{command}` — one server with both ports; {args.rounds} rounds interleaving the paths, "
        f"{args.duration_s:g} s each after {args.warmup_s:g} s warm-up; medians; the ratio is REST over gRPC "
        f"within each round, then the median. Clients: one asyncio process (grpc.aio, aiohttp) on the same "
        f"{info['nproc']} cores as the server; {info['cpu']}; {info['date_utc']} UTC. Load average (1 min) "
        f"{args.load_before:.1f} before and {args.load_after:.1f} after: the machine was shared with other work, "
        "so throughput swings from round to round; the CPU time each request cost the server and the client "
        "process is the steadier comparison.",
        "",
        *markdown_table(
            (
                "path",
                "clients",
                "throughput (req/s)",
                "vs gRPC",
                "p50 (ms)",
                "p99 (ms)",
                "server CPU (µs/req)",
                "client CPU (µs/req)",
            ),
            rows,
        ),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--model", default="breast_cancer_mlp")
    parser.add_argument("--features", type=int, default=30, help="columns of the model's FP32 input")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--clients", default="1,8,32", help="comma-separated closed-loop client counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.rest_vs_grpc " + " ".join(argv if argv is not None else sys.argv[1:])
    http_port = free_port()
    started = time.monotonic()
    args.load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_driftserve(args.model_repository, Path(tmp), ["--http-port", str(http_port)], label="rest")
        try:
            server.wait_ready()
            runs = uvloop.run(measure(args, server.target, http_port, psutil.Process(server.proc.pid)))
        finally:
            server.stop()
    args.load_after = os.getloadavg()[0]
    lines = report(args, runs, command)
    (args.out / "rest_vs_grpc.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": machine(),
                "load_average_1min": [args.load_before, args.load_after],
                "runs": runs,
            },
            indent=2,
        )
    )
    (args.out / "rest_vs_grpc.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"took {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
