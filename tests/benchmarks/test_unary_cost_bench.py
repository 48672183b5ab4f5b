"""The unary cost benchmark's accounting: CPU time split by thread, and the report it writes.

The perf_analyzer runs themselves need its binary and are not part of the suite.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

from benchmarks import unary_cost_bench as bench


def _burn(seconds: float, then: threading.Event | None = None) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    if then is not None:
        then.wait(30)  # stay alive: a thread that ended leaves /proc/<pid>/task


def _burned(worker: threading.Thread) -> bool:
    """Whether ``worker`` has used its 0.3 s of CPU (read from /proc, in clock ticks)."""
    stat = Path(f"/proc/{os.getpid()}/task/{worker.native_id}/stat").read_text().rpartition(") ")[2].split()
    return (int(stat[11]) + int(stat[12])) / bench.CLOCK_TICKS >= 0.29


def test_thread_cpu_is_split_into_the_loop_thread_and_the_others() -> None:
    before = bench.thread_cpu_seconds(os.getpid())
    assert set(before) == set(bench.THREAD_GROUPS)
    measured = threading.Event()
    worker = threading.Thread(target=_burn, args=(0.3, measured))
    worker.start()
    _burn(0.3)
    while worker.is_alive() and time.thread_time() < 60 and not _burned(worker):
        time.sleep(0.05)
    after = bench.thread_cpu_seconds(os.getpid())
    measured.set()
    worker.join()
    # Tick granularity (10 ms) and a busy machine: only require most of each burn to be seen.
    assert after["loop thread"] - before["loop thread"] >= 0.2
    assert after["other Python threads"] - before["other Python threads"] >= 0.2
    assert sum(after.values()) <= bench.cpu_seconds(os.getpid()) + 0.05


def _run(cpu_us: float, rps: float) -> dict[str, float]:
    run = {"throughput_rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "server_cpu_us_per_request": cpu_us}
    run |= {f"{group} µs/request": cpu_us / 3 for group in bench.THREAD_GROUPS}
    return run | {"rows_per_batch": 2.0}


def test_report_gives_medians_and_per_round_ratios_to_the_baseline() -> None:
    runs = {
        "baseline c=32": [_run(400, 1000), _run(300, 1000), _run(500, 1000)],
        "driftserve c=32": [_run(200, 1500), _run(300, 1500), _run(250, 2000)],
    }
    args = argparse.Namespace(concurrency=[32], model="m", rounds=3, window_ms=3000)
    report = bench.summarise(runs, ["baseline", "driftserve"], args, ["--rounds", "3"])
    # Per-round CPU ratios 0.5, 1.0, 0.5 -> median 0.5; throughput ratios 1.5, 1.5, 2.0 -> 1.5.
    assert report["ratios"] == {"driftserve c=32": {"cpu_per_request": 0.5, "throughput": 1.5}}
    rows = [line for line in report["lines"] if line.startswith("| driftserve") or line.startswith("| baseline")]
    assert rows[0].startswith("| baseline | 32 | 1000 |") and "| 400 |" in rows[0]
    assert rows[1].startswith("| driftserve | 32 | 1500 |") and "| 250 |" in rows[1] and "| 0.50 | 1.50 |" in rows[1]
