"""Server CPU per inference: CPU time of a server's whole process tree, read from ``/proc``.

Peers split one server over several processes (Triton's Python backend runs each model instance
in a stub process, PyTriton runs tritonserver as a child of the Python process that owns the
inference function, MLServer runs inference in worker processes), so the CPU a server spends is
the sum over the root process and all its descendants. Each process counts its own user + system
time and that of the children it has reaped (``cutime``/``cstime``), so a child that exits during a
window is not lost.

A :class:`CpuSampler` samples that sum every ``interval_s`` while perf_analyzer runs; perf_analyzer
reports the throughput of its last measurement windows, so :func:`cpu_per_inference_us` takes the
CPU spent over those same last windows, as a rate, divided by that throughput.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


class ProcStat(NamedTuple):
    """What the benchmark needs of one ``/proc/<pid>/stat``."""

    ppid: int
    cpu_s: float  # user + system of the process and of the children it reaped
    start_ticks: int  # start time since boot: with the pid, names the process (pids are reused)


def parse_stat(text: str) -> ProcStat:
    """Read one ``/proc/<pid>/stat``. The command name (field 2) may hold spaces and parentheses, so
    fields are counted after the last ``)``: ppid is field 4, utime/stime/cutime/cstime are fields
    14–17, starttime is field 22."""
    fields = text.rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ProcStat(int(fields[1]), ticks / CLOCK_TICKS, int(fields[19]))


def read_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    """pid -> its stat, for every process visible now; ones that exit while read are left out."""
    stats = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # gone between listing and reading, or not a process
    return stats


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """``root`` and every process below it, from a pid -> ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


class ProcessTree:
    """The CPU seconds of one server's process tree; the member pids are found once by scanning all of
    ``/proc`` (cheap enough once per run, too dear to repeat every sample) and refreshed on demand."""

    def __init__(self, root: int, proc: Path = PROC) -> None:
        self.root, self.proc = root, proc
        self.members: dict[int, int] = {}  # pid -> start_ticks
        self.refresh()

    def refresh(self) -> None:
        """Find the tree's members again (a server may start workers after it said it was ready)."""
        stats = read_stats(self.proc)
        tree = descendants(self.root, {pid: s.ppid for pid, s in stats.items()}) & set(stats)
        self.members = {pid: stats[pid].start_ticks for pid in tree}

    def _alive(self) -> list[tuple[int, ProcStat]]:
        alive = []
        for pid, start in self.members.items():
            try:
                stat = parse_stat((self.proc / str(pid) / "stat").read_text())
            except (OSError, IndexError, ValueError):
                continue  # exited: its time moved to its parent's cutime/cstime
            if stat.start_ticks == start:
                alive.append((pid, stat))
        return alive

    def cpu_seconds(self) -> float:
        """Total CPU seconds of the members still alive."""
        return sum(stat.cpu_s for _, stat in self._alive())

    def kill(self, signal_number: int) -> list[int]:
        """Signal the members still alive (the same processes, not reused pids); returns their pids."""
        hit = []
        for pid, _ in self._alive():
            try:
                os.kill(pid, signal_number)
                hit.append(pid)
            except (ProcessLookupError, PermissionError):
                continue
        return hit


Sample = tuple[float, float]  # (time.monotonic(), CPU seconds)


class CpuSampler:
    """Samples a CPU-seconds function every ``interval_s`` in a thread, from ``start()`` to ``stop()``."""

    def __init__(self, read: Callable[[], float], interval_s: float = 0.1) -> None:
        self.read, self.interval_s = read, interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-sampler")

    def _take(self) -> None:
        self.samples.append((time.monotonic(), self.read()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def __enter__(self) -> CpuSampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


def cpu_at(samples: list[Sample], t: float) -> float:
    """CPU seconds at time ``t``, interpolated linearly between the samples around it (clamped at the ends)."""
    if not samples:
        raise ValueError("no CPU samples")
    if t <= samples[0][0]:
        return samples[0][1]
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
    return samples[-1][1]


def measured_span(samples: list[Sample], window_s: float, windows: int = 3, tail_s: float = 0.1) -> tuple[float, float]:
    """The span perf_analyzer's reported numbers cover: its last ``windows`` measurement windows, which
    end just before it exits (``tail_s`` for draining the last requests and writing its CSV). The
    span never reaches into the first window (connection set-up, warm-up) when the run was longer."""
    start, end = samples[0][0], samples[-1][0]
    span_end = max(start, end - tail_s)
    span_start = max(span_end - windows * window_s, min(start + window_s, span_end))
    return span_start, span_end


def cpu_per_inference_us(samples: list[Sample], throughput_rps: float, window_s: float) -> float:
    """Server CPU µs per inference over the measured windows: the CPU rate there over the throughput
    perf_analyzer measured there (requests served in the span = throughput × its length). NaN
    when there is nothing to divide by."""
    if len(samples) < 2 or not throughput_rps > 0:
        return float("nan")
    span_start, span_end = measured_span(samples, window_s)
    if span_end <= span_start:
        return float("nan")
    rate = (cpu_at(samples, span_end) - cpu_at(samples, span_start)) / (span_end - span_start)
    return rate / throughput_rps * 1e6
