"""Overload: offered several times what the server can do, does it shed quickly and visibly?

``python -m benchmarks.reliability.overload --model-repository DIR [--factor 3] [--duration-s 10]``

1. Capacity: closed loop at ``--concurrency`` clients for a few seconds (driftserve bench's runner).
2. Overload: open loop at ``--factor`` × capacity for ``--duration-s``, while a separate idle
   client probes once every ``--probe-interval-ms`` with a short deadline. The load's replies are
   counted by status (RESOURCE_EXHAUSTED is shedding; CANCELLED or DEADLINE_EXCEEDED mean a
   request waited in a queue until someone gave up); the probe gives time-to-reject (latency of
   its RESOURCE_EXHAUSTED replies) and the accepted latency seen by a newcomer.
3. Recovery: after the load stops, how long until the probe sees ``--recovered-after`` OK replies
   in a row.

The server's own count of shed requests comes from its metrics. Prints one JSON document; exits
0 when the surplus was refused RESOURCE_EXHAUSTED with a p99 under 5 ms and nothing waited out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import start_driftserve
from benchmarks.reliability.common import finish
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.bench.payload import TensorSpec, build_arrays, serialize_requests
from driftserve.bench.runner import LoadSpec, RunResult, run_load
from driftserve.core.machine import machine
from driftserve.core.ports import free_port

# Newcomers must learn they are refused within this (p99).
GOAL_TIME_TO_REJECT_P99_MS = 5.0


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Probe:
    """An idle client sending one request at a time, every interval, on its own channel."""

    def __init__(self, target: str, request: pb.ModelInferRequest, interval_s: float, timeout_s: float) -> None:
        self.target, self.request, self.interval_s, self.timeout_s = target, request, interval_s, timeout_s
        self.samples: list[tuple[float, float, str]] = []  # (sent, latency s, code)
        self.details: dict[str, str] = {}  # the first message seen per status code
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    stub.ModelInfer(self.request, timeout=self.timeout_s)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                    self.details.setdefault(code, exc.details() or "")
                self.samples.append((sent, time.monotonic() - sent, code))
                self._stop.wait(max(self.interval_s - (time.monotonic() - sent), 0.0))

    def between(self, start: float, end: float) -> list[tuple[float, float, str]]:
        return [s for s in self.samples if start <= s[0] < end]


def _shed_by_server(metrics_port: int) -> float:
    """Requests the server counted as refused for load: by a batcher's queue bound, or by the gRPC
    front end's backlog bound before any handler ran."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            queue_full = s.name == "driftserve_server_requests_total" and s.labels.get("code") == "RESOURCE_EXHAUSTED"
            if queue_full or s.name == "driftserve_server_backlog_refusals_total":
                total += s.value
    return total


def _spec(target: str, model: str, requests: tuple[bytes, ...], timeout_s: float) -> LoadSpec:
    return LoadSpec(target=target, model=model, requests=requests, warmup_s=0.5, timeout_s=timeout_s, label=model)


def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Capacity, then overload with a probe, then recovery; the JSON-ready result."""
    tensor = TensorSpec("input", "FP32", (-1, args.width))
    arrays = build_arrays([tensor], args.rows, None, seed=0)
    requests = tuple(serialize_requests(arrays, [tensor], "v2", args.model, ""))
    probe_request = pb.ModelInferRequest.FromString(requests[0])
    metrics_port = free_port()
    with tempfile.TemporaryDirectory(prefix="driftserve-overload-") as tmp:
        server = start_driftserve(
            args.model_repository,
            Path(tmp),
            ["--metrics-port", str(metrics_port), *args.server_args],
            "overload",
            cpus=args.server_cpus,
        )
        try:
            server.wait_ready()
            base = _spec(server.target, args.model, requests, args.timeout_s)
            closed = replace(base, mode="closed", concurrency=args.concurrency, duration_s=args.capacity_s)
            capacity = run_load(closed, server_stats=False)
            rate = args.factor * capacity.throughput_rps
            shed_before = _shed_by_server(metrics_port)
            probe = Probe(server.target, probe_request, args.probe_interval_ms / 1e3, args.probe_timeout_s)
            probe.start()
            time.sleep(1.0)  # the probe's baseline, idle server
            overload_start = time.monotonic()
            overload = run_load(
                replace(base, mode="open", rate_rps=rate, duration_s=args.duration_s), server_stats=False
            )
            overload_end = time.monotonic()
            deadline = overload_end + args.recovery_limit_s
            recovered_at = _wait_recovered(probe, overload_end, deadline, args.recovered_after)
            probe.stop()
            shed_by_server = _shed_by_server(metrics_port) - shed_before
        finally:
            server.stop()
    return _summarize(args, capacity, rate, overload, probe, overload_start, overload_end, recovered_at, shed_by_server)


def _wait_recovered(probe: Probe, since: float, deadline: float, in_a_row: int) -> float | None:
    """When the probe's replies became ``in_a_row`` OKs in a row after ``since`` (None: never)."""
    while time.monotonic() < deadline:
        after = probe.between(since, float("inf"))
        for i in range(len(after) - in_a_row + 1):
            if all(code == "OK" for _, _, code in after[i : i + in_a_row]):
                return after[i][0]
        time.sleep(0.05)
    return None


def _summarize(
    args: argparse.Namespace,
    capacity: RunResult,
    rate: float,
    overload: RunResult,
    probe: Probe,
    start: float,
    end: float,
    recovered_at: float | None,
    shed_by_server: float,
) -> dict[str, Any]:
    during = probe.between(start, end)
    idle = probe.between(start - 1.0, start)
    rejected = [lat * 1e3 for _, lat, code in during if code == "RESOURCE_EXHAUSTED"]
    accepted = [lat * 1e3 for _, lat, code in during if code == "OK"]
    codes = Counter({"OK": overload.ok, **overload.errors})
    sent = sum(codes.values())
    return {
        "scenario": "overload, open loop",
        "command": " ".join(sys.argv),
        "model": args.model,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
        "capacity_rps": round(capacity.throughput_rps, 1),
        "offered_rps": round(rate, 1),
        "duration_s": args.duration_s,
        "sent": sent,
        "codes": dict(codes),
        "shed_share": round(codes.get("RESOURCE_EXHAUSTED", 0) / sent, 4) if sent else None,
        "waited_out_share": round((codes.get("CANCELLED", 0) + codes.get("DEADLINE_EXCEEDED", 0)) / sent, 4)
        if sent
        else None,
        "served_rps": round(overload.throughput_rps, 1),
        "accepted_p99_ms": overload.latency_ms.get("p99"),
        "shed_counted_by_server": shed_by_server,
        "probe": {
            "idle_p50_ms": _percentile([lat * 1e3 for _, lat, code in idle if code == "OK"], 50),
            "codes": dict(Counter(code for _, _, code in during)),
            "details": probe.details,
            "other_failure_p50_ms": _percentile(
                [lat * 1e3 for _, lat, code in during if code not in ("OK", "RESOURCE_EXHAUSTED")], 50
            ),
            "time_to_reject_p50_ms": _percentile(rejected, 50),
            "time_to_reject_p99_ms": _percentile(rejected, 99),
            "accepted_p50_ms": _percentile(accepted, 50),
            "accepted_p99_ms": _percentile(accepted, 99),
        },
        "recovery_s": round(recovered_at - end, 3) if recovered_at is not None else None,
        # The goal: the surplus refused RESOURCE_EXHAUSTED quickly, nothing left to wait out.
        "passed": bool(
            rejected
            and not codes.get("CANCELLED", 0) + codes.get("DEADLINE_EXCEEDED", 0)
            and (_percentile(rejected, 99) or 0.0) < GOAL_TIME_TO_REJECT_P99_MS
        ),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability.overload", description=__doc__)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", default="breast_cancer_mlp")
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--width", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the capacity measurement")
    parser.add_argument("--capacity-s", type=float, default=4.0)
    parser.add_argument("--factor", type=float, default=3.0, help="offered load / capacity")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--timeout-s", type=float, default=2.0, help="the load's per-request deadline")
    parser.add_argument("--probe-interval-ms", type=float, default=20.0)
    parser.add_argument("--probe-timeout-s", type=float, default=2.0)
    parser.add_argument("--recovered-after", type=int, default=10, help="OK probe replies in a row")
    parser.add_argument("--recovery-limit-s", type=float, default=30.0)
    parser.add_argument("--server-arg", dest="server_args", action="append", default=[], help="extra serve flag")
    parser.add_argument("--server-cpus", help="pin the server to these CPUs (taskset list, e.g. 0)")
    parser.add_argument("--client-cpus", help="pin this script and its load workers to these CPUs (e.g. 1)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})  # workers inherit it
    return finish(run_scenario(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
