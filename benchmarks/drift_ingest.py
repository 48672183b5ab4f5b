"""Drift detector ingest throughput and memory: ``python -m benchmarks.drift_ingest``.

Measures the detector update path only (binning mirrored batches into pane counts), pinned to
one CPU, with a fake clock advancing at the simulated rate so that panes rotate and evict as in
production. Batch sizes are interleaved round by round and the median is reported, because
run-to-run noise on shared machines is large. Then 10 million rows go through one monitor and
the process RSS is read before and after to show that memory does not grow with rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.common import markdown_table
from driftserve.core.drift_config import DriftConfig
from driftserve.core.machine import machine
from driftserve.sidecar.drift.detector import ModelDriftMonitor
from driftserve.sidecar.drift.profile import build_profile

logger = logging.getLogger(__name__)

N_FEATURES = 30
REFERENCE_ROWS = 50_000
POOL_ROWS = 100_000
SIMULATED_ROWS_PER_S = 200_000
MEMORY_ROWS_PER_S = 256
MEMORY_CHECKPOINTS = 10
DEFAULT_BATCHES = (64, 256, 1024)
DEFAULT_OUT = Path("benchmarks/results/drift_ingest.json")


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mixed-shape float32 rows like the example model's 30 features, 1% missing values."""
    cols = [rng.normal(size=n), rng.lognormal(size=n), rng.poisson(3.0, n).astype(float), rng.uniform(size=n)]
    X = np.stack([cols[i % len(cols)] * (1 + i) for i in range(N_FEATURES)], axis=1).astype(np.float32)
    X[rng.random(X.shape) < 0.01] = np.nan
    return X


def _feed(
    mon: ModelDriftMonitor,
    pool: np.ndarray,
    batch: int,
    rows: int,
    start_row: int,
    rows_per_s: float = SIMULATED_ROWS_PER_S,
) -> tuple[float, float]:
    """Feed ``rows`` rows in batches of ``batch``; returns (CPU, wall) seconds spent in ``update``."""
    batches = [np.ascontiguousarray(pool[i : i + batch]) for i in range(0, pool.shape[0] - batch + 1, batch)]
    done = 0
    cpu = 0.0
    wall = 0.0
    k = 0
    while done < rows:
        x = batches[k % len(batches)]
        now = (start_row + done) / rows_per_s
        t0, w0 = time.thread_time(), time.perf_counter()
        mon.update(x, None, now)
        cpu += time.thread_time() - t0
        wall += time.perf_counter() - w0
        done += x.shape[0]
        k += 1
    return cpu, wall


def _numpy_baseline(profile_edges: list[np.ndarray], pool: np.ndarray, batch: int, rows: int) -> float:
    """The same binning written in plain NumPy (searchsorted + bincount per column); CPU seconds."""
    counts = [np.zeros(e.size + 1, dtype=np.int64) for e in profile_edges]
    missing = np.zeros(len(profile_edges), dtype=np.int64)
    done = 0
    cpu = 0.0
    start = 0
    while done < rows:
        x = pool[start : start + batch]
        start = (start + batch) % (pool.shape[0] - batch)
        t0 = time.thread_time()
        for f, edges in enumerate(profile_edges):
            col = x[:, f]
            nan = np.isnan(col)
            missing[f] += int(nan.sum())
            counts[f] += np.bincount(np.searchsorted(edges, col[~nan], side="right"), minlength=edges.size + 1)
        cpu += time.thread_time() - t0
        done += x.shape[0]
    return cpu


def run(batches: tuple[int, ...], rows_per_round: int, rounds: int, memory_rows: int) -> dict[str, object]:
    """Run the benchmark; returns the JSON-ready results."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(N_FEATURES)]
    profile = build_profile(_rows(rng, REFERENCE_ROWS), names)
    cfg = DriftConfig(reference="bench")
    pool = _rows(rng, POOL_ROWS)
    monitors = {b: ModelDriftMonitor(profile, cfg, f"bench{b}") for b in batches}
    for b, mon in monitors.items():  # compile (or load the cache) and touch every array
        _feed(mon, pool, b, 10_000, 0)
    samples: dict[int, list[float]] = {b: [] for b in batches}
    wall_samples: dict[int, list[float]] = {b: [] for b in batches}
    numpy_samples: dict[int, list[float]] = {b: [] for b in batches}
    edges = [f.edges for f in profile.features]
    baseline_rows = max(rows_per_round // 10, max(batches))  # NumPy is slow; a tenth is enough
    for r in range(rounds):
        for b in batches:
            cpu, wall = _feed(monitors[b], pool, b, rows_per_round, (r + 1) * rows_per_round)
            samples[b].append(rows_per_round / cpu)
            wall_samples[b].append(rows_per_round / wall)
            numpy_samples[b].append(baseline_rows / _numpy_baseline(edges, pool, b, baseline_rows))
    report_s = []
    mon = monitors[batches[0]]
    for i in range(20):
        t0 = time.thread_time()
        mon.report(1e4 + i)
        report_s.append(time.thread_time() - t0)

    # Memory: a slow simulated rate (256 rows/s) makes 10M rows span ~65 sliding windows, and the
    # warm-up covers two whole windows so every pane of the ring has been written before "before".
    proc = psutil.Process()
    mem_mon = ModelDriftMonitor(profile, cfg, "memory")
    window_s = cfg.window.pane_seconds * cfg.window.panes
    warmup_rows = int(2 * window_s * MEMORY_ROWS_PER_S)
    _feed(mem_mon, pool, 256, warmup_rows, 0, MEMORY_ROWS_PER_S)
    mem_mon.report(warmup_rows / MEMORY_ROWS_PER_S)
    rss_before = proc.memory_info().rss
    state_before = mem_mon.state_nbytes
    trajectory = []
    step = memory_rows // MEMORY_CHECKPOINTS
    fed = warmup_rows
    for _ in range(MEMORY_CHECKPOINTS):
        _feed(mem_mon, pool, 256, step, fed, MEMORY_ROWS_PER_S)
        fed = mem_mon.rows_total
        mem_mon.report(fed / MEMORY_ROWS_PER_S)
        trajectory.append({"rows": fed, "rss_mib": proc.memory_info().rss / 2**20})
    rss_after = proc.memory_info().rss
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "features": N_FEATURES,
        "fine_bins": 1000,
        "panes": cfg.window.panes,
        "rounds": rounds,
        "rows_per_round": rows_per_round,
        "rows_per_s_cpu_median": {str(b): statistics.median(s) for b, s in samples.items()},
        "rows_per_s_cpu_samples": {str(b): s for b, s in samples.items()},
        "rows_per_s_wall_median": {str(b): statistics.median(s) for b, s in wall_samples.items()},
        "numpy_baseline_rows_per_s_cpu_median": {str(b): statistics.median(s) for b, s in numpy_samples.items()},
        "speedup_vs_numpy_median": {
            str(b): statistics.median(a / n for a, n in zip(samples[b], numpy_samples[b])) for b in batches
        },
        "report_ms_median": 1000 * statistics.median(report_s),
        "memory": {
            "rows": mem_mon.rows_total,
            "rss_before_mib": rss_before / 2**20,
            "rss_after_mib": rss_after / 2**20,
            "state_bytes_before": state_before,
            "state_bytes_after": mem_mon.state_nbytes,
            "rss_trajectory": trajectory,
        },
    }


def main() -> None:
    """Command-line entry: print a Markdown summary and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES), help="batch sizes (rows)")
    parser.add_argument("--rows-per-round", type=int, default=1_000_000, help="rows per batch size per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--memory-rows", type=int, default=10_000_000, help="rows fed for the memory check")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run(tuple(args.batches), args.rows_per_round, args.rounds, args.memory_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    mem = res["memory"]
    header = (
        "batch rows",
        "update rows/s, CPU (median)",
        "update rows/s, wall (median)",
        "NumPy searchsorted rows/s, CPU (median)",
        "speedup (median of paired rounds)",
    )
    rows = (
        (
            b,
            f"{v:,.0f}",
            f"{res['rows_per_s_wall_median'][b]:,.0f}",
            f"{res['numpy_baseline_rows_per_s_cpu_median'][b]:,.0f}",
            f"{res['speedup_vs_numpy_median'][b]:.1f}x",
        )
        for b, v in res["rows_per_s_cpu_median"].items()
    )
    print("\n".join(markdown_table(header, rows, "rrrrr")))
    print(
        f"\nreport(): {res['report_ms_median']:.2f} ms median; "
        f"RSS {mem['rss_before_mib']:.1f} MiB (after warm-up) -> {mem['rss_after_mib']:.1f} MiB "
        f"after {mem['rows']:,} rows; "
        f"state {mem['state_bytes_before']:,} -> {mem['state_bytes_after']:,} bytes\n"
    )
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
