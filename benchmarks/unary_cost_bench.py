"""What one unary ModelInfer costs the server: CPU per request, side by side with a baseline.

Starts the servers under test on one model repository and drives each with perf_analyzer at the
given client counts, round by round in ABBA order. Per run it reads the server process's CPU time
(``utime + stime`` from ``/proc/<pid>/stat``) before and after, and divides by the requests the
server counted (ModelStatistics success count), so the figure is the server's own work, whatever
else the shared machine runs. Variants:

- ``driftserve``: this tree's server, unary ModelInfer.
- ``baseline``: the server of another source tree (``--baseline-tree``, e.g. ``git archive`` of
  main unpacked somewhere), unary; it runs with that tree as its working directory, so its own
  ``driftserve`` package is the one imported.
- ``stream``: this tree's server over ModelStreamInfer (perf_analyzer ``--streaming``).
- ``aio``: this tree's server with ``--grpc-frontend aio`` (grpcio's grpc.aio server instead of
  the completion-queue front end).
- ``ceiling``: ``benchmarks.grpc_ceiling`` (bare completion-queue front end, canned replies; its
  ModelStatistics counts the replies it sent).
- ``ceiling-aio``: the same ceiling on grpc.aio (``--frontend aio``).

The CPU time is also split by thread, from ``/proc/<pid>/task/<tid>/stat``: the event-loop thread
(the process's first), gRPC core's own threads (named by gRPC: ``event_engine``, timers, ...), and
the other Python threads (the batch workers and grpc.aio's completion-queue poller, which keep
the process's name).

``--py-spy-s N`` also records N seconds of ``py-spy record --native`` of each server in the first
round, while perf_analyzer drives it at the largest client count, as raw collapsed stacks
(``<variant>.collapsed``, open in speedscope or summarise with ``benchmarks.profile_summary``).

    python -m benchmarks.unary_cost_bench --baseline-tree /tmp/main --rounds 4 --concurrency 1 32
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from benchmarks.common import ServerProcess, markdown_table, start_driftserve, start_grpc_ceiling
from benchmarks.perf_analyzer_runner import batch_counts, median_run, round_order, run_perf_analyzer
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
VARIANTS = ("baseline", "driftserve", "aio", "stream", "ceiling", "ceiling-aio")
CEILINGS = ("ceiling", "ceiling-aio")
THREAD_GROUPS = ("loop thread", "gRPC core threads", "other Python threads")
CEILING_SHAPE = "input:1,30"  # one row of the example models' 30 features


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time so far of the loop thread, gRPC core's threads and the other Python threads.

    Python leaves its threads with the process's name; gRPC core names its own.
    """
    split = dict.fromkeys(THREAD_GROUPS, 0.0)
    process_name = Path(f"/proc/{pid}/comm").read_text().strip()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            head, _, rest = task.joinpath("stat").read_text().partition(") ")
        except OSError:  # the thread ended meanwhile
            continue
        fields = rest.split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        name = head.partition(" (")[2]
        group = THREAD_GROUPS[0] if task.name == str(pid) else THREAD_GROUPS[2 if name == process_name else 1]
        split[group] += seconds
    return split


def served_count(target: str, model: str) -> int:
    """Requests the model's served versions completed successfully (ModelStatistics)."""
    with grpc.insecure_channel(target) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name=model), timeout=10
        )
    return sum(stats.inference_stats.success.count for stats in reply.model_stats)


def start_variant(variant: str, repository: Path, log_dir: Path, baseline_tree: Path | None) -> ServerProcess:
    """One server under test, not yet ready."""
    if variant in CEILINGS:
        return start_grpc_ceiling(
            repository, log_dir, frontend="aio" if variant == "ceiling-aio" else "cq", label=variant
        )
    if variant == "aio":
        return start_driftserve(repository, log_dir, ["--grpc-frontend", "aio"], label=variant)
    if variant == "baseline":
        assert baseline_tree is not None
        return start_driftserve(repository, log_dir, label="baseline", source=baseline_tree)
    return start_driftserve(repository, log_dir, label=variant)


def measure(
    server: ServerProcess, variant: str, model: str, concurrency: int, window_ms: int, stability_percent: int
) -> dict[str, float]:
    """One perf_analyzer run, with the server's CPU time per request it served."""
    extra = ["--streaming"] if variant == "stream" else []
    if variant in CEILINGS:
        extra = ["--shape", CEILING_SHAPE]  # its metadata declares no batch dimension
    before = served_count(server.target, model)
    before_rows = batch_counts(server.target, model) if variant not in CEILINGS else (0, 0)
    threads0, cpu0, wall0 = thread_cpu_seconds(server.proc.pid), cpu_seconds(server.proc.pid), time.monotonic()
    result = run_perf_analyzer(server.target, model, concurrency, window_ms, stability_percent, extra)
    cpu, wall = cpu_seconds(server.proc.pid) - cpu0, time.monotonic() - wall0
    threads = thread_cpu_seconds(server.proc.pid)
    requests = max(served_count(server.target, model) - before, 1)
    result["server_cpu_us_per_request"] = cpu / requests * 1e6
    result["server_cpu_share"] = cpu / wall
    for group in THREAD_GROUPS:
        result[f"{group} µs/request"] = (threads[group] - threads0[group]) / requests * 1e6
    if variant not in CEILINGS:
        rows, batches = batch_counts(server.target, model)
        result["rows_per_batch"] = (rows - before_rows[0]) / max(batches - before_rows[1], 1)
    return result


def record_profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` (native frames, every thread, raw collapsed stacks) in the background."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [py_spy, "record", "--native", "--threads", "-r", "1000", "-f", "raw"]
    return subprocess.Popen(
        [*command, "-d", str(seconds), "-p", str(pid), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--model", default="breast_cancer_mlp")
    parser.add_argument("--baseline-tree", type=Path, help="source tree of the baseline server")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window-ms", type=int, default=4000)
    # Loose on purpose: on a shared machine three windows within 60% of each other may never come,
    # and the CPU per request does not need them (it counts every request of the run).
    parser.add_argument("--stability-percent", type=int, default=200)
    parser.add_argument("--py-spy-s", type=int, default=0, help="profile each server this long in round 1")
    parser.add_argument("--out", type=Path, default=None, help="write unary_cost.{json,md} here")
    args = parser.parse_args(argv)
    variants = args.variants or [v for v in VARIANTS if v != "baseline" or args.baseline_tree is not None]
    if "baseline" in variants and args.baseline_tree is None:
        parser.error("the baseline variant needs --baseline-tree")
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            v: start_variant(v, args.model_repository.resolve(), Path(tmp), args.baseline_tree) for v in variants
        }
        try:
            for server in servers.values():
                server.wait_ready()
            for round_index in range(args.rounds):
                for concurrency in args.concurrency:
                    for variant in round_order(variants, round_index):
                        server = servers[variant]
                        profiler = None
                        if args.py_spy_s and round_index == 0 and concurrency == max(args.concurrency):
                            out = (args.out or Path(tmp)) / f"{variant}.collapsed"
                            profiler = record_profile(server.proc.pid, args.py_spy_s, out)
                        result = measure(
                            server, variant, args.model, concurrency, args.window_ms, args.stability_percent
                        )
                        if profiler is not None:
                            profiler.wait()
                        runs.setdefault(f"{variant} c={concurrency}", []).append(result)
                        print(
                            f"round {round_index + 1} {variant:10} c={concurrency:<3} "
                            f"{result['throughput_rps']:7.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                            f"p99 {result['p99_ms']:6.2f} ms  server CPU {result['server_cpu_us_per_request']:5.0f} "
                            f"µs/req ({result['server_cpu_share']:.2f} cores; loop thread "
                            f"{result['loop thread µs/request']:.0f}, gRPC core "
                            f"{result['gRPC core threads µs/request']:.0f}, other Python threads "
                            f"{result['other Python threads µs/request']:.0f}; "
                            f"{result.get('rows_per_batch', float('nan')):.1f} rows/batch)",
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.stop()
    report = summarise(runs, variants, args, argv)
    print("\n".join(report["lines"]))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "unary_cost.md").write_text("\n".join(report["lines"]) + "\n")
        (args.out / "unary_cost.json").write_text(json.dumps({**report, "runs": runs}, indent=2))
    return 0


def summarise(
    runs: dict[str, list[dict[str, float]]], variants: list[str], args: argparse.Namespace, argv: list[str] | None
) -> dict[str, object]:
    """Medians per variant and client count, and per-round ratios against the baseline."""
    info = machine()
    command = "python -m benchmarks.unary_cost_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    ratios: dict[str, dict[str, float]] = {}
    for concurrency in args.concurrency:
        base = runs.get(f"baseline c={concurrency}")
        for variant in variants:
            key = f"{variant} c={concurrency}"
            median = median_run(runs[key])
            cpu_ratio = tput_ratio = float("nan")
            if base is not None and variant != "baseline":
                cpu_ratio = statistics.median(
                    a["server_cpu_us_per_request"] / b["server_cpu_us_per_request"] for a, b in zip(runs[key], base)
                )
                tput_ratio = statistics.median(
                    a["throughput_rps"] / b["throughput_rps"] for a, b in zip(runs[key], base)
                )
                ratios[key] = {"cpu_per_request": cpu_ratio, "throughput": tput_ratio}
            rows.append(
                (
                    variant,
                    concurrency,
                    f"{median['throughput_rps']:.0f}",
                    f"{median['p50_ms']:.2f}",
                    f"{median['p99_ms']:.2f}",
                    f"{median['server_cpu_us_per_request']:.0f}",
                    " / ".join(f"{median[f'{group} µs/request']:.0f}" for group in THREAD_GROUPS),
                    ""
                    if median.get("rows_per_batch", float("nan")) != median.get("rows_per_batch")
                    else f"{median['rows_per_batch']:.1f}",
                    "" if cpu_ratio != cpu_ratio else f"{cpu_ratio:.2f}",
                    "" if tput_ratio != tput_ratio else f"{tput_ratio:.2f}",
                )
            )
    lines = [
        f"`{command}` — perf_analyzer on {args.model}, {args.rounds} rounds of {args.window_ms / 1000:g} s windows "
        f"in ABBA order; medians, and the median of per-round ratios to the baseline; {info['nproc']} shared "
        f"cores, {info['cpu']}; {info['date_utc']} UTC.",
        "",
        *markdown_table(
            (
                "variant",
                "clients",
                "req/s",
                "p50 (ms)",
                "p99 (ms)",
                "server CPU (µs/req)",
                "loop / gRPC core / other threads (µs/req)",
                "rows/batch",
                "CPU ratio",
                "req/s ratio",
            ),
            rows,
        ),
    ]
    return {"command": command, "machine": info, "date": dt.date.today().isoformat(), "ratios": ratios, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())
