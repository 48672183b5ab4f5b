"""Sidecar ``kill -9`` under load: does serving stay clean, and does drift resume on a new sidecar?

``python -m benchmarks.reliability.sidecar_kill --model-repository DIR [--clients 16] [--before-s 5]``

Starts the drift sidecar, then ``driftserve serve --mirror-address`` to it, and keeps ``--clients``
closed-loop V2 clients busy (each alternates the ``--models``). After ``--before-s`` the sidecar
gets SIGKILL; ``--down-s`` later a new sidecar starts on the same mirror address, and the load runs
``--after-s`` more. Every request is logged with its send time, latency and status.

Pass: every request of the whole run is OK (the mirror is off the request path, so a dead sidecar
must cost clients nothing), and drift resumes: the new sidecar receives mirrored rows and its
Monitor report for ``--drift-model`` has ``rows_seen`` > 0. Reported besides: codes, client p99
before / during / after the outage, the server's mirror counts (dropped ones are expected while the
sidecar is down), and the time from the restart to the new sidecar's first mirrored rows.
Prints one JSON document (and writes it with ``--out``); exits 0 on pass, 1 on fail.
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

from benchmarks.common import ServerProcess, start_driftserve, start_sidecar
from benchmarks.reliability.common import (
    OWN_CONNECTION,
    POLL_S,
    Record,
    finish,
    infer_request,
    infer_status,
    metric_total,
    percentile_ms,
    rotated,
    scrape,
    wait_started,
)
from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.core.machine import machine
from driftserve.core.ports import free_port


async def closed_loop_client(
    target: str, requests: list[pb.ModelInferRequest], stop: asyncio.Event, log: list[Record]
) -> None:
    """One client on its own channel, always one request in flight, cycling through ``requests``."""
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        i = 0
        while not stop.is_set():
            request = requests[i % len(requests)]
            i += 1
            sent = time.monotonic()
            code = await infer_status(stub, request, timeout_s=30.0)
            log.append((sent, time.monotonic() - sent, code, request.model_name))
            if code != "OK":
                await asyncio.sleep(0.01)  # a refused client backs off briefly, as a real one would


async def _sidecar_rows(http_port: int) -> float:
    """Rows the sidecar accepted (driftserve_sidecar_rows_total); -1 when it cannot be read."""
    try:
        return metric_total(await asyncio.to_thread(scrape, http_port, 5.0), "driftserve_sidecar_rows_total")
    except OSError:
        return -1.0


async def _first_rows_after(http_port: int, timeout_s: float) -> float | None:
    """When the sidecar's first mirrored rows arrived (monotonic), polling its metrics; None: never."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await _sidecar_rows(http_port) > 0:
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    return None


async def _rows_seen(address: str, model: str, timeout_s: float) -> int:
    """The Monitor report's rows_seen for ``model``, polled until > 0 or ``timeout_s`` (reports are cached ~1 s)."""
    deadline = time.monotonic() + timeout_s
    rows = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = driftserve_pb2_grpc.MonitorStub(channel)
        while True:
            try:
                report = await stub.GetDriftReport(driftserve_pb2.DriftReportRequest(model=model), timeout=10)
                rows = int(report.rows_seen)
            except grpc.aio.AioRpcError:
                pass  # the new sidecar is not up yet: poll again until the deadline
            if rows > 0 or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.2)


async def _kill(process: ServerProcess) -> int:
    """SIGKILL, as a crash or the OOM killer would, and reap it."""
    process.proc.send_signal(signal.SIGKILL)
    return await asyncio.to_thread(process.proc.wait, 30)


def _phase(log: list[Record], start: float, end: float) -> dict[str, Any]:
    picked = [r for r in log if start <= r[0] < end]
    ok = [lat for _, lat, code, _ in picked if code == "OK"]
    return {
        "sent": len(picked),
        "codes": dict(Counter(code for _, _, code, _ in picked)),
        "p50_ms": percentile_ms(ok, 50),
        "p99_ms": percentile_ms(ok, 99),
    }


def _log_problems(path: Path, limit: int = 10) -> list[str]:
    """Lines of a process log that show an error or a traceback (the first ``limit``)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in lines if " ERROR " in line or "Traceback" in line or "CRITICAL" in line][:limit]


async def _outage(args: argparse.Namespace, logs: Path, listen: str, sidecar: ServerProcess) -> dict[str, Any]:
    """Kill the sidecar, wait, start a new one on ``listen``; times (monotonic) and the new sidecar's numbers."""
    http_port = free_port()
    killed = time.monotonic()
    old_exit = await _kill(sidecar)
    await asyncio.sleep(args.down_s)
    restarted = time.monotonic()
    (logs / "sidecar2").mkdir(exist_ok=True)
    new, _ = start_sidecar(args.model_repository, logs / "sidecar2", http_port=http_port, listen=listen)
    try:
        await asyncio.to_thread(wait_started, new)
        ready = time.monotonic()
        first_rows = await _first_rows_after(http_port, args.resume_timeout_s)
        await asyncio.sleep(max(args.after_s - (time.monotonic() - ready), 0.0))
        rows_before_stop = await _sidecar_rows(http_port)
        return {
            "process": new,
            "killed": killed,
            "old_exit": old_exit,
            "restarted": restarted,
            "ready": ready,
            "first_rows": first_rows,
            "rows_before_stop": rows_before_stop,
        }
    except BaseException:
        new.stop()
        raise


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Sidecar, server mirroring to it, load, SIGKILL and restart of the sidecar; the JSON-ready result."""
    with tempfile.TemporaryDirectory(prefix="driftserve-sidecar-kill-") as tmp:
        logs = Path(args.log_dir or tmp)
        (logs / "sidecar1").mkdir(parents=True, exist_ok=True)
        first_http = free_port()
        sidecar, listen = start_sidecar(args.model_repository, logs / "sidecar1", http_port=first_http)
        try:
            await asyncio.to_thread(wait_started, sidecar)
            metrics_port = free_port()
            extra = ["--mirror-address", listen, "--metrics-port", str(metrics_port)]
            server = start_driftserve(args.model_repository, logs, extra, label="sidecar_kill")
            try:
                await asyncio.to_thread(wait_started, server)
                result = await _under_load(args, logs, listen, server, sidecar, first_http)
                mirror = await asyncio.to_thread(scrape, metrics_port)
            finally:
                server.stop()
            result["server_exit_code"] = server.proc.returncode
            result["server_log_problems"] = _log_problems(server.log_path)
        finally:
            sidecar.stop()
        result["mirror_records"] = {
            outcome: metric_total(mirror, "driftserve_mirror_records_total", outcome=outcome)
            for outcome in ("sent", "dropped", "sampled_out")
        }
        result["new_sidecar_log_problems"] = _log_problems(logs / "sidecar2" / "sidecar.log")
    return result


async def _under_load(
    args: argparse.Namespace, logs: Path, listen: str, server: ServerProcess, sidecar: ServerProcess, first_http: int
) -> dict[str, Any]:
    models = args.models.split(",")
    requests = [infer_request(m, args.rows, args.width, seed) for seed, m in enumerate(models)]
    stop = asyncio.Event()
    log: list[Record] = []
    tasks = [
        asyncio.create_task(closed_loop_client(server.target, rotated(requests, i), stop, log))
        for i in range(args.clients)
    ]
    outage: dict[str, Any] = {}
    started = time.monotonic()
    try:
        await asyncio.sleep(args.before_s)
        old_rows = await _sidecar_rows(first_http)
        outage = await _outage(args, logs, listen, sidecar)
        rows_seen = await _rows_seen(listen, args.drift_model, args.resume_timeout_s)
    finally:
        stop.set()
        ended = time.monotonic()
        await asyncio.gather(*tasks)
        if "process" in outage:
            outage["process"].stop()  # blocks: only once the clients are done
    return _summarize(args, log, started, ended, outage, old_rows, rows_seen)


def _summarize(
    args: argparse.Namespace,
    log: list[Record],
    started: float,
    ended: float,
    outage: dict[str, Any],
    old_rows: float,
    rows_seen: int,
) -> dict[str, Any]:
    killed, ready, first_rows = outage["killed"], outage["ready"], outage["first_rows"]
    codes = Counter(code for _, _, code, _ in log)
    errors = sum(n for code, n in codes.items() if code != "OK")
    return {
        "scenario": "sidecar SIGKILL under load",
        "command": " ".join(sys.argv),
        "clients": args.clients,
        "models": args.models.split(","),
        "duration_s": round(ended - started, 3),
        "sent": len(log),
        "codes": dict(codes),
        "client_errors": errors,
        "by_model": dict(Counter(model for _, _, _, model in log)),
        "before_kill": _phase(log, started, killed),
        "sidecar_down": _phase(log, killed, ready),
        "after_restart": _phase(log, ready, ended),
        "old_sidecar_rows_before_kill": old_rows,
        "old_sidecar_exit": outage["old_exit"],
        "restart_to_ready_s": round(ready - outage["restarted"], 3),
        "restart_to_first_rows_s": round(first_rows - outage["restarted"], 3) if first_rows else None,
        "ready_to_first_rows_s": round(first_rows - ready, 3) if first_rows else None,
        "new_sidecar_rows": outage["rows_before_stop"],
        "new_sidecar_rows_seen": {args.drift_model: rows_seen},
        "drift_resumed": first_rows is not None and rows_seen > 0,
        "passed": errors == 0 and first_rows is not None and rows_seen > 0,
        "machine": machine(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability.sidecar_kill", description=__doc__)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--models", default="breast_cancer_lr,breast_cancer_mlp", help="comma-separated; alternated")
    parser.add_argument("--drift-model", default="breast_cancer_lr", help="whose rows_seen must grow again")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--width", type=int, default=30, help="features per row")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--before-s", type=float, default=5.0, help="load before the kill")
    parser.add_argument("--down-s", type=float, default=3.0, help="load with no sidecar")
    parser.add_argument("--after-s", type=float, default=8.0, help="load after the new sidecar is ready")
    parser.add_argument("--resume-timeout-s", type=float, default=30.0, help="wait for mirrored rows this long")
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here [default: a temporary dir]")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run_scenario(args))
    return finish(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
