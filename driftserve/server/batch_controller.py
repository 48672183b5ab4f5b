"""Queue delay and batch size chosen online against a p99 latency objective (``slo_p99_ms``).

A fixed ``max_queue_delay_us`` is right for one load and one model cost only. With an objective
the batcher asks this controller instead. The controller measures three things:

- the cost of a batch as a function of its rows, ``c(B) = a + b·B`` (the instance's occupancy,
  from dispatch until the event loop learns the batch finished), fitted by least squares
  over recent batches with exponential decay (so a model that slows down is noticed within a few
  dozen batches);
- the arrival rate ``λ`` in rows per second, an exponentially weighted average over time;
- the p99 of queue + compute of recent requests, from arrival to the batch's completion.

Every ``update_interval_ns`` it recomputes its decisions from a latency *budget* ``k·SLO``:

- ``limit_rows``: the largest batch whose compute, plus one batch already running ahead of it,
  fits the budget: ``2·c(B) ≤ k·SLO``, at most ``max_batch_size``. Batches never take more rows.
- ``target_rows``: the batch worth waiting for, at most the limit. It is the smallest batch that
  keeps the instance busy at most ``UTILISATION`` of the time at the measured rate,
  ``λ·c(B)/B ≤ ρ``, that is ``B = λa / (ρ − λb)`` (the limit when ``λb ≥ ρ``: then no batch
  size is enough, so the most efficient one that fits). It is also at least the recent peak of
  requests in flight that the batcher reports: closed-loop clients that all wait on the previous
  batch come back soon, and fragmenting them costs throughput. Open-loop traffic that waits
  raises its own peak in flight, so the peak counts only while most batches reach their target
  rather than wait out the delay, and then the delay is at most twice the time recent batches took
  to gather (or one batch compute, if longer). A batch closes as soon as this many rows are queued; at low
  load that is one or two rows, and nobody waits for a batch the instance does not need.
  When the server is *saturated* (its event loop busy nearly all the time, or CPUs scarce), the
  peak counts whatever the share of batches closed by the delay: then every batch costs the
  loop hand-offs and callbacks beyond its compute, and batching more is how to serve more.
- ``delay_ns``: how long the oldest request may wait for the target: the budget left after two
  batch computes, no longer than the target takes to arrive at ``λ``, and at most the bound
  (``max_queue_delay_us`` when the config sets it, else the objective).

A saturated server hides its clients: closed-loop requests that the event loop has not accepted
yet wait in gRPC, not in the batcher, so the batcher's peak in flight, and with it the target,
can settle at one or two while dozens of clients wait (measured: the LR at 16 clients in
batches of 1.1 rows, 3.7k req/s, against 4.9k for a fixed 2 ms delay that lets them gather).
So while saturated (and, where measured, the loop busy at least half the time: an idle loop hides
nobody) the controller *probes* now and then: one batch ignores the target and the
everyone-is-here rule and waits for a full batch, up to the time a full batch takes to arrive at
the measured rate (within the budget). Clients that were hidden show up in that batch, its peak
raises the target, and batches stay that large as long as the clients keep them full. A probe
that finds nobody new doubles the interval to the next one (``PROBE_INTERVAL_MIN_NS`` to
``PROBE_INTERVAL_MAX_NS``), so a settled server pays one long wait every few seconds.

The budget fraction ``k`` closes the loop (additive increase, multiplicative decrease, as
Clipper's batch sizing does): when the measured p99 exceeds the objective, ``k`` shrinks by
``DECREASE``; while it stays below ``(1 − 2·tolerance)·SLO``, ``k`` grows by ``INCREASE`` up to
``1 − tolerance``. The model above ignores queues longer than one batch; the feedback covers
what the model misses. The budget shrinks only when a shorter delay can fix the violation (the
p99 exceeds the objective by less than the delay); otherwise the time is spent elsewhere, behind
other batches or in a saturated event loop, where smaller batches would only cost more. Under
overload (most batches leave a full batch queued behind them) it does not shrink either: the
queue, bounded by ``max_queue_size`` and deadlines, is where the excess shows. Each adjustment is
judged on requests served after it (at least ``MIN_SAMPLES``), so one bad window is acted on once.

Everything here is plain arithmetic on nanosecond integers passed in by the caller: no clock, no
event loop, no threads. The batcher feeds it real time; the tests feed it a simulated clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# Budget fraction: start, bounds, and the AIMD steps.
INITIAL_BUDGET_FRACTION = 0.5
MIN_BUDGET_FRACTION = 0.2
INCREASE = 0.05
DECREASE = 0.7
# The target batch keeps the instance busy at most this share of the time at the measured rate.
UTILISATION = 0.5
# Weight of one batch in the shares of batches closed by the delay and of backlogged batches.
# Above MAX_DELAY_SHARE the peak in flight no longer raises the target (the simulation at 2-20%
# load: p99 2.3 ms at 0.2 against 7.8 ms at 0.5, closed loop unchanged); above MAX_BACKLOG_SHARE
# (overload) the feedback no longer shrinks the budget.
DELAY_SHARE_WEIGHT = 0.1
MAX_DELAY_SHARE = 0.2
MAX_BACKLOG_SHARE = 0.5
# Share of wall time in which runnable work waited for a CPU (Linux PSI, core/cpu_pressure.py)
# above which the peak in flight sets the target whatever the share of batches closed by the delay.
# With CPUs scarce every batch costs throughput beyond its compute (the event loop's hand-offs and
# callbacks, the model's fixed per-call cost), and closed-loop clients slowed by the same scarcity
# reach the batcher late, so their batches close by the delay and the guard above would fragment
# them. With CPUs to spare the guard stays: waiting only adds latency. Averaged over updates with
# PRESSURE_WEIGHT.
CPU_PRESSURE_FLOOR = 0.2
PRESSURE_WEIGHT = 0.3
# Share of wall time the batcher's own thread (the event loop) spent on the CPU above which the
# server counts as saturated, like CPU pressure above its floor. Measured on 2 cores, LR model:
# one closed-loop client 0.65, Poisson load at half the maximum 0.5-0.6, 4 and 16 closed-loop
# clients 0.91. Averaged over updates with PRESSURE_WEIGHT. With --gil-cpu the poller and the
# reply senders share the loop's CPU and their time counts too (``gil_cpu.shared_cpu_ns``): the
# loop alone then read 0.36-0.46 at 16 and 32 clients, and never saturated. The sum read one
# client 0.67, half the maximum 0.72, 4 clients 0.74, 16 and 32 clients in full batches 0.65-0.75
# (docs/ARCHITECTURE.md, "Batching against a latency objective").
LOOP_BUSY_FLOOR = 0.85
# Once saturated, the server stays so until the loop's share falls below this (with CPU pressure
# below its floor): batching more lowers the loop's share (0.79-0.87 at 16 clients in batches of
# 16), and falling back to small batches there would raise it again.
LOOP_BUSY_EXIT = 0.7
# Probes while saturated: first after the minimum interval, doubling up to the maximum after each
# probe that gathered no more requests than the peak already known. Where the loop's busy share is
# measured, only while it is at least PROBE_MIN_BUSY: a loop idle half the time accepts calls as
# they come, so no client waits unseen in front of it, and under CPU pressure alone (a client on
# the same cores) open-loop arrivals during a probe's wait would pass for hidden clients. Measured
# on 2 cores (LR, --gil-cpu auto): Poisson at 10% of the maximum 0.33-0.37, one client 0.67, 4 to 32
# clients 0.65-0.82.
PROBE_MIN_BUSY = 0.5
PROBE_INTERVAL_MIN_NS = 500_000_000
PROBE_INTERVAL_MAX_NS = 8_000_000_000
# Weight of one batch in the average gather time, and the margin over it the delay may take while
# the peak in flight sets the target.
GATHER_WEIGHT = 0.1
GATHER_MARGIN = 2.0
# Measured latencies needed before the feedback acts, and at most kept between adjustments.
MIN_SAMPLES = 100
MAX_SAMPLES = 4096
# Arrival-rate averaging time constant.
RATE_TIME_CONSTANT_NS = 200_000_000
# Rows variance below which the cost fit cannot separate a from b (all batches the same size).
_MIN_ROWS_VARIANCE = 0.25


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """What the controller aims at and the bounds it keeps to."""

    objective_ns: int
    max_delay_ns: int
    max_rows: int
    tolerance: float = 0.1
    update_interval_ns: int = 50_000_000
    cost_decay: float = 0.97

    def __post_init__(self) -> None:
        if self.objective_ns <= 0 or self.max_delay_ns < 0 or self.max_rows < 1:
            raise ValueError(f"invalid controller settings: {self}")
        if not 0.0 <= self.tolerance < 0.5 or not 0.0 < self.cost_decay <= 1.0:
            raise ValueError(f"invalid controller settings: {self}")


@dataclass(frozen=True, slots=True)
class ControllerState:
    """A snapshot of the controller for metrics and ModelStatistics."""

    objective_ns: int
    delay_ns: int
    target_rows: int
    limit_rows: int
    cost_fixed_ns: float
    cost_per_row_ns: float
    arrival_rows_per_s: float
    measured_p99_ns: int
    budget_fraction: float
    cpu_pressure: float = 0.0
    loop_busy: float = 0.0
    probes: int = 0


class CostModel:
    """``c(rows) = a + b·rows`` fitted by exponentially decayed least squares."""

    __slots__ = ("_b_known", "_decay", "_s", "_sx", "_sxx", "_sxy", "_sy", "a", "b")

    def __init__(self, decay: float) -> None:
        self._decay = decay
        self._s = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self.a = 0.0
        self.b = 0.0
        self._b_known = False

    @property
    def fitted(self) -> bool:
        return self._s > 0.0

    def cost_ns(self, rows: int) -> float:
        return self.a + self.b * rows

    def add(self, rows: int, cost_ns: int) -> None:
        d = self._decay
        x, y = float(rows), float(cost_ns)
        self._s = self._s * d + 1.0
        self._sx = self._sx * d + x
        self._sy = self._sy * d + y
        self._sxx = self._sxx * d + x * x
        self._sxy = self._sxy * d + x * y

    def refit(self) -> None:
        """Solve for a and b; with no spread in rows, keep the last per-row cost (or assume half)."""
        if not self._s:
            return
        mean_x, mean_y = self._sx / self._s, self._sy / self._s
        variance = self._sxx / self._s - mean_x * mean_x
        if variance >= _MIN_ROWS_VARIANCE:
            b = (self._sxy / self._s - mean_x * mean_y) / variance
            self._b_known = True
        elif self._b_known:
            b = self.b
        else:
            b = mean_y / (2.0 * mean_x)  # unknown split: half fixed, half per row (errs towards small batches)
        b = min(max(b, 0.0), mean_y / mean_x)
        self.a, self.b = max(mean_y - b * mean_x, 0.0), b


class TimeShare:
    """The share of wall time a cumulative nanosecond counter advanced by (CPU stall time, a
    thread's CPU time), averaged over samples with PRESSURE_WEIGHT; 0 without a counter."""

    __slots__ = ("_last_ns", "_read", "value")

    def __init__(self, read: Callable[[], int] | None) -> None:
        self._read = read
        self._last_ns = read() if read is not None else 0
        self.value = 0.0

    @property
    def measured(self) -> bool:
        """Whether there is a counter to read (a measured 0 is not the same as no measurement)."""
        return self._read is not None

    def sample(self, elapsed_ns: int) -> None:
        """Average in the counter's advance over the last ``elapsed_ns`` (> 0) of wall time."""
        if self._read is None:
            return
        now = self._read()
        share = min(max(now - self._last_ns, 0) / elapsed_ns, 1.0)
        self._last_ns = now
        self.value += (share - self.value) * PRESSURE_WEIGHT


class BatchController:
    """Chooses the batcher's delay, target batch and batch limit from what it measures."""

    def __init__(
        self,
        settings: ControllerSettings,
        now_ns: int,
        cpu_stall_ns: Callable[[], int] | None = None,
        loop_cpu_ns: Callable[[], int] | None = None,
    ) -> None:
        """``cpu_stall_ns`` reads the cumulative time runnable work waited for a CPU (PSI); None
        where it cannot be measured (the controller then assumes CPUs to spare). ``loop_cpu_ns``
        reads the cumulative CPU time of the thread that feeds this controller (the event loop),
        with that of the threads placed on its CPU (``gil_cpu.shared_cpu_ns``); None ignores it."""
        self.settings = settings
        self._cpu_pressure = TimeShare(cpu_stall_ns)
        self._loop_busy = TimeShare(loop_cpu_ns)
        self.saturated = False
        # Probing (see the module docstring): whether the batch now forming is a probe, how long it
        # may wait, when the next one is due, and what the last one found.
        self.probing = False
        self.probe_delay_ns = 0
        self.probes = 0
        self._probe_interval_ns = PROBE_INTERVAL_MIN_NS
        self._next_probe_ns = now_ns + PROBE_INTERVAL_MIN_NS
        self._probe_baseline = 0
        self._probe_found: bool | None = None
        self.cost = CostModel(settings.cost_decay)
        self.budget_fraction = INITIAL_BUDGET_FRACTION
        self.arrival_rows_per_s = 0.0
        self.measured_p99_ns = 0
        self._arrived_rows = 0
        self._last_update_ns = now_ns
        self._last_sample_ns = now_ns
        # A probe just closed: recompute at the next event, while its peak is still remembered.
        self._update_due = False
        self._samples: list[int] = []
        self._inflight_peak = 0
        # Share of recent batches that waited out the delay (an average over batches).
        self.delay_share = 0.0
        # How long recent batches that reached their target took to gather (their oldest request's
        # wait): while the peak in flight sets the target, the delay is at most GATHER_MARGIN times
        # this. The fill time at the measured rate would be circular there: closed-loop clients that
        # wait send less, which lowers the rate and lengthens the fill time.
        self.gather_ns = 0.0
        # Share of recent batches with a full batch queued behind them: overload, which smaller
        # batches would only make worse, so the feedback does not shrink the budget then.
        self.backlog_share = 0.0
        # Until a batch has been measured: no waiting beyond the bound, any batch size.
        self.delay_ns = min(settings.max_delay_ns, settings.objective_ns // 4)
        self.limit_rows = settings.max_rows
        self.target_rows = settings.max_rows
        self.updates = 0

    # ------------------------------------------------------------------ inputs
    def on_arrival(self, now_ns: int, rows: int) -> bool:
        """A request of ``rows`` rows was queued; returns True when the decisions were recomputed."""
        self._arrived_rows += rows
        if self._update_due or now_ns - self._last_update_ns >= self.settings.update_interval_ns:
            self._update(now_ns)
            return True
        return False

    def on_close(self, inflight_peak: int, closed_by_delay: bool, backlogged: bool, gathered_ns: int = 0) -> None:
        """A batch closed: ``inflight_peak`` is the recent peak of requests queued or running at once,
        ``closed_by_delay`` says it waited out the delay short of its target, ``backlogged`` that a
        full batch is still queued behind it, ``gathered_ns`` how long its oldest request waited.
        While ``probing`` the batch that closed is the probe."""
        self._inflight_peak = inflight_peak
        self.backlog_share += ((1.0 if backlogged else 0.0) - self.backlog_share) * DELAY_SHARE_WEIGHT
        if self.probing:
            # A deliberate wait: it says nothing about the delay or the gather time of normal batches.
            self.probing = False
            self._probe_found = inflight_peak > self._probe_baseline
            self._update_due = True
            return
        if not closed_by_delay:
            self.gather_ns += (gathered_ns - self.gather_ns) * GATHER_WEIGHT
        self.delay_share += ((1.0 if closed_by_delay else 0.0) - self.delay_share) * DELAY_SHARE_WEIGHT

    def on_batch(self, now_ns: int, rows: int, busy_ns: int, arrivals_ns: list[int]) -> bool:
        """A batch of ``rows`` rows finished at ``now_ns``, having held its instance ``busy_ns``.

        The batcher passes the instance's whole occupancy, from dispatch until the event loop
        learned the batch finished (thread hand-offs and loop lag included): the instance is not
        free for the next batch earlier, so that is the cost a batch plan has to fit.

        ``arrivals_ns`` are its requests' arrival times: their latencies (queue + compute) feed the
        measured p99. Returns True when the decisions were recomputed.
        """
        self.cost.add(rows, busy_ns)
        samples = self._samples
        if len(samples) < MAX_SAMPLES:
            samples.extend(now_ns - arrival for arrival in arrivals_ns)
        if self._update_due or now_ns - self._last_update_ns >= self.settings.update_interval_ns or not self.updates:
            self._update(now_ns)
            return True
        return False

    # ------------------------------------------------------------------ decisions
    def _sample_saturation(self, now_ns: int) -> None:
        """Average CPU pressure and the loop's busy share over windows of at least one update
        interval (an update brought forward by a probe does not cut one short)."""
        elapsed = now_ns - self._last_sample_ns
        if elapsed < self.settings.update_interval_ns:
            return
        self._last_sample_ns = now_ns
        self._cpu_pressure.sample(elapsed)
        self._loop_busy.sample(elapsed)

    @property
    def cpu_pressure(self) -> float:
        """Share of time runnable work waited for a CPU (PSI), averaged; 0 where unmeasured."""
        return self._cpu_pressure.value

    @property
    def loop_busy(self) -> float:
        """Share of time the event loop's CPU spent on the loop (and the threads placed with it), averaged;
        0 where unmeasured."""
        return self._loop_busy.value

    def _update(self, now_ns: int) -> None:
        s = self.settings
        elapsed = now_ns - self._last_update_ns
        if elapsed > 0:
            rate = self._arrived_rows * 1e9 / elapsed
            weight = 1.0 - math.exp(-elapsed / RATE_TIME_CONSTANT_NS)
            self.arrival_rows_per_s += (rate - self.arrival_rows_per_s) * weight
        self._sample_saturation(now_ns)
        self._arrived_rows = 0
        self._last_update_ns = now_ns
        self._update_due = False
        self.updates += 1
        self._feedback()
        if not self.cost.fitted:
            return
        self.cost.refit()
        a, b = self.cost.a, self.cost.b
        budget = self.budget_fraction * s.objective_ns
        # Largest batch with 2·c(B) within the budget (one batch running ahead, then its own).
        limit = min(max(int((budget / 2.0 - a) / b) if b > 0.0 else s.max_rows, 1), s.max_rows)
        rate_per_ns = self.arrival_rows_per_s / 1e9
        busy = rate_per_ns * b  # share of the time the per-row cost alone keeps the instance busy
        needed = float(limit) if busy >= UTILISATION else rate_per_ns * a / (UTILISATION - busy)
        loop_busy = self.loop_busy
        self.saturated = saturated = (
            self.cpu_pressure >= CPU_PRESSURE_FLOOR
            or loop_busy >= LOOP_BUSY_FLOOR
            or (self.saturated and loop_busy >= LOOP_BUSY_EXIT)
        )
        peak_counts = self.delay_share < MAX_DELAY_SHARE or saturated
        floor = self._inflight_peak if peak_counts else 1
        target = min(max(math.ceil(needed), floor, 1), limit)
        slack = budget - 2.0 * self.cost.cost_ns(target)
        fill = (target - 1) / rate_per_ns if rate_per_ns > 0.0 else float(s.max_delay_ns)
        if floor > math.ceil(needed) and not saturated:  # the peak in flight sets the target
            # With time to spare, a client that is late (descheduled, stalled) is not worth
            # waiting for beyond twice the usual gathering time. A saturated loop hands requests
            # over at its own pace, which the measured rate already is: the fill time stands.
            fill = min(fill, max(GATHER_MARGIN * self.gather_ns, self.cost.cost_ns(target)))
        self.delay_ns = int(max(0.0, min(float(s.max_delay_ns), slack, fill)))
        self.limit_rows, self.target_rows = limit, target
        self._schedule_probe(now_ns, saturated, rate_per_ns, budget)

    def _schedule_probe(self, now_ns: int, saturated: bool, rate_per_ns: float, budget: float) -> None:
        """Start a probe when one is due and the server is saturated; space them by what they find."""
        if self._probe_found is not None:
            found, self._probe_found = self._probe_found, None
            self._probe_interval_ns = (
                PROBE_INTERVAL_MIN_NS if found else min(2 * self._probe_interval_ns, PROBE_INTERVAL_MAX_NS)
            )
            self._next_probe_ns = now_ns + self._probe_interval_ns
        if self.probing or not saturated or now_ns < self._next_probe_ns or self.target_rows >= self.limit_rows:
            return
        if self._loop_busy.measured and self.loop_busy < PROBE_MIN_BUSY:
            return  # the loop keeps up: nobody is hidden in front of it
        limit = self.limit_rows
        fill = (limit - 1) / rate_per_ns if rate_per_ns > 0.0 else 0.0
        wait = min(float(self.settings.max_delay_ns), budget - 2.0 * self.cost.cost_ns(limit), fill)
        if wait <= self.delay_ns:
            return  # no longer than a normal batch may wait: nothing to find
        self.probing = True
        self.probes += 1
        self.probe_delay_ns = int(wait)
        self._probe_baseline = self._inflight_peak
        self._next_probe_ns = now_ns + self._probe_interval_ns  # in case the probe never closes

    def _feedback(self) -> None:
        """AIMD on the budget fraction from the p99 of the requests since the last adjustment."""
        s = self.settings
        samples = self._samples
        if len(samples) < MIN_SAMPLES:
            return
        samples.sort()
        self.measured_p99_ns = samples[math.ceil(0.99 * len(samples)) - 1]
        if self.measured_p99_ns > s.objective_ns:
            # Back off only where backing off can help: not under overload, and not when the
            # violation is larger than the whole delay (then the time is spent elsewhere: behind
            # other batches, or in a saturated event loop, where smaller batches only cost more).
            if self.backlog_share < MAX_BACKLOG_SHARE and self.measured_p99_ns - self.delay_ns <= s.objective_ns:
                self.budget_fraction = max(MIN_BUDGET_FRACTION, self.budget_fraction * DECREASE)
        elif self.measured_p99_ns < (1.0 - 2.0 * s.tolerance) * s.objective_ns:
            self.budget_fraction = min(1.0 - s.tolerance, self.budget_fraction + INCREASE)
        samples.clear()  # the next adjustment judges the settings it made, on fresh requests

    def state(self) -> ControllerState:
        return ControllerState(
            objective_ns=self.settings.objective_ns,
            delay_ns=self.delay_ns,
            target_rows=self.target_rows,
            limit_rows=self.limit_rows,
            cost_fixed_ns=self.cost.a,
            cost_per_row_ns=self.cost.b,
            arrival_rows_per_s=self.arrival_rows_per_s,
            measured_p99_ns=self.measured_p99_ns,
            budget_fraction=self.budget_fraction,
            cpu_pressure=self.cpu_pressure,
            loop_busy=self.loop_busy,
            probes=self.probes,
        )
