"""``benchmarks.thread_cpu``: per-thread CPU and sleeps from ``/proc``, grouped by thread name."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from benchmarks.peers.cpu import ProcessTree
from benchmarks.thread_cpu import ThreadTimes, per_group, read_thread, snapshot
from driftserve.core.thread_names import name_native_thread


def _task(proc: Path, pid: int, tid: int, name: str, cpu_ns: int, sleeps: int) -> None:
    task = proc / str(pid) / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "comm").write_text(name + "\n")
    (task / "schedstat").write_text(f"{cpu_ns} 17 4\n")
    (task / "status").write_text(f"Name:\t{name}\nvoluntary_ctxt_switches:\t{sleeps}\nnonvoluntary_ctxt_switches:\t9\n")


def test_a_processs_main_thread_is_the_loop_and_others_keep_their_names(tmp_path: Path) -> None:
    _task(tmp_path, 10, 10, "driftserve", 5_000, 3)
    _task(tmp_path, 10, 11, "grpc-cq-poller", 7_000, 8)
    assert read_thread(10, 10, tmp_path) == ThreadTimes("loop", 5_000, 3)
    assert read_thread(10, 11, tmp_path) == ThreadTimes("grpc-cq-poller", 7_000, 8)
    assert read_thread(10, 12, tmp_path) is None  # gone


def test_groups_sum_over_threads_and_processes_and_count_new_threads_from_zero() -> None:
    before = {
        (1, 1): ThreadTimes("loop", 1_000_000_000, 10),
        (1, 2): ThreadTimes("event_engine", 0, 0),
        (2, 2): ThreadTimes("loop", 2_000_000_000, 20),
    }
    after = {
        (1, 1): ThreadTimes("loop", 1_500_000_000, 14),
        (1, 2): ThreadTimes("event_engine", 250_000_000, 5),
        (1, 3): ThreadTimes("event_engine", 250_000_000, 1),  # born in between
        (2, 2): ThreadTimes("loop", 2_500_000_000, 26),
    }
    groups = per_group(before, after)
    assert groups["loop"] == pytest.approx((1.0, 10, 2))
    assert groups["event_engine"] == pytest.approx((0.5, 6, 2))


def test_a_busy_named_thread_of_a_real_process_is_found_and_charged() -> None:
    stop = threading.Event()

    def spin() -> None:
        name_native_thread("test-spinner")
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        tree = ProcessTree(os.getpid())
        time.sleep(0.1)
        first = snapshot([tree])
        time.sleep(0.3)
        groups = per_group(first, snapshot([tree]))
    finally:
        stop.set()
        thread.join()
    assert groups["test-spinner"][0] > 0.01 and groups["test-spinner"][2] == 1
    assert "loop" in groups
