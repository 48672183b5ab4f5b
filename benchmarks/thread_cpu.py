"""Where a server's CPU goes under load, thread by thread: CPU µs and sleeps per request.

Starts ``driftserve serve --workers N`` (or N transport-ceiling processes on one port: the bound
for it), drives one model with perf_analyzer at a fixed concurrency, and reads every thread of the
servers' process trees from ``/proc/<pid>/task/<tid>/`` during the run: ``schedstat`` (ns on CPU)
and ``status`` (voluntary context switches: how often a thread went to sleep and had to be woken).
Threads are grouped by native name (driftserve names its own: ``grpc-cq-poller``, ``grpc-cq-sender``,
``batch-<model>``; gRPC core names its threads) and each process's main thread counts as ``loop``.
Per-request figures divide by the throughput perf_analyzer measured over the same span; a thread
that sleeps and wakes for every request pays a wake-up each time, which on machines with idle
cores (and in VMs, where waking another core costs an exit to the hypervisor) can cost more than
the work itself.

    python -m benchmarks.thread_cpu --server driftserve --workers 8 --slo-ms 20 --concurrency 128
    python -m benchmarks.thread_cpu --server ceiling --workers 8 --concurrency 128
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from benchmarks.common import ServerProcess, markdown_table, start_driftserve
from benchmarks.peers.bench import shape_args
from benchmarks.peers.cpu import PROC, ProcessTree, measured_span
from benchmarks.perf_analyzer_runner import run_perf_analyzer
from benchmarks.slo_bench import slo_repository
from benchmarks.workers_bench import start_ceiling
from driftserve.core.machine import machine_text

ROOT = Path(__file__).resolve().parent.parent


class ThreadTimes(NamedTuple):
    """One thread's counters at one moment."""

    group: str
    cpu_ns: int
    sleeps: int  # voluntary context switches


def read_thread(pid: int, tid: int, proc: Path = PROC) -> ThreadTimes | None:
    """The counters of thread ``tid`` of process ``pid``; None once it is gone."""
    task = proc / str(pid) / "task" / str(tid)
    try:
        name = (task / "comm").read_text().strip()
        cpu_ns = int((task / "schedstat").read_text().split()[0])
        status = (task / "status").read_text()
    except (OSError, IndexError, ValueError):
        return None
    sleeps = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt")), 0)
    return ThreadTimes("loop" if tid == pid else name, cpu_ns, sleeps)


def snapshot(trees: list[ProcessTree], proc: Path = PROC) -> dict[tuple[int, int], ThreadTimes]:
    """Every thread of every process in ``trees``, by (pid, tid)."""
    out = {}
    for tree in trees:
        for pid in tree.members:
            try:
                tids = [int(t.name) for t in (proc / str(pid) / "task").iterdir()]
            except OSError:
                continue
            for tid in tids:
                if (times := read_thread(pid, tid, proc)) is not None:
                    out[pid, tid] = times
    return out


def per_group(
    before: dict[tuple[int, int], ThreadTimes], after: dict[tuple[int, int], ThreadTimes]
) -> dict[str, tuple[float, float, int]]:
    """Group -> (CPU s, sleeps, threads) spent between two snapshots; threads born in between count from 0."""
    out: dict[str, tuple[float, float, int]] = {}
    for key, end in after.items():
        start = before.get(key, ThreadTimes(end.group, 0, 0))
        cpu, sleeps, threads = out.get(end.group, (0.0, 0.0, 0))
        out[end.group] = (cpu + (end.cpu_ns - start.cpu_ns) / 1e9, sleeps + end.sleeps - start.sleeps, threads + 1)
    return out


def measure(
    servers: list[ServerProcess], model: str, concurrency: int, window_ms: int, extra: list[str]
) -> tuple[dict[str, float], dict[str, tuple[float, float, int]], float]:
    """Run perf_analyzer while snapshotting the servers' threads every 100 ms; returns its result,
    the per-group CPU and sleeps over the span its reported numbers cover, and that span's length."""
    trees = [ProcessTree(server.proc.pid) for server in servers]
    snapshots: list[tuple[float, dict[tuple[int, int], ThreadTimes]]] = []
    done = threading.Event()

    def sample() -> None:
        while True:
            snapshots.append((time.monotonic(), snapshot(trees)))
            if done.wait(0.1):
                snapshots.append((time.monotonic(), snapshot(trees)))
                return

    sampler = threading.Thread(target=sample, name="thread-sampler", daemon=True)
    sampler.start()
    try:
        result = run_perf_analyzer(servers[0].target, model, concurrency, window_ms, 300, extra)
    finally:
        done.set()
        sampler.join()
    start, end = measured_span([(t, 0.0) for t, _ in snapshots], window_ms / 1000)
    first = min(snapshots, key=lambda s: abs(s[0] - start))
    last = min(snapshots, key=lambda s: abs(s[0] - end))
    return result, per_group(first[1], last[1]), last[0] - first[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--server", choices=("driftserve", "ceiling"), default="driftserve")
    parser.add_argument("--workers", type=int, default=1, help="driftserve --workers, or ceiling processes")
    parser.add_argument("--model", default="breast_cancer_lr")
    parser.add_argument("--slo-ms", type=float, default=None, help="serve the SLO config with this slo_p99_ms")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--max-threads", type=int, default=None, help="perf_analyzer's client threads")
    parser.add_argument("--serve-args", default="", help="more `driftserve serve` arguments, space-separated")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    extra = ["--max-threads", str(args.max_threads)] if args.max_threads else []
    with tempfile.TemporaryDirectory() as tmp:
        repository, model = args.model_repository, args.model
        if args.slo_ms is not None:
            repository = Path(tmp) / "repository"
            model = slo_repository(args.model_repository, repository, args.model, args.slo_ms)
        if args.server == "ceiling":
            servers = start_ceiling(repository, Path(tmp), args.workers)
            extra += shape_args(repository, model)
        else:
            serve_args = ["--workers", str(args.workers), *args.serve_args.split()]
            servers = [start_driftserve(repository, Path(tmp), serve_args, label="driftserve")]
        try:
            for server in servers:
                server.wait_ready(timeout_s=300)
            result, groups, span_s = measure(servers, model, args.concurrency, args.window_ms, extra)
        finally:
            for server in servers:
                server.stop()
    served = result["throughput_rps"] * span_s

    def rows() -> Iterator[tuple[object, ...]]:
        for group, (cpu, sleeps, threads) in sorted(groups.items(), key=lambda g: -g[1][0]):
            if cpu * 1e6 / served >= 0.5 or sleeps / served >= 0.05:
                yield group, threads, f"{cpu * 1e6 / served:.1f}", f"{sleeps / served:.2f}"
        total_cpu = sum(g[0] for g in groups.values())
        total_sleeps = sum(g[1] for g in groups.values())
        yield (
            "total",
            sum(g[2] for g in groups.values()),
            f"{total_cpu * 1e6 / served:.1f}",
            f"{total_sleeps / served:.2f}",
        )

    table = list(rows())
    print(
        f"{args.server} ×{args.workers}, {args.model}, {args.concurrency} clients: "
        f"{result['throughput_rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms; "
        f"{machine_text()}"
    )
    print("\n".join(markdown_table(("thread", "threads", "CPU µs/req", "sleeps/req"), table)))
    if args.json:
        report = {"command": sys.argv, "machine": machine_text(), "result": result, "span_s": span_s, "rows": table}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
