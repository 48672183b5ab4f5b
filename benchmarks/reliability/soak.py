"""Soak: hours of steady mixed load with mirroring and a shadow, watching memory and file descriptors.

``python -m benchmarks.reliability.soak --model-repository DIR [--duration-s 1800] [--sample-s 10]
[--rate 200]``

Starts the drift sidecar, then ``driftserve serve --mirror-address`` to it (every model with a
``drift:`` section is mirrored; breast_cancer_lr's shadow version runs in the sidecar). ``--clients``
paced clients send ``--rate`` requests per second in total, alternating the ``--models``; every
``--bad-every``-th request of a client is malformed (a wrong shape, or raw data of the wrong size)
and must be refused with INVALID_ARGUMENT. Every ``--sample-s`` the RSS and the open file
descriptors of both processes are sampled.

Pass: every well-formed request is OK and every malformed one INVALID_ARGUMENT; both processes
live to the end; and no growth beyond noise: with the first third of the samples skipped as
warm-up, the mean of the last third exceeds the mean of the second third by at most
max(``--rss-growth-pct`` % of it, ``--rss-growth-mib``) for RSS, and differs by at most
``--fd-tolerance`` for file descriptors. Reported: the samples, the trends, request counts by
code, latency p50/p99, and the mirror's counts on both sides.
Prints one JSON document (and writes it with ``--out``); exits 0 on pass, 1 on fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from benchmarks.common import start_driftserve, start_sidecar
from benchmarks.reliability.common import (
    OWN_CONNECTION,
    finish,
    infer_request,
    infer_status,
    metric_total,
    percentile_ms,
    rotated,
    scrape,
    wait_started,
)
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.core.machine import machine
from driftserve.core.ports import free_port

MIB = 1 << 20
PROCESSES = ("server", "sidecar")


class Tally:
    """What the clients saw: codes by kind of request, latencies of the well-formed OK ones."""

    def __init__(self) -> None:
        self.codes: dict[str, Counter[str]] = {"good": Counter(), "bad": Counter()}
        self.latencies: list[float] = []
        self.duration_s = 0.0

    def record(self, bad: bool, code: str, latency_s: float) -> None:
        self.codes["bad" if bad else "good"][code] += 1
        if not bad and code == "OK":
            self.latencies.append(latency_s)

    def unexpected(self) -> int:
        """Well-formed requests not OK plus malformed ones not INVALID_ARGUMENT."""
        good, bad = self.codes["good"], self.codes["bad"]
        return sum(good.values()) - good["OK"] + sum(bad.values()) - bad["INVALID_ARGUMENT"]


def bad_requests(models: list[str], width: int) -> list[pb.ModelInferRequest]:
    """Malformed requests per model: one feature short, and FP64 declared over FP32 bytes."""
    requests = []
    for model in models:
        requests.append(infer_request(model, 1, width - 1))
        mislabeled = infer_request(model, 1, width)
        mislabeled.inputs[0].datatype = "FP64"
        requests.append(mislabeled)
    return requests


async def paced_client(
    target: str,
    good: list[pb.ModelInferRequest],
    bad: list[pb.ModelInferRequest],
    rate: float,
    bad_every: int,
    stop: asyncio.Event,
    tally: Tally,
) -> None:
    """One client at ``rate`` requests/s (one in flight; when behind it does not burst to catch up)."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    i = 0
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while not stop.is_set():
            is_bad = bad_every > 0 and i % bad_every == bad_every - 1
            request = bad[(i // bad_every) % len(bad)] if is_bad else good[i % len(good)]
            i += 1
            sent = time.monotonic()
            code = await infer_status(stub, request, timeout_s=30.0)
            tally.record(is_bad, code, time.monotonic() - sent)
            next_at = max(next_at + interval, time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next_at - time.monotonic())


def _sample(processes: dict[str, psutil.Process], elapsed_s: float) -> dict[str, Any]:
    """RSS (MiB) and open file descriptors of each process now; None for a process that is gone."""
    sample: dict[str, Any] = {"t_s": round(elapsed_s, 1)}
    for name, process in processes.items():
        try:
            sample[name] = {"rss_mib": round(process.memory_info().rss / MIB, 1), "fds": process.num_fds()}
        except psutil.NoSuchProcess:
            sample[name] = None
    return sample


def trend(values: list[float]) -> dict[str, Any] | None:
    """Mean of the second and of the last third of ``values`` (the first third is warm-up)."""
    n = len(values)
    if n < 3:
        return None
    second, last = values[n // 3 : 2 * n // 3], values[2 * n // 3 :]
    mean_second, mean_last = float(np.mean(second)), float(np.mean(last))
    return {
        "second_third_mean": round(mean_second, 2),
        "last_third_mean": round(mean_last, 2),
        "growth": round(mean_last - mean_second, 2),
    }


def _judge(samples: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Per process: the RSS and FD trends and whether they stay within the bounds."""
    judged: dict[str, Any] = {}
    for name in PROCESSES:
        alive = all(s[name] is not None for s in samples)
        rss = trend([s[name]["rss_mib"] for s in samples]) if alive else None
        fds = trend([s[name]["fds"] for s in samples]) if alive else None
        rss_bound = max(args.rss_growth_pct / 100 * rss["second_third_mean"], args.rss_growth_mib) if rss else 0.0
        rss_ok = rss is not None and rss["growth"] <= rss_bound
        fds_ok = fds is not None and abs(fds["growth"]) <= args.fd_tolerance
        judged[name] = {
            "alive": alive,
            "rss_mib": rss,
            "rss_bound_mib": round(rss_bound, 2),
            "fds": fds,
            "fd_tolerance": args.fd_tolerance,
            "ok": rss_ok and fds_ok,
        }
    return judged


async def _soak(args: argparse.Namespace, target: str, pids: dict[str, int]) -> tuple[Tally, list[dict[str, Any]]]:
    """The paced load for ``--duration-s``, sampling both processes every ``--sample-s``."""
    models = args.models.split(",")
    good = [infer_request(m, args.rows, args.width, seed) for seed, m in enumerate(models)]
    bad = bad_requests(models, args.width)
    processes = {name: psutil.Process(pid) for name, pid in pids.items()}
    tally, stop = Tally(), asyncio.Event()
    per_client = args.rate / args.clients
    tasks = [
        asyncio.create_task(paced_client(target, rotated(good, i), bad, per_client, args.bad_every, stop, tally))
        for i in range(args.clients)
    ]
    samples = []
    started = time.monotonic()
    try:
        while True:
            elapsed = time.monotonic() - started
            samples.append(_sample(processes, elapsed))
            if elapsed >= args.duration_s or any(samples[-1][name] is None for name in PROCESSES):
                break
            await asyncio.sleep(min(args.sample_s, max(args.duration_s - elapsed, 0.0)))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    tally.duration_s = time.monotonic() - started
    return tally, samples


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Sidecar, server mirroring to it, paced load with samples; the JSON-ready result."""
    with tempfile.TemporaryDirectory(prefix="driftserve-soak-") as tmp:
        logs = Path(args.log_dir or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        sidecar_http, metrics_port = free_port(), free_port()
        sidecar, listen = start_sidecar(args.model_repository, logs, http_port=sidecar_http)
        try:
            await asyncio.to_thread(wait_started, sidecar)
            extra = ["--mirror-address", listen, "--metrics-port", str(metrics_port)]
            server = start_driftserve(args.model_repository, logs, extra, label="soak")
            try:
                await asyncio.to_thread(wait_started, server)
                pids = {"server": server.proc.pid, "sidecar": sidecar.proc.pid}
                tally, samples = await _soak(args, server.target, pids)
                mirror = await asyncio.to_thread(_mirror_counts, metrics_port, sidecar_http)
            finally:
                server.stop()
        finally:
            sidecar.stop()
    exits = {"server": server.proc.returncode, "sidecar": sidecar.proc.returncode}
    return _summarize(args, tally, samples, mirror, exits)


def _mirror_counts(metrics_port: int, sidecar_http: int) -> dict[str, float]:
    """What the server's mirror sent and dropped, and what the sidecar accepted and ran as shadow."""
    server, sidecar = scrape(metrics_port), scrape(sidecar_http)
    counts = {
        f"server_{outcome}": metric_total(server, "driftserve_mirror_records_total", outcome=outcome)
        for outcome in ("sent", "dropped", "sampled_out")
    }
    counts["sidecar_rows"] = metric_total(sidecar, "driftserve_sidecar_rows_total")
    counts["sidecar_rejected_rows"] = metric_total(sidecar, "driftserve_sidecar_rejected_rows_total")
    counts["sidecar_shadow_rows"] = metric_total(sidecar, "driftserve_shadow_rows_total")
    return counts


def _summarize(
    args: argparse.Namespace,
    tally: Tally,
    samples: list[dict[str, Any]],
    mirror: dict[str, float],
    exits: dict[str, int | None],
) -> dict[str, Any]:
    judged = _judge(samples, args)
    unexpected = tally.unexpected()
    sent = sum(sum(c.values()) for c in tally.codes.values())
    duration = tally.duration_s
    return {
        "scenario": "soak: paced mixed load with mirroring and a shadow",
        "command": " ".join(sys.argv),
        "duration_s": round(duration, 1),
        "target_rps": args.rate,
        "achieved_rps": round(sent / duration, 1) if duration else None,
        "sent": sent,
        "codes": {kind: dict(codes) for kind, codes in tally.codes.items()},
        "unexpected_codes": unexpected,
        "p50_ms": percentile_ms(tally.latencies, 50),
        "p99_ms": percentile_ms(tally.latencies, 99),
        "mirror": mirror,
        "trends": judged,
        "exit_codes": exits,
        "samples": samples,
        "passed": unexpected == 0 and all(j["ok"] for j in judged.values()),
        "machine": machine(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability.soak", description=__doc__)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--models", default="breast_cancer_lr,breast_cancer_mlp", help="comma-separated; alternated")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--width", type=int, default=30, help="features per row")
    parser.add_argument("--duration-s", type=float, default=1800.0)
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS and FD sampling interval")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--bad-every", type=int, default=50, help="every Nth request per client is malformed; 0: none")
    parser.add_argument("--rss-growth-pct", type=float, default=10.0)
    parser.add_argument("--rss-growth-mib", type=float, default=20.0)
    parser.add_argument("--fd-tolerance", type=float, default=5.0)
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here [default: a temporary dir]")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run_scenario(args))
    return finish(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
