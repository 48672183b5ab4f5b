"""The two load disciplines, independent of gRPC: closed loop and open loop.

`send(i)` is a coroutine that performs request number `i` and returns its status name (`"OK"`,
`"NOT_FOUND"`, ...); it never raises. Times are `time.monotonic()` seconds.

Open loop measures each request from its *scheduled* send time, not from when the generator got
round to sending it, so a server (or generator) stall shows up in the latency of every request
that should have been sent meanwhile; coordinated omission cannot hide the queueing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from driftserve.bench.tally import OVERLOAD, Tally

logger = logging.getLogger(__name__)

Send = Callable[[int], Awaitable[str]]
# A schedule longer than this is refused: it would cost hundreds of MB just for the send times.
MAX_SCHEDULED_REQUESTS = 20_000_000


def arrival_offsets(rate_rps: float, duration_s: float, distribution: str, seed: int, phase: float = 0.0) -> np.ndarray:
    """Send times (seconds from the start) for an open-loop run, bounded in count.

    `constant` spaces requests 1/rate apart, shifted by `phase` of one interval (so that several
    workers interleave evenly); `poisson` draws exponential gaps from a seeded generator.
    """
    if rate_rps <= 0 or duration_s <= 0:
        raise ValueError(f"rate ({rate_rps}) and duration ({duration_s}) must be positive")
    expected = rate_rps * duration_s
    if expected > MAX_SCHEDULED_REQUESTS:
        raise ValueError(
            f"{expected:.0f} scheduled requests exceed the limit {MAX_SCHEDULED_REQUESTS}; "
            "lower the rate or the duration"
        )
    if distribution == "constant":
        offsets = (np.arange(int(np.ceil(expected))) + phase) / rate_rps
    elif distribution == "poisson":
        rng = np.random.default_rng(seed)
        n = int(expected + 10 * np.sqrt(expected) + 10)
        offsets = np.cumsum(rng.exponential(1.0 / rate_rps, size=n))
    else:
        raise ValueError(f"unknown arrival distribution {distribution!r}; expected constant|poisson")
    return offsets[offsets < duration_s]


async def closed_loop(
    send: Send,
    concurrency: int,
    measure_from: float,
    end: float,
    tally: Tally,
    on_done: Callable[[], None] | None = None,
) -> None:
    """`concurrency` virtual clients; each sends its next request when the previous returns.

    Requests started before `measure_from` are warmup and not recorded; no request starts after
    `end`, and each one is bounded by the sender's own timeout.
    """
    counter = iter(range(1 << 62))

    async def client() -> None:
        while True:
            started = time.monotonic()
            if started >= end:
                return
            status = await send(next(counter))
            done = time.monotonic()
            if started >= measure_from:
                tally.record(started, done, status)
                if on_done is not None:
                    on_done()

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def open_loop(
    send: Send,
    schedule: Sequence[float] | np.ndarray,
    measure_from: float,
    tally: Tally,
    max_outstanding: int,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Send request `i` at absolute monotonic time `schedule[i]`, whatever is still in flight.

    Latency is completion minus scheduled time. When the generator itself is late the lag is
    recorded; when `max_outstanding` requests are in flight the request is not sent and counts
    as LOADGEN_OVERLOAD, so a stalled server cannot exhaust memory. Returns once every sent
    request has finished.
    """
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, scheduled: float) -> None:
        status = await send(i)
        if scheduled >= measure_from:
            tally.record(scheduled, time.monotonic(), status)
            if on_done is not None:
                on_done()

    i, n = 0, len(schedule)
    while i < n:
        now = time.monotonic()
        due = float(schedule[i])
        if due > now:
            # uvloop timers have millisecond resolution, so a send can be up to ~1 ms late; that
            # is recorded as lag and counted in the latency, which is cheaper for a shared
            # machine than spinning on the clock.
            await asyncio.sleep(due - now)
            continue
        # Send everything already due in one burst: catching up is what a real client would do.
        while i < n and float(schedule[i]) <= now:
            scheduled = float(schedule[i])
            if scheduled >= measure_from:
                tally.record_lag(now - scheduled)
            if len(pending) >= max_outstanding:
                if scheduled >= measure_from:
                    tally.record(scheduled, now, OVERLOAD)
            else:
                task = asyncio.create_task(one(i, scheduled))
                pending.add(task)
                task.add_done_callback(pending.discard)
            i += 1
        await asyncio.sleep(0)
    if pending:
        await asyncio.gather(*pending)
