"""Running Triton's perf_analyzer (C++, so the client is not the bottleneck) and reading results.

Used by the side-by-side benchmarks (batching on/off, mirroring on/off); see perf_analyzer.sh for
how the binary and its libraries are obtained.
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from benchmarks.peers.cpu import CpuSampler, ProcessTree, cpu_per_inference_us
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from benchmarks.common import ServerProcess

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "perf_analyzer.sh"


def run_perf_analyzer(
    target: str,
    model: str,
    concurrency: int,
    window_ms: int,
    stability_percent: int = 60,
    extra_args: list[str] | None = None,
    request_rate: float | None = None,
) -> dict[str, float]:
    """One perf_analyzer measurement at a fixed concurrency, or open loop at ``request_rate``
    requests/s (Poisson arrivals); latencies in ms, rates per second."""
    load = (
        ["--concurrency-range", str(concurrency)]
        if request_rate is None
        else ["--request-rate-range", f"{request_rate:.0f}", "--request-distribution", "poisson"]
    )
    with tempfile.NamedTemporaryFile(suffix=".csv") as out:
        cmd = [
            str(SCRIPT),
            "-i",
            "grpc",
            "-u",
            target,
            "-m",
            model,
            *load,
            "-p",
            str(window_ms),
            "-s",
            str(stability_percent),
            "-f",
            out.name,
            *(extra_args or []),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed for {model}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        with open(out.name) as f:
            row = next(csv.DictReader(f))
    return {
        "throughput_rps": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
        # Absent when the server offers no ModelStatistics (the naive baseline).
        "server_queue_us": float(row.get("Server Queue") or "nan"),
        "server_compute_infer_us": float(row.get("Server Compute Infer") or "nan"),
    }


def batch_counts(target: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of a model's served version, from ModelStatistics."""
    with grpc.insecure_channel(target) as channel:
        stats = (
            pb_grpc.GRPCInferenceServiceStub(channel)
            .ModelStatistics(pb.ModelStatisticsRequest(name=model))
            .model_stats[0]
        )
    return stats.inference_count, stats.execution_count


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """The measuring order of one round: reversed every other round (ABBA), so a machine that
    drifts during a round favours no variant."""
    return list(items) if round_index % 2 == 0 else list(items)[::-1]


NAN_RESULT = {"throughput_rps": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan")}


def measure_with_cpu(
    servers: Sequence[ServerProcess],
    model: str,
    concurrency: int,
    window_ms: int,
    extra: list[str],
    log: Callable[[str], None],
) -> dict[str, float]:
    """One perf_analyzer run against the first server's target with the CPU of every server's process
    tree sampled meanwhile (several servers: processes sharing one port). On a noisy machine
    perf_analyzer may find no stable window, so the second try accepts ±300%; a second failure is
    recorded as NaN, not a crash."""
    trees = [ProcessTree(server.proc.pid) for server in servers]
    for stability in (60, 300):
        with CpuSampler(lambda: sum(tree.cpu_seconds() for tree in trees)) as sampler:
            try:
                result = run_perf_analyzer(servers[0].target, model, concurrency, window_ms, stability, extra)
            except RuntimeError as exc:
                log(f"  perf_analyzer against {servers[0].label}: {str(exc).strip().splitlines()[-1]}")
                continue
        result["server_cpu_us_per_inference"] = cpu_per_inference_us(
            sampler.samples, result["throughput_rps"], window_ms / 1000
        )
        return result
    return dict(NAN_RESULT, server_cpu_us_per_inference=float("nan"))


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The per-key median of repeated measurements of one variant; failed runs (NaN) are left out."""
    keys = {key: None for run in runs for key in run}
    return {key: nan_median([run.get(key, float("nan")) for run in runs]) for key in keys}


def nan_median(values: list[float]) -> float:
    """The median of the values that are numbers (NaN marks a failed measurement); NaN if none are."""
    kept = [v for v in values if v == v]
    return statistics.median(kept) if kept else float("nan")


def throughput_ratios(numerators: list[dict[str, float]], denominators: list[dict[str, float]]) -> list[float]:
    """Throughput ratio within each round (both variants saw the same machine state)."""
    return [a["throughput_rps"] / b["throughput_rps"] for a, b in zip(numerators, denominators)]
