"""A discrete-event simulation of one batcher queue and one model instance, on a simulated clock.

It follows the batcher's rules with a controller: a batch closes when the instance is free and
the queued rows reach the controller's target (or its limit), or the oldest request has waited
the controller's delay; a batch takes requests in arrival order up to the limit, never splitting
one. The batcher's adaptive rules apply too (``adaptive=True``, its default): a batch closes at
once when every request recently in flight is queued, and after a full wait that gathered a
single request, batches close at once until a request arrives while others are queued or
running. While the controller probes, a batch closes only at its limit or after the probe's
delay. The model costs ``cost(now_ns, rows)`` nanoseconds.

``LoopModel`` adds the event loop of a real server: one thread that every request passes through
on its way in (accepting the call) and out (sending the reply), and every batch on its
completion, one after another. When its work exceeds its time, closed-loop clients queue in front
of it, out of the batcher's sight, as they do in gRPC's core in front of a saturated grpc.aio
loop; the controller reads its busy time as it reads ``time.thread_time_ns`` in the server.
Nothing sleeps and every run with the same seed gives the same result.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from driftserve.server.batch_controller import BatchController

NS_PER_S = 1_000_000_000


@dataclass
class Batch:
    start_ns: int
    rows: int
    limit_rows: int
    delay_ns: int
    target_rows: int


@dataclass
class SimResult:
    latencies: list[tuple[int, int]] = field(default_factory=list)  # (completion_ns, latency_ns)
    batches: list[Batch] = field(default_factory=list)
    states: list[tuple[int, int, int, int]] = field(default_factory=list)  # (ns, delay, target, limit)

    def p99_ns(self, since_ns: int, until_ns: int | None = None) -> int:
        values = sorted(lat for t, lat in self.latencies if t >= since_ns and (until_ns is None or t < until_ns))
        assert len(values) >= 100, f"only {len(values)} requests in the window"
        return values[int(0.99 * len(values)) - 1]

    def batches_between(self, since_ns: int, until_ns: int) -> list[Batch]:
        return [b for b in self.batches if since_ns <= b.start_ns < until_ns]


def poisson_arrivals(rate_per_s: Callable[[int], float], end_ns: int, seed: int) -> list[int]:
    """Arrival times of a Poisson process whose rate may change with time (piecewise, by thinning)."""
    rng = random.Random(seed)
    peak = max(rate_per_s(t) for t in range(0, end_ns, end_ns // 1000))
    arrivals: list[int] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak) * NS_PER_S
        if t >= end_ns:
            return arrivals
        if rng.random() * peak <= rate_per_s(int(t)):
            arrivals.append(int(t))


@dataclass
class LoopModel:
    """A serial event loop: ``per_request_ns`` for each request (reply, then the next call's
    acceptance), ``per_batch_ns`` for each completed batch."""

    per_request_ns: int
    per_batch_ns: int
    free_at_ns: int = 0
    work_ns: int = 0
    now_ns: int = 0

    def run(self, at_ns: int, work_ns: int) -> int:
        """Queue ``work_ns`` of work ready at ``at_ns``; return when it is done."""
        self.free_at_ns = max(self.free_at_ns, at_ns) + work_ns
        self.work_ns += work_ns
        return self.free_at_ns

    def cpu_ns(self) -> int:
        """Busy time up to the simulated now (work queued for later not yet spent)."""
        return self.work_ns - max(self.free_at_ns - self.now_ns, 0)


def linear_cost(a_ns: int, b_ns: int) -> Callable[[int, int], int]:
    return lambda _now, rows: a_ns + b_ns * rows


def simulate(
    controller: BatchController,
    arrivals_ns: list[int],
    cost: Callable[[int, int], int],
    end_ns: int,
    closed_loop_think_ns: int | Callable[[], int] | None = None,
    adaptive: bool = True,
    loop: LoopModel | None = None,
) -> SimResult:
    """Serve one-row requests arriving at ``arrivals_ns`` until ``end_ns``.

    With ``closed_loop_think_ns``, each answered request sends its next one that long after its
    answer (``arrivals_ns`` are then the clients' first requests), as closed-loop clients do; a
    callable gives each gap. With ``loop``, replies and next requests pass through it (closed loop
    only), and the controller should read ``loop.cpu_ns``.
    """
    result = SimResult()
    arrivals_ns = sorted(arrivals_ns)
    peaks: deque[int] = deque(maxlen=8)
    peak = 0
    company_seen = True
    queue: deque[int] = deque()
    next_arrival = 0
    running: list[int] | None = None
    busy_until = 0
    running_start = 0
    now = 0
    while now < end_ns:
        if loop is not None:
            loop.now_ns = now
        # Complete the running batch.
        if running is not None and busy_until <= now:
            changed = controller.on_batch(busy_until, len(running), busy_until - running_start, running)
            if closed_loop_think_ns is not None:
                replied = busy_until if loop is None else loop.run(busy_until, loop.per_batch_ns)
                for _ in running:
                    think = closed_loop_think_ns() if callable(closed_loop_think_ns) else closed_loop_think_ns
                    if loop is not None:  # the reply goes out, then the next call is accepted
                        replied = loop.run(replied, loop.per_request_ns)
                    bisect.insort(arrivals_ns, replied + think, lo=next_arrival)
            result.latencies.extend((busy_until, busy_until - a) for a in running)
            if changed:
                result.states.append((now, controller.delay_ns, controller.target_rows, controller.limit_rows))
            running = None
        # Admit every arrival up to now.
        while next_arrival < len(arrivals_ns) and arrivals_ns[next_arrival] <= now:
            if controller.on_arrival(arrivals_ns[next_arrival], 1):
                result.states.append((now, controller.delay_ns, controller.target_rows, controller.limit_rows))
            if queue or running is not None:
                company_seen = True
            queue.append(arrivals_ns[next_arrival])
            next_arrival += 1
            peak = max(peak, len(queue) + (len(running) if running is not None else 0))
        # Close a batch when the instance is free.
        close_at = None
        if running is None and queue:
            limit = controller.limit_rows
            if controller.probing:
                closes_now = len(queue) >= limit
                waits = not closes_now
                delay_ns = controller.probe_delay_ns
            else:
                everyone_here = adaptive and bool(peaks) and len(queue) >= max(peaks)
                closes_now = len(queue) >= min(controller.target_rows, limit) or everyone_here
                waits = not closes_now and not (adaptive and not company_seen)
                delay_ns = controller.delay_ns
            close_at = max(now, queue[0] + delay_ns) if waits else now
            if close_at <= now:
                by_delay = not closes_now and company_seen
                if adaptive and by_delay and len(queue) == 1:
                    company_seen = False
                peaks.append(peak)
                taken = min(len(queue), limit)
                running = [queue.popleft() for _ in range(taken)]
                running_start = now
                oldest = running[0]
                controller.on_close(max(peaks, default=0), by_delay, len(queue) >= limit, now - oldest)
                peak = len(queue) + taken
                busy_until = now + cost(now, taken)
                result.batches.append(Batch(now, taken, limit, controller.delay_ns, controller.target_rows))
                continue
        # Advance the clock to the next event.
        candidates = [end_ns]
        if next_arrival < len(arrivals_ns):
            candidates.append(arrivals_ns[next_arrival])
        if running is not None:
            candidates.append(busy_until)
        if close_at is not None:
            candidates.append(close_at)
        now = max(now, min(candidates))
    return result
