"""One CPU for the threads that take turns on the GIL: the event loop, the gRPC poller and the
reply senders (``--gil-cpu``).

Only one thread runs Python at a time, and every call passes the GIL along: from the poller that
receives it to the loop that serves it to a sender that writes the reply. Each hand-off wakes a
sleeping thread. When that thread last ran on another core, the wake-up is an inter-processor
interrupt and a core leaving its idle state, and nobody holds the GIL meanwhile: on 2 cores at 32
clients the machine sat ~22% idle under driftserve against ~13% under Triton, at the same CPU per
inference. Kept on one CPU, the same hand-off is a context switch on a core that is already awake.

Threads that work without the GIL keep the process's whole set: the batch workers (ONNX Runtime
and the Numba kernels run there), model loading (which starts ONNX Runtime's own thread pools),
the default executor, and gRPC core's threads. A Linux thread starts with the mask of the thread
that creates it, so the loop's pin would pass to every thread it starts; those call ``release``
first. Linux only; elsewhere every call here does nothing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

# --gil-cpu auto: measured on 2 CPUs per process (docs/ARCHITECTURE.md, "One CPU for the GIL's
# threads"); with more, one process's GIL-bound threads may need more than one core's worth of
# native work beside them (gRPC's framing and sendmsg in the senders), which is not measured.
AUTO_MAX_CPUS = 4

_lock = threading.Lock()
# The enlisted threads (poller, senders): native id -> the clock of the thread's CPU time.
_members: dict[int, int] = {}
_cpu: int | None = None
_whole: set[int] | None = None


@dataclass(frozen=True)
class Choice:
    """Where the GIL's threads go: ``cpu`` (None: nowhere in particular) and why, for the log."""

    cpu: int | None
    reason: str


def choose(mode: str, mask: list[int], quota: float | None, mask_is_own: bool) -> Choice:
    """``--gil-cpu`` resolved for a process allowed on ``mask`` (sorted) under CPU ``quota``.

    ``mask_is_own``: no sibling process shares the mask (one server process, or a worker pinned
    with ``--pin-workers``). The CPU is the mask's last: CPU 0 usually takes the most interrupts.
    """
    if mode == "off":
        return Choice(None, "off")
    if len(mask) < 2:
        return Choice(None, f"one CPU ({mask[0] if mask else '?'}): every thread is on it already")
    if not mask_is_own:  # each sibling would pick the same CPU
        return Choice(None, "workers share the CPUs without --pin-workers")
    if mode == "on":
        return Choice(mask[-1], "on")
    if quota is not None and quota < len(mask):
        return Choice(None, f"a CPU quota of {quota:.3g} below the {len(mask)} CPUs of the mask: they are shared")
    if len(mask) > AUTO_MAX_CPUS:
        return Choice(None, f"{len(mask)} CPUs, more than the {AUTO_MAX_CPUS} it is measured on; 'on' forces it")
    return Choice(mask[-1], f"{len(mask)} CPUs of its own")


def enlist() -> None:
    """Called first by a thread that mostly runs Python: it goes to the GIL's CPU, now or once placed."""
    if not _linux():
        return
    tid = threading.get_native_id()
    clock = time.pthread_getcpuclockid(threading.get_ident())
    with _lock:
        _members[tid] = clock
        cpu = _cpu
    if cpu is not None:
        _set_mask(tid, {cpu})


def discharge() -> None:
    """Called last by an enlisted thread, so its id (which the kernel reuses) is forgotten."""
    with _lock:
        _members.pop(threading.get_native_id(), None)


def release() -> None:
    """Called first by a thread that works without the GIL: the process's whole set, not the loop's CPU."""
    whole = _whole
    if whole is not None:
        _set_mask(threading.get_native_id(), whole)


def place(cpu: int) -> None:
    """Move the calling thread (the event loop) and every enlisted thread onto ``cpu``.

    Call it once the server has started: gRPC core's threads exist by then and keep the whole set.
    OSError when the kernel refuses (a CPU outside the mask).
    """
    global _cpu, _whole
    if not _linux():
        return
    whole = set(os.sched_getaffinity(0))
    _set_mask(threading.get_native_id(), {cpu}, strict=True)
    with _lock:
        _cpu, _whole = cpu, whole
        members = list(_members)
    for tid in members:
        _set_mask(tid, {cpu})


def unplace() -> None:
    """Give the calling thread and the enlisted ones the whole set back; later threads start free."""
    global _cpu, _whole
    with _lock:
        whole, members = _whole, list(_members)
        _cpu = _whole = None
    if whole is None:
        return
    for tid in [threading.get_native_id(), *members]:
        _set_mask(tid, whole)


def placed_cpu() -> int | None:
    return _cpu


def shared_cpu_ns() -> int:
    """CPU time so far of the calling thread (the event loop) and, once placed, of the enlisted
    threads that share its CPU: how busy that CPU is with the GIL's work.

    The SLO controller reads it for the loop's busy share. Placed, the loop alone stays far below
    a busy CPU (measured at 16 and 32 clients on 2 cores: 0.36–0.46 of the time, with the poller and the
    senders taking most of the rest), so its own time would never say the CPU is saturated.
    Unplaced, the others run on other cores and only the loop's time counts, as before.
    """
    total = time.thread_time_ns()
    if _cpu is None:
        return total
    with _lock:
        clocks = list(_members.values())
    for clock in clocks:
        try:
            total += time.clock_gettime_ns(clock)
        except OSError:  # the thread ended between the copy and the read
            continue
    return total


def whole_set() -> set[int] | None:
    """The process's CPUs as they were before ``place`` (None when nothing is placed): the loop's
    own mask is one CPU after it."""
    return _whole


def _set_mask(tid: int, cpus: set[int], strict: bool = False) -> None:
    try:
        os.sched_setaffinity(tid, cpus)
    except ProcessLookupError:  # the thread has ended since it enlisted
        return
    except OSError:
        if strict:
            raise


def _linux() -> bool:
    return hasattr(os, "sched_setaffinity")
