"""``--gil-cpu``: which CPU the GIL's threads get, and how threads join it or keep the whole set."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from driftserve.core import gil_cpu
from driftserve.core.cpus import affinity
from driftserve.core.gil_cpu import AUTO_MAX_CPUS, choose


def test_auto_takes_the_last_cpu_of_a_small_mask_of_its_own() -> None:
    assert choose("auto", [0, 1], None, True).cpu == 1
    assert choose("auto", [2, 5, 7], 3.0, True).cpu == 7  # a quota as large as the mask shares nothing


def test_auto_stays_off_where_the_cpus_are_shared_or_many() -> None:
    shared_by_quota = choose("auto", [0, 1, 2, 3], 2.0, True)
    assert shared_by_quota.cpu is None and "quota of 2" in shared_by_quota.reason
    siblings = choose("auto", [0, 1], None, False)
    assert siblings.cpu is None and "--pin-workers" in siblings.reason
    assert choose("on", [0, 1], None, False).cpu is None, "every sibling would pick the same CPU"
    many = list(range(AUTO_MAX_CPUS + 1))
    assert choose("auto", many, None, True).cpu is None
    assert choose("on", many, None, True).cpu == many[-1]  # 'on' is the user's word for it


def test_off_and_a_single_cpu_place_nothing() -> None:
    assert choose("off", [0, 1], None, True).cpu is None
    assert choose("on", [3], None, True).cpu is None
    assert choose("auto", [3], None, True).cpu is None


def _in_thread(target: Callable[[], object]) -> object:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(target()))
    thread.start()
    thread.join()
    return result[0]


@pytest.fixture
def placement() -> Iterator[list[int]]:
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and 2 CPUs")
    whole = sorted(os.sched_getaffinity(0))
    yield whole
    gil_cpu.unplace()


def test_placing_moves_the_caller_and_enlisted_threads_and_released_ones_get_every_cpu(
    placement: list[int],
) -> None:
    whole = set(placement)
    enlisted = threading.Event()
    stop = threading.Event()
    member_mask: list[set[int]] = []

    def member() -> None:
        gil_cpu.enlist()
        enlisted.set()
        stop.wait(30)
        member_mask.append(os.sched_getaffinity(0))
        gil_cpu.discharge()

    thread = threading.Thread(target=member)
    thread.start()
    assert enlisted.wait(30)
    gil_cpu.place(placement[-1])
    try:
        assert os.sched_getaffinity(0) == {placement[-1]}
        assert affinity() == placement, "the process's CPUs, not the caller's one"
        inherited = _in_thread(lambda: os.sched_getaffinity(0))
        assert inherited == {placement[-1]}, "a new thread starts with its creator's mask"

        def released() -> set[int]:
            gil_cpu.release()
            return os.sched_getaffinity(0)

        assert _in_thread(released) == whole

        def late_member() -> set[int]:
            gil_cpu.enlist()
            try:
                gil_cpu.release()  # not what a member does; shows enlist pinned it before
                gil_cpu.enlist()
                return os.sched_getaffinity(0)
            finally:
                gil_cpu.discharge()

        assert _in_thread(late_member) == {placement[-1]}
    finally:
        stop.set()
        thread.join()
    assert member_mask == [{placement[-1]}]
    gil_cpu.unplace()
    assert os.sched_getaffinity(0) == whole
    assert _in_thread(lambda: os.sched_getaffinity(0)) == whole


def test_release_and_enlist_do_nothing_until_something_is_placed(placement: list[int]) -> None:
    def both() -> set[int]:
        gil_cpu.enlist()
        gil_cpu.release()
        gil_cpu.discharge()
        return os.sched_getaffinity(0)

    assert _in_thread(both) == set(placement)
    assert gil_cpu.placed_cpu() is None


def test_a_cpu_outside_the_mask_is_refused_and_nothing_moves(placement: list[int]) -> None:
    outside = max(placement) + 1024
    with pytest.raises(OSError):
        gil_cpu.place(outside)
    assert gil_cpu.placed_cpu() is None
    assert os.sched_getaffinity(0) == set(placement)


def test_the_loops_cpu_time_counts_the_enlisted_threads_only_once_they_share_its_cpu(
    placement: list[int],
) -> None:
    """The SLO controller's busy share: unplaced, the caller's own CPU time; placed, the members'
    time on the same CPU too (they compete with the loop there)."""
    busy_ns = 200_000_000
    spun = threading.Event()
    stop = threading.Event()

    def member() -> None:
        gil_cpu.enlist()
        start = time.thread_time_ns()
        while time.thread_time_ns() - start < busy_ns:  # CPU time of its own, GIL or not
            pass
        spun.set()
        stop.wait(30)
        gil_cpu.discharge()

    thread = threading.Thread(target=member)
    thread.start()
    try:
        assert spun.wait(60)
        alone = gil_cpu.shared_cpu_ns() - time.thread_time_ns()
        assert abs(alone) < busy_ns // 4, "unplaced: only the caller's time"
        gil_cpu.place(placement[-1])
        shared = gil_cpu.shared_cpu_ns() - time.thread_time_ns()
        assert shared >= busy_ns, "placed: the member's time counts"
    finally:
        stop.set()
        thread.join()
    after = gil_cpu.shared_cpu_ns() - time.thread_time_ns()
    assert abs(after) < busy_ns // 4, "a member that has left no longer counts"
