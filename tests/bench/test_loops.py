"""Closed and open loop disciplines with in-process fake senders (no gRPC)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time

import numpy as np
import pytest

from driftserve.bench.loops import arrival_offsets, closed_loop, open_loop
from driftserve.bench.tally import OVERLOAD, Tally, merge_reports


def test_constant_schedule_is_evenly_spaced_and_phased() -> None:
    offsets = arrival_offsets(100.0, 1.0, "constant", seed=0, phase=0.5)
    assert len(offsets) == 100
    assert offsets[0] == pytest.approx(0.005)
    assert np.allclose(np.diff(offsets), 0.01)


def test_poisson_schedule_is_seeded_and_bounded() -> None:
    a = arrival_offsets(1000.0, 2.0, "poisson", seed=7)
    assert np.array_equal(a, arrival_offsets(1000.0, 2.0, "poisson", seed=7))
    assert not np.array_equal(a, arrival_offsets(1000.0, 2.0, "poisson", seed=8))
    assert a.max() < 2.0 and np.all(np.diff(a) > 0)
    assert 1700 < len(a) < 2300  # ±7 standard deviations of a Poisson count of 2000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 1.0, "constant", 0), "must be positive"),
        ((10.0, 1.0, "uniform", 0), "unknown arrival distribution"),
        ((1e9, 100.0, "constant", 0), "exceed the limit"),
    ],
)
def test_schedule_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arrival_offsets(*args)


def test_open_loop_counts_queueing_from_the_scheduled_time() -> None:
    """A 200 ms stall of the generator itself must show up in the latency of every request
    scheduled during it, although each of them is answered instantly once sent."""
    tally = Tally()

    async def send(i: int) -> str:
        if i == 10:
            time.sleep(0.2)  # blocks the event loop: nothing else can be sent meanwhile
        return "OK"

    async def main() -> None:
        start = time.monotonic() + 0.05
        schedule = start + np.arange(50) * 0.01
        await open_loop(send, schedule, start, tally, max_outstanding=100)

    asyncio.run(main())
    assert tally.status_counts == {"OK": 50}
    # The stalled request and the ~19 scheduled behind it are all at least 10 ms late.
    assert tally.latency.get_value_at_percentile(99) >= 190_000
    assert tally.latency.get_value_at_percentile(70) >= 10_000
    assert tally.late_sends >= 15
    assert tally.max_lag_s >= 0.18


def test_open_loop_caps_outstanding_requests() -> None:
    tally = Tally()

    async def send(i: int) -> str:
        await asyncio.sleep(0.3)
        return "OK"

    async def main() -> None:
        start = time.monotonic()
        await open_loop(send, start + np.arange(20) * 0.001, start, tally, max_outstanding=5)

    asyncio.run(main())
    assert tally.status_counts == {"OK": 5, OVERLOAD: 15}


def test_closed_loop_keeps_concurrency_and_skips_warmup() -> None:
    tally = Tally()
    in_flight, peak = 0, 0
    calls = 0

    async def send(i: int) -> str:
        nonlocal in_flight, peak, calls
        calls += 1
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return "OK" if i % 4 else "UNAVAILABLE"

    async def main() -> None:
        now = time.monotonic()
        await closed_loop(send, 3, now + 0.1, now + 0.3, tally)

    asyncio.run(main())
    assert peak == 3
    recorded = sum(tally.status_counts.values())
    assert 0 < recorded < calls  # warmup requests were sent but not recorded
    assert set(tally.status_counts) == {"OK", "UNAVAILABLE"}
    assert tally.latency.get_total_count() == tally.status_counts["OK"]


def _report_from_process(values_us: list[int]) -> dict[str, object]:
    tally = Tally()
    for v in values_us:
        tally.record(0.0, v / 1e6, "OK")
    tally.record(0.0, 1.0, "NOT_FOUND")
    return tally.to_report()


def test_histograms_merge_across_processes() -> None:
    chunks = [[100] * 98, [200_000, 300_000]]
    with mp.get_context("spawn").Pool(2) as pool:
        reports = pool.map(_report_from_process, chunks)
    merged = merge_reports(reports)
    assert merged.status_counts == {"OK": 100, "NOT_FOUND": 2}
    assert merged.errors == {"NOT_FOUND": 2}
    pct = merged.percentiles_us()
    assert pct[50.0] == pytest.approx(100, rel=0.01)
    assert pct[99.0] == pytest.approx(200_000, rel=0.01)
    assert pct[100.0] == pytest.approx(300_000, rel=0.01)
