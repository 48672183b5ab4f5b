"""One measured run: spawn the worker processes, start them together, show progress, merge.

`run_load(spec)` is the single entry point the CLI, the sweeps and `run_all` use.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field, replace
from typing import Any

import psutil
from tqdm import tqdm

from driftserve.bench.server_info import ServerBreakdown, breakdown, fetch_statistics
from driftserve.bench.tally import PERCENTILES, merge_reports
from driftserve.bench.worker import WorkerConfig, worker_process
from driftserve.core.client import ClientSecurity

logger = logging.getLogger(__name__)

# One worker process can comfortably schedule about this many requests per second.
RATE_PER_WORKER_RPS = 2_000
START_MARGIN_S = 0.3
WORKER_START_TIMEOUT_S = 60.0


class LoadError(RuntimeError):
    """The generator could not run (workers failed to start or crashed); exit code 2."""


@dataclass(frozen=True)
class LoadSpec:
    """What to measure: target, protocol, payloads and the load discipline."""

    target: str
    model: str
    requests: tuple[bytes, ...]
    protocol: str = "v2"
    version: str = ""
    streaming: bool = False
    mode: str = "closed"
    concurrency: int = 1
    rate_rps: float = 0.0
    arrival: str = "constant"
    warmup_s: float = 1.0
    duration_s: float = 5.0
    timeout_s: float = 10.0
    max_outstanding: int = 10_000
    lag_threshold_s: float = 0.002
    workers: int = 0  # 0: chosen from the load
    seed: int = 0
    label: str = ""
    rows_per_request: int = 1
    security: ClientSecurity = field(default_factory=ClientSecurity)

    def with_load(self, mode: str, level: float) -> LoadSpec:
        """The same spec at another concurrency (closed) or rate (open)."""
        if mode == "closed":
            return replace(self, mode="closed", concurrency=int(level))
        return replace(self, mode="open", rate_rps=float(level))

    @property
    def level(self) -> float:
        return float(self.concurrency) if self.mode == "closed" else self.rate_rps


@dataclass
class RunResult:
    """A run's outcome, ready for JSON, tables and plots."""

    label: str
    mode: str
    level: float
    protocol: str
    streaming: bool
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    throughput_rps: float
    latency_ms: dict[str, float]
    mean_ms: float
    lag_p99_ms: float
    late_sends: int
    loadgen_cpu_cores: float
    workers: int
    server: ServerBreakdown | None
    # The merged latency histogram (µs), HDR-encoded, so runs can be re-merged or re-queried.
    latency_hdr: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return sum(self.errors.values()) / self.requests if self.requests else 1.0

    def percentiles_us(self) -> dict[float, float]:
        keys = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9, "max": 100.0}
        return {keys[k]: v * 1_000.0 for k, v in self.latency_ms.items()}

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "server"}
        out["error_rate"] = round(self.error_rate, 6)
        out["server"] = self.server.to_dict() if self.server else None
        return out


def _worker_count(spec: LoadSpec) -> int:
    if spec.workers > 0:
        return spec.workers
    cores = os.cpu_count() or 1
    if spec.mode == "closed":
        return max(1, min(cores, spec.concurrency))
    return max(1, min(cores, math.ceil(spec.rate_rps / RATE_PER_WORKER_RPS)))


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def _worker_configs(spec: LoadSpec, n: int) -> list[WorkerConfig]:
    configs = []
    for i in range(n):
        configs.append(
            WorkerConfig(
                index=i,
                target=spec.target,
                protocol=spec.protocol,
                streaming=spec.streaming,
                requests=spec.requests,
                mode=spec.mode,
                concurrency=_split(spec.concurrency, n, i),
                rate_rps=spec.rate_rps / n,
                arrival=spec.arrival,
                seed=spec.seed * 1_000 + i,
                phase=i / n,
                warmup_s=spec.warmup_s,
                duration_s=spec.duration_s,
                timeout_s=spec.timeout_s,
                max_outstanding=max(1, spec.max_outstanding // n),
                lag_threshold_s=spec.lag_threshold_s,
                security=spec.security,
            )
        )
    return [c for c in configs if c.mode == "open" or c.concurrency > 0]


def _run_workers(spec: LoadSpec, configs: list[WorkerConfig], progress: bool) -> list[Any]:
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0, lock=False)
    counters = [ctx.Value("q", 0, lock=False) for _ in configs]
    procs = [
        ctx.Process(
            target=worker_process,
            args=(c, ready, go, start_at, counters[k], results),
            daemon=True,
            name=f"loadgen-{c.index}",
        )
        for k, c in enumerate(configs)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            try:
                ready.get(timeout=WORKER_START_TIMEOUT_S)
            except queue.Empty:
                raise LoadError(f"workers did not start within {WORKER_START_TIMEOUT_S:g} s") from None
        start_at.value = time.monotonic() + START_MARGIN_S
        go.set()
        total_s = spec.warmup_s + spec.duration_s
        deadline = start_at.value + total_s + spec.timeout_s + 30.0
        reports: list[Any] = []
        bar = tqdm(
            total=round(total_s, 1),
            unit="s",
            disable=not progress,
            leave=False,
            desc=f"{spec.label or spec.target} {spec.mode} {spec.level:g}",
            bar_format="{desc}: {bar} {n:.1f}/{total:.1f}s {postfix}",
        )
        with bar:
            while len(reports) < len(procs):
                try:
                    reports.append(results.get(timeout=0.25))
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise LoadError("workers did not finish in time") from None
                    _check_alive(procs, configs, {index for index, _, _ in reports})
                bar.n = round(min(total_s, max(0.0, time.monotonic() - start_at.value)), 1)
                bar.set_postfix(done=sum(c.value for c in counters), refresh=True)
        failed = [msg for _, rep, msg in reports if rep is None]
        if failed:
            raise LoadError(f"load generator worker failed: {failed[0]}")
        return [rep for _, rep, _ in reports]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _check_alive(procs: list[Any], configs: list[WorkerConfig], reported: set[int]) -> None:
    """A worker that died without reporting (killed, crashed in C) fails the run at once."""
    for proc, cfg in zip(procs, configs):
        if cfg.index not in reported and not proc.is_alive():
            proc.join(timeout=1.0)  # its report may still be in flight in the queue
            raise LoadError(f"load generator worker {cfg.index} exited with code {proc.exitcode} without a report")


def run_load(spec: LoadSpec, progress: bool = False, server_stats: bool = True) -> RunResult:
    """Measure one load level; raises LoadError when the generator itself fails."""
    if spec.mode not in ("closed", "open"):
        raise ValueError(f"mode must be closed|open, got {spec.mode!r}")
    if spec.mode == "closed" and spec.concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {spec.concurrency}")
    if spec.mode == "open" and spec.rate_rps <= 0:
        raise ValueError(f"open-loop rate must be positive, got {spec.rate_rps}")
    configs = _worker_configs(spec, _worker_count(spec))
    before = fetch_statistics(spec.target, spec.model, spec.version, 5.0, spec.security) if server_stats else None
    parent = psutil.Process()
    parent_cpu0 = sum(parent.cpu_times()[:2])
    reports = _run_workers(spec, configs, progress)
    parent_cpu = sum(parent.cpu_times()[:2]) - parent_cpu0
    after = fetch_statistics(spec.target, spec.model, spec.version, 5.0, spec.security) if server_stats else None
    merged = merge_reports(reports)
    elapsed = max(spec.duration_s, merged.last_done_s - merged.first_start_s)
    pct = merged.percentiles_us()
    names = ("p50", "p90", "p99", "p99.9", "max")
    result = RunResult(
        label=spec.label or spec.target,
        mode=spec.mode,
        level=spec.level,
        protocol=spec.protocol,
        streaming=spec.streaming,
        duration_s=round(elapsed, 3),
        requests=merged.total,
        ok=merged.ok,
        errors=merged.errors,
        throughput_rps=round(merged.ok / elapsed, 1),
        latency_ms={n: round(pct[p] / 1_000.0, 4) for n, p in zip(names, PERCENTILES)},
        mean_ms=round(merged.latency.get_mean_value() / 1_000.0, 4),
        lag_p99_ms=round(merged.lag.get_value_at_percentile(99) / 1_000.0, 3) if merged.lag.get_total_count() else 0.0,
        late_sends=merged.late_sends,
        loadgen_cpu_cores=round((merged.cpu_s + parent_cpu) / elapsed, 3),
        workers=len(configs),
        server=breakdown(before, after),
        latency_hdr=merged.latency.encode().decode("ascii"),
    )
    _add_warnings(result, spec, merged.max_lag_s)
    for warning in result.warnings:
        logger.warning("%s", warning)
    return result


def _add_warnings(result: RunResult, spec: LoadSpec, max_lag_s: float) -> None:
    if spec.mode == "open" and result.lag_p99_ms > spec.lag_threshold_s * 1_000.0:
        result.warnings.append(
            f"load generator fell behind schedule by {result.lag_p99_ms:.1f} ms at p99 "
            f"(max {max_lag_s * 1_000.0:.1f} ms, {result.late_sends} sends late); latencies "
            "still count from the scheduled times, but add --workers to keep up"
        )
    overload = result.errors.get("LOADGEN_OVERLOAD", 0)
    if overload:
        result.warnings.append(
            f"{overload} requests not sent: {spec.max_outstanding} already outstanding "
            "(the server is not keeping up with the offered rate)"
        )
    cores = os.cpu_count() or 1
    if result.loadgen_cpu_cores > 0.8 * min(cores, result.workers):
        result.warnings.append(
            f"load generator used {result.loadgen_cpu_cores:.2f} CPU cores over "
            f"{result.workers} workers; it may be the bottleneck"
        )
    if result.requests and result.ok == 0:
        result.warnings.append("no request succeeded: " + ", ".join(f"{k}={v}" for k, v in result.errors.items()))
